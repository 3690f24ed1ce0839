"""Detection operators of BlazeFace, re-expressed for Paddle 3 dygraph.

fluid's prior_box / density_prior_box / box_coder / detection_output are gone or changed; these functions
reproduce their arithmetic (read from the Paddle 1.x C++ kernels) for the configuration BlazeFace uses:
aspect ratio 1, no flip, no max sizes, normalised boxes.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.vision.ops import nms

from ppdet.core.workspace import register

__all__ = ['PRIOR_VARIANCES', 'num_priors_per_location', 'generate_priors', 'encode_center_size',
           'decode_center_size', 'SSDOutputDecoder']

# The variances BlazeFace gives every prior (fluid's prior_box default).
PRIOR_VARIANCES = (0.1, 0.1, 0.2, 0.2)


def num_priors_per_location(min_sizes, densities=None, use_density_prior_box=False):
    """Priors at one location of one map: the head conv needs it to size its output channels."""
    if use_density_prior_box:
        return int(sum(d * d for d in densities))
    return len(min_sizes)


def _plain_priors(feature_shape, image_shape, min_sizes, step, offset):
    """fluid prior_box (aspect ratio 1, no flip, no clip), [h*w*len(min_sizes), 4].

    Plain numpy, not ``paddle.vision.ops.prior_box``: priors are constants of the input size, and numpy keeps
    them computable while a static program or an export is being traced (tests compare with Paddle's kernel).
    """
    h, w = feature_shape
    img_h, img_w = image_shape
    cx = np.broadcast_to((np.arange(w, dtype=np.float64) + offset) * step, (h, w))
    cy = np.broadcast_to(((np.arange(h, dtype=np.float64) + offset) * step)[:, None], (h, w))
    per_location = [np.stack([(cx - size / 2.0) / img_w, (cy - size / 2.0) / img_h,
                              (cx + size / 2.0) / img_w, (cy + size / 2.0) / img_h], axis=-1)
                    for size in min_sizes]
    return np.stack(per_location, axis=2).reshape(-1, 4)


def _density_priors(feature_shape, image_shape, fixed_sizes, densities, step, offset):
    """fluid density_prior_box with fixed_ratios [1], [h*w*sum(d*d), 4].

    Follows the C++ kernel literally: the sub-grid spacing is the integer step average divided by the density
    with integer division, and every coordinate is clamped to [0, 1] whatever ``clip`` says.
    """
    h, w = feature_shape
    img_h, img_w = image_shape
    step_average = int(step)  # int((step_w + step_h) / 2) with step_w == step_h
    cx = (np.arange(w, dtype=np.float64) + offset) * step
    cy = (np.arange(h, dtype=np.float64) + offset) * step
    per_location = []  # [h, w, 4] per prior, in the kernel's order: size, then sub-row, then sub-column
    for size, density in zip(fixed_sizes, densities):
        shift = step_average // density
        start = -step_average / 2.0 + shift / 2.0
        for di in range(density):
            for dj in range(density):
                x = np.broadcast_to(cx + start + dj * shift, (h, w))
                y = np.broadcast_to((cy + start + di * shift)[:, None], (h, w))
                box = np.stack([(x - size / 2.0) / img_w, (y - size / 2.0) / img_h,
                                (x + size / 2.0) / img_w, (y + size / 2.0) / img_h], axis=-1)
                per_location.append(box)
    return np.clip(np.stack(per_location, axis=2), 0.0, 1.0).reshape(-1, 4)


def generate_priors(feature_shapes, image_shape, min_sizes, steps, use_density_prior_box=False, densities=None,
                    offset=0.5):
    """Normalised x1,y1,x2,y2 priors of all maps, float32 [P, 4].

    Order: map by map, row-major locations, prior index at a location; the order a head conv output of
    num_priors*4 channels has after NHWC transpose and reshape to [N, -1, 4].
    """
    boxes = []
    for i, feature_shape in enumerate(feature_shapes):
        if use_density_prior_box:
            boxes.append(_density_priors(feature_shape, image_shape, min_sizes[i], densities[i], steps[i], offset))
        else:
            boxes.append(_plain_priors(feature_shape, image_shape, min_sizes[i], steps[i], offset))
    return np.concatenate(boxes, axis=0).astype(np.float32)


def _center_size(boxes):
    """(cx, cy, w, h) of normalised x1,y1,x2,y2 boxes (box_normalized=True: no +1 on sizes)."""
    x1, y1, x2, y2 = paddle.unbind(boxes, axis=-1)
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def _variance_columns(variances, like):
    """The four variances as tensors broadcasting against [..., 4] (a 4-sequence or a [P, 4] tensor)."""
    if not isinstance(variances, paddle.Tensor):
        variances = paddle.to_tensor(np.asarray(variances, dtype=np.float32), dtype=like.dtype)
    return paddle.unbind(variances, axis=-1)


def encode_center_size(boxes, priors, variances):
    """fluid box_coder 'encode_center_size' (normalized): regression targets of ``boxes`` w.r.t. ``priors``."""
    pcx, pcy, pw, ph = _center_size(priors)
    tcx, tcy, tw, th = _center_size(boxes)
    v0, v1, v2, v3 = _variance_columns(variances, boxes)
    return paddle.stack([(tcx - pcx) / pw / v0, (tcy - pcy) / ph / v1,
                         paddle.log(paddle.abs(tw / pw)) / v2, paddle.log(paddle.abs(th / ph)) / v3], axis=-1)


def decode_center_size(deltas, priors, variances):
    """fluid box_coder 'decode_center_size' (normalized): boxes x1,y1,x2,y2 from regression ``deltas``."""
    pcx, pcy, pw, ph = _center_size(priors)
    d0, d1, d2, d3 = paddle.unbind(deltas, axis=-1)
    v0, v1, v2, v3 = _variance_columns(variances, deltas)
    cx, cy = v0 * d0 * pw + pcx, v1 * d1 * ph + pcy
    half_w, half_h = paddle.exp(v2 * d2) * pw / 2, paddle.exp(v3 * d3) * ph / 2
    return paddle.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


@register
class SSDOutputDecoder(object):
    """fluid detection_output: softmax, decode, per-class NMS, per-image keep_top_k.

    Output is the LoD tensor fluid made, as (detections [M, 6], counts [N]): rows [label, score, x1, y1, x2, y2]
    of all images in order. Differences from fluid, none of which changes which boxes are kept:
    rows are sorted by score within an image (fluid groups them by class); a batch without any detection gives
    an empty [0, 6] tensor (fluid gave a single row [-1]); only nms_eta == 1.0 is supported (BlazeFace's value;
    Paddle's nms op has no adaptive threshold).
    """

    def __init__(self, nms_threshold=0.45, nms_top_k=400, keep_top_k=200, score_threshold=0.01, nms_eta=1.0,
                 background_label=0):
        if nms_eta != 1.0:
            raise ValueError('SSDOutputDecoder supports only nms_eta=1.0, got {}'.format(nms_eta))
        self.nms_threshold = nms_threshold
        self.nms_top_k = nms_top_k
        self.keep_top_k = keep_top_k
        self.score_threshold = score_threshold
        self.nms_eta = nms_eta
        self.background_label = background_label

    def __call__(self, locs, confs, priors, variances):
        boxes = decode_center_size(locs, priors, variances)
        scores = F.softmax(confs, axis=-1)
        cand_scores, cand_boxes, cand_labels = self._class_candidates(boxes, scores)
        keep = self._nms_mask(cand_scores, cand_boxes, cand_labels, scores.shape[-1])
        return self._keep_top(cand_scores, cand_boxes, cand_labels, keep)

    def _class_candidates(self, boxes, scores):
        """The nms_top_k best boxes of each foreground class: [N, K] scores, [N, K, 4] boxes, [N, K] labels.

        fluid thresholds first and takes the top k after; taking the top k first and letting the threshold act
        in ``_nms_mask`` selects the same boxes with static shapes.
        """
        all_scores, all_boxes, all_labels = [], [], []
        for c in range(scores.shape[-1]):
            if c == self.background_label:
                continue
            top_scores, top_idx = _top_k(scores[:, :, c], self.nms_top_k)
            all_scores.append(top_scores)
            all_boxes.append(_gather_boxes(boxes, top_idx))
            all_labels.append(paddle.full_like(top_idx, c))
        return (paddle.concat(all_scores, axis=1), paddle.concat(all_boxes, axis=1),
                paddle.concat(all_labels, axis=1))

    def _nms_mask(self, scores, boxes, labels, num_classes):
        """[N, K] bool: candidates above score_threshold that survive greedy NMS within their (image, class).

        One NMS call for the whole batch: each (image, class) group is shifted to its own region of the plane
        so that boxes of different groups never overlap (in float64 the shift leaves the IoUs exact enough).
        """
        image = paddle.arange(paddle.shape(scores)[0], dtype='int64').unsqueeze(-1)
        group = (image * num_classes + labels).reshape([-1, 1]).astype('float64')
        flat_boxes = boxes.reshape([-1, 4]).astype('float64')
        # The span is taken in float32 (same value): Paddle Inference 3.3's oneDNN CPU path computes a float64
        # abs in place, which would flip the sign of negative box coordinates in an exported model.
        span = boxes.abs().max().astype('float64') * 2 + 1
        shifted = flat_boxes + group * span
        flat_scores = scores.reshape([-1])
        valid = paddle.nonzero(flat_scores > self.score_threshold).flatten()
        kept = valid[nms(shifted[valid], self.nms_threshold, scores=flat_scores[valid])]
        mask = paddle.scatter(paddle.zeros_like(flat_scores, dtype='int32'), kept,
                              paddle.ones_like(kept, dtype='int32'))
        return mask.reshape(paddle.shape(scores)).astype('bool')

    def _keep_top(self, scores, boxes, labels, keep):
        """The keep_top_k best kept candidates of each image as (detections, counts), by score descending."""
        top_scores, top_idx = _top_k(paddle.where(keep, scores, paddle.full_like(scores, -1.0)), self.keep_top_k)
        rows = paddle.concat([paddle.take_along_axis(labels, top_idx, axis=1).astype(scores.dtype).unsqueeze(-1),
                              top_scores.unsqueeze(-1), _gather_boxes(boxes, top_idx)], axis=-1)
        selected = top_scores >= 0
        detections = paddle.masked_select(rows, selected.unsqueeze(-1).expand_as(rows)).reshape([-1, 6])
        return detections, selected.astype('int32').sum(axis=1)


def _top_k(values, limit):
    """paddle.topk along axis 1 keeping min(limit, length) entries (all if limit < 0).

    k stays a tensor so that the decoder also traces under paddle.jit.to_static with a dynamic prior count.
    """
    length = paddle.shape(values)[1]
    k = length if limit < 0 else paddle.minimum(length, paddle.full([], limit, dtype=length.dtype))
    return paddle.topk(values, k, axis=1)


def _gather_boxes(boxes, idx):
    """boxes[n, idx[n, j]] for [N, P, 4] boxes and [N, K] indices: [N, K, 4]."""
    return paddle.take_along_axis(boxes, idx.unsqueeze(-1), axis=1, broadcast=True)
