"""The original's sample transforms, each a callable ``op(sample) -> sample`` written in YAML as ``!Name {args}``.

A sample is a dict: 'im_file', 'im_id', 'gt_bbox' float32 [G, 4] (x1, y1, x2, y2) and 'gt_class' int32 [G, 1];
DecodeImage adds 'image' (HWC uint8), 'h', 'w', 'im_shape' and 'im_info'. From NormalizeBox on, boxes are
normalised to [0, 1] of the current image, which is what the geometric ops below expect, as in the original.
Permute makes the image CHW and NormalizeImage float32.

Argument names and defaults are the original's. The original drew from numpy's and Python's global generators; here
every random op draws from the generator it is handed (``op(sample, rng=...)``): the reader makes one per sample
from (seed, epoch, index), so a run is reproducible whatever the number of workers, and nothing else in the process
(the search's controller above all) shares or disturbs its random numbers.
"""
import math

import cv2
import numpy as np

from ppdet.core.workspace import ConfigError, register

__all__ = ['SampleError', 'DecodeImage', 'NormalizeBox', 'RandomDistort', 'ExpandImage', 'RandomInterpImage',
           'RandomFlipImage', 'Permute', 'NormalizeImage', 'CropImageWithDataAchorSampling']


class SampleError(Exception):
    """A sample that cannot be used (its image is missing or cannot be decoded); the reader skips and counts it."""


def _require(ok, message):
    if not ok:
        raise ConfigError(message)


class BaseOperator:
    """``op(sample, rng=generator)``, the original's ``(sample, context)`` call, or ``op(sample)``. ``rng`` is the
    sample's own ``numpy.random.Generator``; without one a random op draws from a fresh unseeded generator, never
    from a process-wide one."""

    def __call__(self, sample, context=None, rng=None):
        return self.apply(sample, np.random.default_rng() if rng is None else rng)

    def apply(self, sample, rng):
        raise NotImplementedError

    def __repr__(self):
        return '!{} {}'.format(type(self).__name__, vars(self))


