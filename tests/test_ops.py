"""Priors, box coding and the output decoder against hand-computed fluid behaviour."""
import numpy as np
import paddle
import pytest
from paddle.static import InputSpec

from ppdet.core.workspace import create
from ppdet.modeling.ops import (PRIOR_VARIANCES, SSDOutputDecoder, decode_center_size, encode_center_size,
                                generate_priors, num_priors_per_location)


def test_num_priors_per_location():
    assert num_priors_per_location([16., 24.]) == 2
    assert num_priors_per_location([32., 48., 64., 80., 96., 128.], [2, 1, 1, 1, 1, 1], True) == 9


def test_plain_priors_hand_computed():
    # map 0: 2x3 locations, step 8, sizes 4 and 6; map 1: 1x2 locations, step 16, size 10; image 16 x 24
    priors = generate_priors([(2, 3), (1, 2)], (16, 24), [[4., 6.], [10.]], [8., 16.])
    assert priors.dtype == np.float32 and priors.shape == (2 * 3 * 2 + 2, 4)
    scale = np.array([24, 16, 24, 16], dtype=np.float32)
    np.testing.assert_allclose(priors[0] * scale, [2, 2, 6, 6], atol=1e-5)      # row 0, col 0, size 4
    np.testing.assert_allclose(priors[1] * scale, [1, 1, 7, 7], atol=1e-5)      # row 0, col 0, size 6
    np.testing.assert_allclose(priors[2] * scale, [10, 2, 14, 6], atol=1e-5)    # row 0, col 1, size 4
    np.testing.assert_allclose(priors[7] * scale, [1, 9, 7, 15], atol=1e-5)     # row 1, col 0, size 6
    np.testing.assert_allclose(priors[13] * scale, [19, 3, 29, 13], atol=1e-5)  # map 1, col 1: not clipped
    assert priors[13, 2] > 1.0


def test_density_priors_hand_computed():
    # one location (centre 8, 8) of a step-16 map in a 16 x 32 image: size 8 at density 2, size 20 at density 1
    priors = generate_priors([(1, 1)], (16, 32), [[8., 20.]], [16.], use_density_prior_box=True,
                             densities=[[2, 1]])
    scale = np.array([32, 16, 32, 16], dtype=np.float32)
    expected = [[0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16],  # sub-rows outer, sub-columns inner
                [0, 0, 18, 16]]  # [-2, -2, 18, 18] clamped to the image as fluid's kernel always does
    np.testing.assert_allclose(priors * scale, expected, atol=1e-5)


def test_density_priors_use_integer_shift():
    # step 12, density 5: fluid's shift is 12 // 5 = 2 (not 2.4), sub-centres 1, 3, 5, 7, 9
    priors = generate_priors([(1, 1)], (12, 12), [[4.]], [12.], use_density_prior_box=True, densities=[[5]])
    assert priors.shape == (25, 4)
    np.testing.assert_allclose(priors[0] * 12, [0, 0, 3, 3], atol=1e-5)
    np.testing.assert_allclose(priors[6] * 12, [1, 1, 5, 5], atol=1e-5)
    np.testing.assert_allclose(priors[24] * 12, [7, 7, 11, 11], atol=1e-5)


