"""Each sample transform on small arrays: boxes stay on the face they describe, values are exact."""
import cv2
import numpy as np
import pytest

from ppdet.core.workspace import ConfigError, build, load_config
from ppdet.data.transform import operators as T


def white_face(h, w, box):
    """A black HWC image with one white rectangle, and its sample with the box normalised."""
    x1, y1, x2, y2 = box
    im = np.zeros((h, w, 3), np.uint8)
    im[y1:y2, x1:x2] = 255
    boxes = np.array([box], np.float32) / np.array([w, h, w, h], np.float32)
    return {'image': im, 'gt_bbox': boxes, 'gt_class': np.ones((1, 1), np.int32), 'h': h, 'w': w}


def bright_extent(im):
    """[x1, y1, x2, y2) of the white pixels (the expand fill, 127, and crop padding, 0, stay below)."""
    ys, xs = np.nonzero(im[..., 0] > 200)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_box_on_face(sample, tol=1.5):
    h, w = sample['image'].shape[:2]
    assert (sample['h'], sample['w']) == (h, w)
    box = sample['gt_bbox'][0] * np.array([w, h, w, h])
    np.testing.assert_allclose(bright_extent(sample['image']), box, atol=tol)


def rng(seed):
    """The sample's own generator, as the reader hands one to every transform."""
    return np.random.default_rng(seed)


# ---- decoding and boxes ----

def test_decode_reads_file_to_rgb_and_sets_sizes(tmp_path):
    im = np.zeros((5, 7, 3), np.uint8)
    im[..., 0] = 200  # blue in OpenCV's BGR
    path = tmp_path / 'a.png'
    cv2.imwrite(str(path), im)
    sample = T.DecodeImage(to_rgb=True)({'im_file': str(path)})
    assert sample['image'].shape == (5, 7, 3) and (sample['h'], sample['w']) == (5, 7)
    assert sample['image'][0, 0].tolist() == [0, 0, 200]
    np.testing.assert_array_equal(sample['im_shape'], [5, 7])
    assert T.DecodeImage(to_rgb=False)({'im_file': str(path)})['image'][0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize('content, message', [(None, 'missing image file'), (b'', 'unreadable image'),
                                              (b'not a jpeg at all', 'unreadable image')])
def test_decode_bad_files_raise_sample_error(tmp_path, content, message):
    path = tmp_path / 'bad.jpg'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(T.SampleError, match=message):
        T.DecodeImage()({'im_file': str(path)})


def test_normalize_box_divides_by_image_size():
    sample = {'gt_bbox': np.array([[10, 20, 30, 40]], np.float32), 'w': 100, 'h': 200}
    out = T.NormalizeBox()(sample)['gt_bbox']
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[0.1, 0.1, 0.3, 0.2]], np.float32))


# ---- colour ----

def distort(**kwargs):
    """RandomDistort with every distortion off unless switched on by kwargs."""
    args = dict(brightness_prob=0., contrast_prob=0., saturation_prob=0., hue_prob=0., is_order=True)
    args.update(kwargs)
    return T.RandomDistort(**args)


def test_distort_brightness_scales_pixels():
    im = np.arange(0, 240, dtype=np.uint8).reshape(8, 10, 3)
    out = distort(brightness_lower=1.1, brightness_upper=1.1, brightness_prob=1.)({'image': im.copy()})['image']
    np.testing.assert_allclose(out, np.clip(np.rint(im * 1.1), 0, 255), atol=1)


def test_distort_zero_saturation_gives_gray_and_zero_contrast_the_mean():
    im = np.random.RandomState(0).randint(0, 256, (6, 6, 3)).astype(np.uint8)
    gray = distort(saturation_lower=0., saturation_upper=0., saturation_prob=1.)({'image': im.copy()})['image']
    assert np.abs(gray.astype(int) - gray[..., :1]).max() <= 1
    flat = distort(contrast_lower=0., contrast_upper=0., contrast_prob=1.)({'image': im.copy()})['image']
    mean = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).mean()
    assert np.all(np.abs(flat.astype(float) - mean) <= 1)


def test_distort_hue_turns_red_green_and_all_off_changes_nothing():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    green = distort(hue_lower=85, hue_upper=85, hue_prob=1.)({'image': red.copy()})['image']
    assert green[0, 0, 1] > 200 and green[0, 0, 0] < 60
    assert np.array_equal(distort()({'image': red.copy()})['image'], red)


# ---- geometry: the white rectangle must stay where the box says ----