def _read_bytes(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise SampleError('missing image file') from None
    except OSError as e:
        raise SampleError('cannot read image file ({})'.format(e.strerror or e)) from None


@register
class DecodeImage(BaseOperator):
    """Read 'im_file' (unless 'image' already holds its bytes) and decode it; OpenCV gives BGR, hence ``to_rgb``."""

    def __init__(self, to_rgb=True, with_mixup=False):
        _require(not with_mixup, 'DecodeImage.with_mixup: mixup is not part of this port; remove the key')
        self.to_rgb = to_rgb

    def apply(self, sample, rng):
        data = sample.get('image')
        if data is None:
            data = _read_bytes(sample['im_file'])
        im = None
        if len(data):
            im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if im is None:
            raise SampleError('unreadable image')
        if self.to_rgb:
            im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        h, w = im.shape[:2]
        sample.update(image=im, h=h, w=w, im_shape=np.array([h, w], np.float32),
                      im_info=np.array([h, w, 1.], np.float32))
        return sample


@register
class NormalizeBox(BaseOperator):
    """Pixel boxes -> [0, 1] of the decoded image, so later resizes need not touch them."""

    def __init__(self):
        pass

    def apply(self, sample, rng):
        scale = np.array([sample['w'], sample['h']] * 2, np.float32)
        sample['gt_bbox'] = (sample['gt_bbox'] / scale).astype(np.float32)
        return sample


def _uniform(rng, low, high):
    """A uniform draw between ``low`` and ``high`` in either order, as the original's ``np.random.uniform`` and
    ``random.uniform`` allowed (``Generator.uniform`` refuses ``high < low``)."""
    return low + (high - low) * rng.random()


def _as_uint8(im):
    return im if im.dtype == np.uint8 else np.clip(im, 0, 255).astype(np.uint8)


def _blend(im, factor, other=None, offset=0.):
    """``factor * im + (1 - factor) * other + offset`` (``other`` 0 when None), rounded and saturated to uint8:
    the arithmetic of PIL's ImageEnhance, which the original used."""
    if other is None:
        return cv2.addWeighted(im, factor, im, 0., offset)
    return cv2.addWeighted(im, factor, other, 1. - factor, offset)


@register
class RandomDistort(BaseOperator):
    """Random brightness, contrast, saturation and hue, each applied with its probability (PIL ImageEnhance maths).

    ``is_order``: the order is brightness, contrast, saturation, hue, or (half the time) brightness, saturation,
    hue, contrast; otherwise ``count`` of the four are applied in random order.
    """

    def __init__(self, brightness_lower=0.5, brightness_upper=1.5, contrast_lower=0.5, contrast_upper=1.5,
                 saturation_lower=0.5, saturation_upper=1.5, hue_lower=-18, hue_upper=18, brightness_prob=0.5,
                 contrast_prob=0.5, saturation_prob=0.5, hue_prob=0.5, count=4, is_order=False):
        _require(1 <= count <= 4, 'RandomDistort.count must be 1..4, got {!r}'.format(count))
        self.ranges = {'brightness': (brightness_lower, brightness_upper, brightness_prob),
                       'contrast': (contrast_lower, contrast_upper, contrast_prob),
                       'saturation': (saturation_lower, saturation_upper, saturation_prob),
                       'hue': (hue_lower, hue_upper, hue_prob)}
        self.count = count
        self.is_order = is_order

    def _draw(self, name, rng):
        """The factor to apply, or None when this distortion is skipped (the original draws both numbers)."""
        lower, upper, prob = self.ranges[name]
        delta = _uniform(rng, lower, upper)
        return delta if rng.random() < prob else None

    def _order(self, rng):
        names = ['brightness', 'contrast', 'saturation', 'hue']
        if not self.is_order:
            return [names[i] for i in rng.permutation(len(names))[:self.count]]
        if rng.random() < 0.5:
            names = ['brightness', 'saturation', 'hue', 'contrast']
        return names[:self.count]

    def apply(self, sample, rng):
        im = _as_uint8(sample['image'])
        for name in self._order(rng):
            delta = self._draw(name, rng)
            if delta is not None:
                im = getattr(self, '_' + name)(im, delta)
        sample['image'] = im
        return sample

    @staticmethod
    def _brightness(im, factor):
        return _blend(im, factor)

    @staticmethod
    def _contrast(im, factor):
        mean = int(cv2.mean(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY))[0] + 0.5)
        return _blend(im, factor, offset=(1. - factor) * mean)

    @staticmethod
    def _saturation(im, factor):
        gray = cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        return _blend(im, factor, gray)

    @staticmethod
    def _hue(im, delta):
        hsv = cv2.cvtColor(im, cv2.COLOR_RGB2HSV_FULL)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(delta)) % 256
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def _keep(sample, boxes, mask=None):
    """Store new boxes (and the classes of the kept ones) as float32 / int32."""
    if mask is not None:
        sample['gt_class'] = sample['gt_class'][mask]
    sample['gt_bbox'] = np.asarray(boxes, np.float32).reshape(-1, 4)
    return sample


@register
class ExpandImage(BaseOperator):
    """With probability ``prob``, place the image at a random spot of a canvas up to ``max_ratio`` times larger
    filled with ``mean``: faces get smaller, which the small-anchor layer needs. Boxes must be normalised."""

    def __init__(self, max_ratio, prob, mean=[127.5, 127.5, 127.5]):
        _require(len(mean) == 3, 'ExpandImage.mean needs 3 values, got {!r}'.format(mean))
        self.max_ratio = max_ratio
        self.prob = prob
        self.mean = mean

    def apply(self, sample, rng):
        if rng.random() >= self.prob or self.max_ratio - 1 < 0.01:
            return sample
        im = sample['image']
        h, w = im.shape[:2]
        ratio = _uniform(rng, 1, self.max_ratio)
        height, width = int(h * ratio), int(w * ratio)
        y0 = math.floor(_uniform(rng, 0, height - h))
        x0 = math.floor(_uniform(rng, 0, width - w))
        fill = [float(v) for v in np.asarray(self.mean, np.float64).astype(im.dtype)]  # 127.5 -> 127 in uint8
        canvas = cv2.copyMakeBorder(im, y0, height - h - y0, x0, width - w - x0, cv2.BORDER_CONSTANT, value=fill)
        size, offset = np.array([w, h] * 2), np.array([x0, y0] * 2)
        boxes = (sample['gt_bbox'] * size + offset) / np.array([width, height] * 2)
        sample.update(image=canvas, h=height, w=width)
        return _keep(sample, boxes)