def test_encode_hand_value_and_round_trip():
    prior = paddle.to_tensor([[0.1, 0.1, 0.3, 0.3]])
    box = paddle.to_tensor([[0.15, 0.1, 0.35, 0.5]])
    np.testing.assert_allclose(encode_center_size(box, prior, PRIOR_VARIANCES).numpy(),
                               [[2.5, 5.0, 0.0, np.log(2.0) / 0.2]], atol=1e-5)
    rng = np.random.RandomState(0)
    xy = rng.uniform(0, 0.7, (2, 5, 2))
    boxes = paddle.to_tensor(np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (2, 5, 2))], -1).astype('float32'))
    pxy = rng.uniform(0, 0.7, (5, 2))
    priors = paddle.to_tensor(np.concatenate([pxy, pxy + rng.uniform(0.05, 0.3, (5, 2))], -1).astype('float32'))
    variances = paddle.to_tensor(np.tile(PRIOR_VARIANCES, (5, 1)).astype('float32'))
    deltas = encode_center_size(boxes, priors, variances)
    np.testing.assert_allclose(deltas.numpy(), encode_center_size(boxes, priors, PRIOR_VARIANCES).numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(decode_center_size(deltas, priors, PRIOR_VARIANCES).numpy(), boxes.numpy(),
                               atol=1e-5)


# Decoder fixtures: zero deltas decode to the priors themselves.
PRIORS = np.array([[0.10, 0.10, 0.30, 0.30],
                   [0.12, 0.10, 0.32, 0.30],   # IoU 0.82 with prior 0
                   [0.60, 0.60, 0.80, 0.80],
                   [0.00, 0.50, 0.20, 0.70]], dtype=np.float32)


def _decode(face_probs, **kwargs):
    """Run the decoder on per-image face probabilities of the four PRIORS (two classes)."""
    probs = np.asarray(face_probs, dtype=np.float32)
    confs = np.log(np.stack([1 - probs, probs], axis=-1))
    decoder = SSDOutputDecoder(**kwargs)
    det, counts = decoder(paddle.zeros([len(probs), 4, 4]), paddle.to_tensor(confs), paddle.to_tensor(PRIORS),
                          PRIOR_VARIANCES)
    return det.numpy(), counts.numpy()


def test_decoder_nms_threshold_and_counts():
    det, counts = _decode([[0.9, 0.8, 0.7, 0.005], [0.02, 0.001, 0.001, 0.001]])
    assert det.shape == (3, 6) and counts.tolist() == [2, 1]
    # image 0: prior 1 suppressed by overlapping prior 0, disjoint prior 2 kept, prior 3 under the threshold
    np.testing.assert_allclose(det[:2], [[1, 0.9] + PRIORS[0].tolist(), [1, 0.7] + PRIORS[2].tolist()], atol=1e-5)
    np.testing.assert_allclose(det[2], [1, 0.02] + PRIORS[0].tolist(), atol=1e-5)


def test_decoder_keeps_overlaps_below_nms_threshold():
    det, counts = _decode([[0.9, 0.8, 0.1, 0.1]], nms_threshold=0.9)
    assert counts.tolist() == [4]
    np.testing.assert_allclose(det[:, 1], [0.9, 0.8, 0.1, 0.1], atol=1e-6)  # score order


def test_decoder_top_k_limits():
    det, counts = _decode([[0.9, 0.1, 0.7, 0.8]], keep_top_k=2)
    assert counts.tolist() == [2]
    np.testing.assert_allclose(det[:, 1], [0.9, 0.8], atol=1e-6)
    det, counts = _decode([[0.9, 0.1, 0.7, 0.8]], nms_top_k=1)
    assert counts.tolist() == [1] and abs(det[0, 1] - 0.9) < 1e-6


def test_decoder_background_never_output_and_nms_per_class():
    # three classes; prior 0 is best for class 1, overlapping prior 1 for class 2, prior 2 is background
    probs = np.array([[[0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.98, 0.01, 0.01], [0.995, 0.0025, 0.0025]]])
    det, counts = SSDOutputDecoder()(paddle.zeros([1, 4, 4]), paddle.to_tensor(np.log(probs).astype('float32')),
                                     paddle.to_tensor(PRIORS), PRIOR_VARIANCES)
    det = det.numpy()
    assert 0 not in det[:, 0]
    np.testing.assert_allclose(sorted(det[:2, :2].tolist()), [[1, 0.9], [2, 0.9]], atol=1e-6)
    assert counts.tolist() == [len(det)] and np.all(det[:, 1] > 0.01)


def test_decoder_empty_and_config():
    det, counts = _decode([[0.001] * 4, [0.001] * 4])
    assert det.shape == (0, 6) and counts.tolist() == [0, 0]
    decoder = create('SSDOutputDecoder', {'SSDOutputDecoder': {'keep_top_k': 50}})
    assert (decoder.keep_top_k, decoder.nms_top_k, decoder.nms_threshold, decoder.score_threshold) == (50, 400, 0.45,
                                                                                                    0.01)
    with pytest.raises(ValueError):
        SSDOutputDecoder(nms_eta=0.9)


class _Head(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.decoder = SSDOutputDecoder()

    def forward(self, locs, confs, priors):
        return self.decoder(locs, confs, priors, PRIOR_VARIANCES)


def test_decoder_to_static_with_dynamic_shapes():
    rng = np.random.RandomState(1)
    locs = paddle.to_tensor(rng.randn(2, 4, 4).astype('float32') * 0.1)
    confs = paddle.to_tensor(rng.randn(2, 4, 2).astype('float32'))
    expected = _Head()(locs, confs, paddle.to_tensor(PRIORS))
    static = paddle.jit.to_static(_Head(), full_graph=True, input_spec=[
        InputSpec([None, None, 4], 'float32'), InputSpec([None, None, 2], 'float32'), InputSpec([None, 4], 'float32')])
    det, counts = static(locs, confs, paddle.to_tensor(PRIORS))
    np.testing.assert_allclose(det.numpy(), expected[0].numpy(), atol=1e-6)
    assert counts.numpy().tolist() == expected[1].numpy().tolist()


def test_plain_priors_match_paddles_prior_box_kernel():
    """Our numpy priors against Paddle's own prior_box op (fluid's kernel) on a non-square multi-size map."""
    from paddle.vision.ops import prior_box
    feat, image = paddle.zeros([1, 1, 3, 5]), paddle.zeros([1, 1, 48, 80])
    expected, _ = prior_box(feat, image, min_sizes=[16., 24.], aspect_ratios=[1.0], steps=[16., 16.],
                            flip=False, clip=False, offset=0.5)
    ours = generate_priors([(3, 5)], (48, 80), [[16., 24.]], [16.])
    np.testing.assert_allclose(ours, expected.numpy().reshape(-1, 4), rtol=1e-6, atol=1e-7)