def test_expand_keeps_image_and_box_together():
    sample = T.ExpandImage(max_ratio=3, prob=1.)(white_face(40, 60, (10, 5, 30, 25)), rng=rng(1))
    out = sample['image']
    assert 40 < out.shape[0] <= 120 and 60 < out.shape[1] <= 180
    assert_box_on_face(sample)
    x0 = int(round(sample['gt_bbox'][0, 0] * out.shape[1])) - 10
    y0 = int(round(sample['gt_bbox'][0, 1] * out.shape[0])) - 5
    assert np.array_equal(out[y0:y0 + 40, x0:x0 + 60], white_face(40, 60, (10, 5, 30, 25))['image'])
    assert out[0, 0].tolist() == [127, 127, 127] or out[-1, -1].tolist() == [127, 127, 127]


def test_expand_with_probability_zero_is_identity():
    sample = white_face(40, 60, (10, 5, 30, 25))
    assert T.ExpandImage(max_ratio=4, prob=0.)(dict(sample))['image'] is sample['image']


@pytest.mark.parametrize('seed', range(5))  # each seed draws another interpolation
def test_random_interp_resizes_to_target(seed):
    sample = T.RandomInterpImage(target_size=50)(white_face(80, 120, (20, 10, 80, 50)), rng=rng(seed))
    assert sample['image'].shape == (50, 50, 3)
    assert_box_on_face(sample)


def test_random_interp_with_max_size_keeps_aspect():
    assert T.RandomInterpImage(60, 100)(white_face(80, 120, (0, 0, 8, 8)))['image'].shape[:2] == (60, 90)
    assert T.RandomInterpImage(60, 80)(white_face(80, 120, (0, 0, 8, 8)))['image'].shape[:2] == (53, 80)
    with pytest.raises(ConfigError, match='target_size'):
        T.RandomInterpImage(target_size=0)


def test_flip_normalised_boxes_follow_the_mirror():
    sample = white_face(30, 50, (5, 4, 15, 20))
    original = sample['image'].copy()
    out = T.RandomFlipImage(prob=1., is_normalized=True)(sample)
    assert np.array_equal(out['image'], original[:, ::-1])
    np.testing.assert_allclose(out['gt_bbox'][0], [1 - 15 / 50, 4 / 30, 1 - 5 / 50, 20 / 30], rtol=1e-6)
    assert_box_on_face(out)


def test_flip_pixel_boxes_use_the_originals_convention():
    sample = {'image': np.zeros((30, 50, 3), np.uint8), 'gt_bbox': np.array([[5, 4, 15, 20]], np.float32)}
    out = T.RandomFlipImage(prob=1.)(sample)
    np.testing.assert_array_equal(out['gt_bbox'], [[50 - 15 - 1, 4, 50 - 5 - 1, 20]])


# ---- channel layout and normalisation ----

def test_permute_makes_chw_and_bgr():
    im = np.random.RandomState(1).randint(0, 256, (4, 5, 3)).astype(np.uint8)
    out = T.Permute()({'image': im})['image']
    assert out.shape == (3, 4, 5) and np.array_equal(out[0], im[..., 2]) and np.array_equal(out[2], im[..., 0])
    assert np.array_equal(T.Permute(to_bgr=False)({'image': im})['image'][0], im[..., 0])
    assert T.Permute(channel_first=False)({'image': im})['image'].shape == (4, 5, 3)