@register
class RandomInterpImage(BaseOperator):
    """Resize with a randomly chosen OpenCV interpolation, so the network sees all their artefacts.

    ``max_size`` 0: to ``target_size`` x ``target_size``; otherwise the short side to ``target_size`` with the
    long side capped at ``max_size``. Normalised boxes are unchanged by a resize.
    """

    INTERPS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)

    def __init__(self, target_size=0, max_size=0):
        _require(isinstance(target_size, int) and target_size > 0,
                 'RandomInterpImage.target_size must be a positive int (the input size, e.g. 640), got {!r}'
                 .format(target_size))
        self.target_size = target_size
        self.max_size = max_size

    def _size(self, h, w):
        if not self.max_size:
            return self.target_size, self.target_size
        scale = self.target_size / min(h, w)
        if round(scale * max(h, w)) > self.max_size:
            scale = self.max_size / max(h, w)
        return int(round(h * scale)), int(round(w * scale))

    def apply(self, sample, rng):
        interp = self.INTERPS[int(rng.integers(len(self.INTERPS)))]
        im = sample['image']
        height, width = self._size(*im.shape[:2])
        sample.update(image=cv2.resize(im, (width, height), interpolation=interp), h=height, w=width)
        return sample


@register
class RandomFlipImage(BaseOperator):
    """Mirror left-right with probability ``prob``; pixel boxes use the original's ``w - x - 1`` convention."""

    def __init__(self, prob=0.5, is_normalized=False, is_mask_flip=False):
        _require(not is_mask_flip, 'RandomFlipImage.is_mask_flip: face data has no masks; remove the key')
        self.prob = prob
        self.is_normalized = is_normalized

    def apply(self, sample, rng):
        if rng.random() >= self.prob:
            return sample
        im = sample['image']
        sample['image'] = cv2.flip(im, 1)
        boxes = sample['gt_bbox'].copy()
        right = 1. if self.is_normalized else im.shape[1] - 1.
        boxes[:, 0], boxes[:, 2] = right - sample['gt_bbox'][:, 2], right - sample['gt_bbox'][:, 0]
        sample['flipped'] = True
        return _keep(sample, boxes)


@register
class Permute(BaseOperator):
    """HWC -> CHW for the network; ``to_bgr`` reverses the channels (undoing DecodeImage's ``to_rgb``, so the
    BGR means of NormalizeImage match)."""

    def __init__(self, to_bgr=True, channel_first=True):
        self.to_bgr = to_bgr
        self.channel_first = channel_first

    def apply(self, sample, rng):
        im = sample['image']
        if self.to_bgr:
            im = cv2.cvtColor(im, cv2.COLOR_RGB2BGR)
        if self.channel_first:
            im = np.ascontiguousarray(im.transpose(2, 0, 1))
        sample['image'] = im
        return sample


@register
class NormalizeImage(BaseOperator):
    """float32 ``(image [/ 255] - mean) / std`` per channel; the channel axis is first unless told otherwise."""

    def __init__(self, mean=[0.485, 0.456, 0.406], std=[1, 1, 1], is_scale=True, is_channel_first=True):
        _require(len(mean) == 3 and len(std) == 3, 'NormalizeImage.mean and .std need 3 values each')
        _require(all(s != 0 for s in std), 'NormalizeImage.std must not contain 0, got {!r}'.format(std))
        shape = (3, 1, 1) if is_channel_first else (1, 1, 3)
        self.mean = np.array(mean, np.float32).reshape(shape)
        self.inv_std = (1. / np.array(std, np.float64)).astype(np.float32).reshape(shape)
        self.is_scale = is_scale

    def apply(self, sample, rng):
        im = sample['image'].astype(np.float32)
        if self.is_scale:
            im *= np.float32(1. / 255.)
        im -= self.mean
        im *= self.inv_std
        sample['image'] = im
        return sample


# ---- CropImageWithDataAchorSampling: S3FD/PyramidBox data-anchor sampling, with boxes in [0, 1] ----

def _areas(boxes):
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersections(boxes, region):
    wh = np.minimum(boxes[:, 2:], region[2:]) - np.maximum(boxes[:, :2], region[:2])
    return np.prod(np.clip(wh, 0, None), axis=1)