@pytest.mark.parametrize('is_scale', [False, True])
def test_normalize_image_values_are_exact(is_scale):
    chw = np.arange(0, 256, dtype=np.uint8).reshape(1, 16, 16).repeat(3, axis=0)
    mean, std = [104, 117, 123], [127.502231] * 3
    out = T.NormalizeImage(mean=mean, std=std, is_scale=is_scale)({'image': chw})['image']
    expected = (chw / (255. if is_scale else 1.) - np.reshape(mean, (3, 1, 1))) / np.reshape(std, (3, 1, 1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=2 * np.finfo(np.float32).eps, atol=1e-12)


def test_normalize_image_channel_last_and_bad_std():
    hwc = np.full((2, 2, 3), 10, np.uint8)
    out = T.NormalizeImage(mean=[1, 2, 3], std=[1, 2, 4], is_scale=False, is_channel_first=False)({'image': hwc})
    np.testing.assert_allclose(out['image'][0, 0], [9, 4, 1.75])
    with pytest.raises(ConfigError, match='std'):
        T.NormalizeImage(std=[1, 0, 1])


# ---- data-anchor-sampling crop ----

CROP_ANCHOR = [[1, 10, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.2, 0.0]]
CROP_SQUARE = [[1, 50, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0], [1, 50, 0.3, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]]


@pytest.mark.parametrize('seed', range(4))
def test_anchor_crop_is_target_sized_and_keeps_the_face(seed):
    op = T.CropImageWithDataAchorSampling(batch_sampler=CROP_SQUARE, anchor_sampler=CROP_ANCHOR, target_size=64,
                                          sampling_prob=0.)
    sample = op(white_face(150, 200, (80, 40, 140, 100)), rng=rng(seed))
    assert sample['image'].shape == (64, 64, 3)
    assert_box_on_face(sample)


@pytest.mark.parametrize('seed', range(4))
def test_square_crop_keeps_the_face_and_drops_tiny_ones(seed):
    sample = white_face(120, 160, (60, 30, 110, 80))
    sample['image'][5:7, 5:7] = 100  # a 2 px face, below min_size at target 160
    sample['gt_bbox'] = np.vstack([sample['gt_bbox'], [[5 / 160, 5 / 120, 7 / 160, 7 / 120]]]).astype(np.float32)
    sample['gt_class'] = np.ones((2, 1), np.int32)
    op = T.CropImageWithDataAchorSampling(batch_sampler=CROP_SQUARE, target_size=160, sampling_prob=1.)
    out = op(sample, rng=rng(seed))
    assert out['image'].shape[0] == out['image'].shape[1] <= 120  # square crops in pixels
    assert len(out['gt_bbox']) == len(out['gt_class']) == 1
    assert_box_on_face(out)


def test_crop_needs_target_size_and_anchor_sampler():
    with pytest.raises(ConfigError, match='target_size'):
        T.CropImageWithDataAchorSampling(batch_sampler=CROP_SQUARE)
    with pytest.raises(ConfigError, match='anchor_sampler'):
        T.CropImageWithDataAchorSampling(batch_sampler=CROP_SQUARE, target_size=640)


# ---- YAML ----

def test_original_transform_tags_load_with_their_arguments(tmp_path):
    path = tmp_path / 'c.yml'
    path.write_text(
        'ops:\n'
        '- !DecodeImage {to_rgb: true}\n- !NormalizeBox {}\n'
        '- !RandomDistort {brightness_lower: 0.875, brightness_upper: 1.125, is_order: true}\n'
        '- !ExpandImage {max_ratio: 4, prob: 0.5}\n- !RandomInterpImage {target_size: 640}\n'
        '- !RandomFlipImage {is_normalized: true}\n- !Permute {}\n'
        '- !NormalizeImage {is_scale: false, mean: [104, 117, 123], std: [127.502231, 127.502231, 127.502231]}\n'
        '- !CropImageWithDataAchorSampling {anchor_sampler: [[1, 10, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.2, 0.0]],\n'
        '    batch_sampler: [[1, 50, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]], target_size: 640}\n')
    ops = build(load_config(str(path))['ops'])
    assert [type(op).__name__ for op in ops] == [
        'DecodeImage', 'NormalizeBox', 'RandomDistort', 'ExpandImage', 'RandomInterpImage', 'RandomFlipImage',
        'Permute', 'NormalizeImage', 'CropImageWithDataAchorSampling']
    assert ops[2].ranges['brightness'] == (0.875, 1.125, 0.5) and ops[2].is_order
    assert (ops[3].max_ratio, ops[3].prob, ops[3].mean) == (4, 0.5, [127.5, 127.5, 127.5])
    assert ops[5].is_normalized and ops[6].to_bgr and ops[8].target_size == 640


def test_unknown_transform_argument_is_a_config_error(tmp_path):
    path = tmp_path / 'c.yml'
    path.write_text('ops: [!ExpandImage {max_ratio: 4, prob: 0.5, ratio: 2}]\n')
    with pytest.raises(ConfigError, match="'ratio'"):
        load_config(str(path))


# ---- randomness ----

def test_random_ops_draw_only_from_the_generator_they_are_handed():
    """The same generator state gives the same augmented sample, another one another; numpy's and Python's global
    generators are neither read nor reseeded (what else draws from them does not depend on the data)."""
    import random
    ops = [T.RandomDistort(is_order=False, count=3), T.ExpandImage(max_ratio=3, prob=0.5),
           T.CropImageWithDataAchorSampling(batch_sampler=CROP_SQUARE, anchor_sampler=CROP_ANCHOR, target_size=64,
                                            sampling_prob=0.5),
           T.RandomInterpImage(target_size=64), T.RandomFlipImage(is_normalized=True)]

    def augmented(seed):
        generator, sample = rng(seed), white_face(150, 200, (80, 40, 140, 100))
        for op in ops:
            sample = op(sample, rng=generator)
        return sample

    numpy_state, python_state = np.random.get_state(), random.getstate()
    first, again = [augmented(seed) for seed in (3, 3)]
    assert all(np.array_equal(first[k], again[k]) for k in ('image', 'gt_bbox', 'gt_class'))
    assert any(not np.array_equal(first['image'], augmented(seed)['image']) for seed in (4, 5, 6))
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert random.getstate() == python_state