def _in_range(values, low, high):
    return (values >= low if low else True) & (values <= high if high else True)


def _region_ok(sampler, region, boxes):
    """The original's test: some face's IoU with the region, or the share of some face inside it, is in range."""
    region = np.asarray(region, np.float64)
    use_iou, use_cover = sampler[6] or sampler[7], sampler[8] or sampler[9]
    if not (use_iou or use_cover):
        return True
    inter = _intersections(boxes, region)
    ok = False
    if use_iou:
        iou = inter / (_areas(boxes) + _areas(region[None]) - inter)
        ok = bool(np.any(_in_range(iou, sampler[6], sampler[7])))
    if use_cover:
        area = _areas(boxes)
        cover = np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)
        ok = ok or bool(np.any(_in_range(cover, sampler[8], sampler[9])))
    return ok


def _boxes_in_region(region, boxes):
    """Faces whose centre lies in ``region``, re-expressed in its frame and clipped (the original's
    filter_and_process); returns the new boxes and the mask of kept faces."""
    region = np.asarray(region, np.float64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = np.all((centre >= region[:2]) & (centre <= region[2:]), axis=1)
    inside &= _intersections(boxes, region) > 0
    size = np.tile(region[2:] - region[:2], 2)
    moved = np.clip((boxes - np.tile(region[:2], 2)) / size, 0., 1.)
    keep = inside & (_areas(moved) > 0)
    return moved[keep], keep


def _square_region(sampler, width, height, rng):
    """A random crop whose pixel shape is square (the original's generate_sample_bbox_square)."""
    scale = _uniform(rng, sampler[2], sampler[3])
    aspect = _uniform(rng, sampler[4], sampler[5])
    aspect = min(max(aspect, scale ** 2), 1 / scale ** 2)
    bw, bh = scale * aspect ** 0.5, scale / aspect ** 0.5
    if height < width:
        bw = bh * height / width
    else:
        bh = bw * width / height
    x0, y0 = _uniform(rng, 0, 1 - bw), _uniform(rng, 0, 1 - bh)
    return [x0, y0, x0 + bw, y0 + bh]


def _anchor_scale(area, scales):
    """Index of the anchor scale a face of pixel ``area`` belongs to, as the original picks it."""
    index = 0
    for i in range(len(scales) - 1):
        if scales[i] ** 2 < area < scales[i + 1] ** 2:
            index = i + 1
            break
    return len(scales) - 2 if area > scales[-2] ** 2 else index


def _offset(start, extent, size, rng):
    """Random crop origin along one axis so that a face at [start, start + extent] stays in a crop of ``size``."""
    if extent <= size:
        return _uniform(rng, start + extent - size, start)
    return _uniform(rng, start, start + extent - size)


def _anchor_region(boxes, width, height, scales, target_size, rng):
    """A square crop that resizes one random face to a random anchor scale (the original's data_anchor_sampling)."""
    x1, y1, x2, y2 = boxes[int(rng.integers(len(boxes)))]
    fw, fh = (x2 - x1) * width, (y2 - y1) * height
    top = _anchor_scale(fw * fh, scales)
    pick = int(rng.integers(top + 1)) if top else 0
    high = 2. * scales[pick] if pick != top else min(2. * scales[pick], 2 * math.sqrt(fw * fh))
    size = fw * target_size / _uniform(rng, scales[pick] / 2., high)
    if size < max(height, width):
        x0, y0 = _offset(x1 * width, fw, size, rng), _offset(y1 * height, fh, size, rng)
    else:
        x0, y0 = _uniform(rng, width - size, 0.), _uniform(rng, height - size, 0.)
    x0, y0 = math.floor(x0), math.floor(y0)
    return [x0 / width, y0 / height, (x0 + size) / width, (y0 + size) / height]


def _pixel_window(region, width, height):
    return (int(region[0] * width), int(region[1] * height), int(region[2] * width), int(region[3] * height))


def _crop_padded(im, window):
    """Crop the pixel window, zero-filling the part that lies outside the image."""
    x1, y1, x2, y2 = window
    out = np.zeros((y2 - y1, x2 - x1) + im.shape[2:], im.dtype)
    sx1, sy1 = max(x1, 0), max(y1, 0)
    sx2, sy2 = min(x2, im.shape[1]), min(y2, im.shape[0])
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = im[sy1:sy2, sx1:sx2]
    return out


@register
class CropImageWithDataAchorSampling(BaseOperator):
    """Random crops that favour faces at anchor scales (data-anchor sampling, PyramidBox), as in the full
    BlazeFace config; the NAS config left it out for speed. Boxes must be normalised.

    Samplers are ``[max_sample, max_trial, min_scale, max_scale, min_aspect, max_aspect, min_iou, max_iou,
    min_coverage, max_coverage]``. With probability ``1 - sampling_prob`` a crop around a random face is taken
    with ``anchor_sampler`` and resized to ``target_size``; otherwise a square crop from ``batch_sampler``.
    Faces smaller than ``min_size`` pixels at ``target_size`` are dropped; a crop without faces is not used
    when ``avoid_no_bbox``.
    """

    def __init__(self, batch_sampler, anchor_sampler=None, target_size=None, das_anchor_scales=[16, 32, 64, 128],
                 sampling_prob=0.5, min_size=8., avoid_no_bbox=True):
        _require(isinstance(target_size, int) and target_size > 0,
                 'CropImageWithDataAchorSampling.target_size must be the input size (e.g. 640), got {!r}'
                 .format(target_size))
        for name, samplers in (('batch_sampler', batch_sampler), ('anchor_sampler', anchor_sampler or [])):
            _require(all(len(s) == 10 for s in samplers),
                     'CropImageWithDataAchorSampling.{}: each sampler has 10 numbers (max_sample, max_trial, '
                     'scales, aspects, iou range, coverage range)'.format(name))
        _require(anchor_sampler or sampling_prob >= 1, 'CropImageWithDataAchorSampling.anchor_sampler is needed '
                                                       'unless sampling_prob is 1 (batch_sampler crops only)')
        self.batch_sampler = batch_sampler
        self.anchor_sampler = anchor_sampler or []
        self.target_size = target_size
        self.das_anchor_scales = np.array(das_anchor_scales, np.float64)
        self.sampling_prob = sampling_prob
        self.min_size = min_size
        self.avoid_no_bbox = avoid_no_bbox

    def _regions(self, samplers, propose, boxes):
        regions = []
        for sampler in samplers:
            found = 0
            for _ in range(int(sampler[1])):
                if found >= sampler[0]:
                    break
                region = propose(sampler)
                if region is None:
                    break
                if _region_ok(sampler, region, boxes):
                    regions.append(region)
                    found += 1
        return regions

    def _big_enough(self, boxes):
        wh = (boxes[:, 2:] - boxes[:, :2]) * self.target_size
        return wh[:, 0] * wh[:, 1] >= self.min_size * self.min_size

    def apply(self, sample, rng):
        boxes = sample['gt_bbox'].astype(np.float64)
        height, width = sample['image'].shape[:2]
        use_anchor = rng.random() > self.sampling_prob
        if use_anchor:
            propose = (lambda s: _anchor_region(boxes, width, height, self.das_anchor_scales, self.target_size, rng)
                       if len(boxes) else None)
            regions = self._regions(self.anchor_sampler, propose, boxes)
        else:
            regions = self._regions(self.batch_sampler, lambda s: _square_region(s, width, height, rng), boxes)
        while regions:
            region = regions.pop(int(_uniform(rng, 0, len(regions))))
            if not use_anchor:
                region = list(np.clip(region, 0., 1.))
            if self._crop(sample, region, boxes, resize=use_anchor):
                return sample
        return sample

    def _crop(self, sample, region, boxes, resize):
        """Apply one candidate crop; False when it is unusable (empty, or no face left with avoid_no_bbox)."""
        new_boxes, kept = _boxes_in_region(region, boxes)
        big = self._big_enough(new_boxes)
        if self.avoid_no_bbox and not big.any():
            return False
        im = sample['image']
        window = _pixel_window(region, im.shape[1], im.shape[0])
        if window[2] <= window[0] or window[3] <= window[1]:
            return False
        im = _crop_padded(im, window)
        if resize:
            im = cv2.resize(im, (self.target_size, self.target_size), interpolation=cv2.INTER_AREA)
        sample['gt_class'] = sample['gt_class'][kept]
        sample.update(image=im, h=im.shape[0], w=im.shape[1])
        return _keep(sample, new_boxes[big], big)
