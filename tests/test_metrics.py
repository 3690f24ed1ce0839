"""The NAS reward (face AP@0.5) against hand-computed cases, batch gathering for any batch size, and the
median-smoothed training statistics of the log line."""
import numpy as np
import pytest

from ppdet.slim.nas.metrics import APAccumulator, face_ap, split_eval_batch
from ppdet.utils.stats import TrainingStats, eta_string

FACE_A = [10, 10, 50, 50]
FACE_B = [100, 100, 140, 150]
MISS = [300, 300, 320, 320]  # overlaps no face


def det(box, score):
    return list(box) + [score]


def test_perfect_detector_scores_one():
    images = [([FACE_A, FACE_B], [det(FACE_A, 0.9), det(FACE_B, 0.3)]),
              ([FACE_B], [det(FACE_B, 0.6)])]
    assert face_ap(images) == pytest.approx(1.0)


@pytest.mark.parametrize('tp_score, fp_score, faces, expected', [
    (0.9, 0.8, [FACE_A], 1.0),              # p=[1, 1/2], r=[1, 1]
    (0.8, 0.9, [FACE_A], 0.5),              # p=[0, 1/2], r=[0, 1]
    (0.9, 0.8, [FACE_A, FACE_B], 0.5),      # p=[1, 1/2], r=[1/2, 1/2]
    (0.8, 0.9, [FACE_A, FACE_B], 0.25),     # p=[0, 1/2], r=[0, 1/2]
])
def test_one_true_and_one_false_positive(tp_score, fp_score, faces, expected):
    assert face_ap([(faces, [det(FACE_A, tp_score), det(MISS, fp_score)])]) == pytest.approx(expected)


def test_equal_scores_form_one_rank_across_images():
    # 2 TP + 1 FP all at 0.9: one point p=2/3, r=1. Ranking them TP-first would give 1.0, FP-first 0.583.
    images = [([FACE_A], [det(MISS, 0.9), det(FACE_A, 0.9)]),
              ([FACE_B], [det(FACE_B, 0.9)])]
    assert face_ap(images) == pytest.approx(2 / 3)


def test_no_detections_scores_zero():
    assert face_ap([([FACE_A], np.zeros((0, 5)))]) == 0.0


@pytest.mark.parametrize('dets', [[det(FACE_A, 0.9)], np.zeros((0, 5))])
def test_no_faces_scores_zero_with_warning(dets):
    with pytest.warns(UserWarning, match='no ground-truth faces'):
        assert face_ap([(np.zeros((0, 4)), dets)]) == 0.0


def test_second_prediction_on_a_matched_face_is_false_positive():
    near_a = [12, 10, 52, 50]  # IoU with FACE_A ~0.9
    images = [([FACE_A, FACE_B], [det(FACE_A, 0.9), det(near_a, 0.8), det(FACE_B, 0.7)])]
    # TP, FP, TP: p=[1, 1/2, 2/3], r=[1/2, 1/2, 1]
    assert face_ap(images) == pytest.approx(0.5 + 2 / 3 * 0.5)


def test_prediction_takes_the_next_unmatched_face():
    face_c = [10, 10, 50, 46]  # IoU 0.9 with FACE_A
    images = [([FACE_A, face_c], [det(FACE_A, 0.9), det(FACE_A, 0.8)])]
    assert face_ap(images) == pytest.approx(1.0)


def test_each_image_is_matched_in_score_order_whatever_the_input_order():
    # Both predictions hit FACE_A; the 0.9 one must take it, leaving the 0.2 one a FP.
    images = [([FACE_A], [det(FACE_A, 0.2), det([11, 10, 51, 50], 0.9)])]
    assert face_ap(images) == pytest.approx(1.0)  # in input order it would be p=[0, 1/2], r=[0, 1]: 0.5


@pytest.mark.parametrize('y2, expected', [(5., 1.0), (4.9, 0.0)])
def test_iou_threshold_is_inclusive_and_without_plus_one(y2, expected):
    # IoU = 10*y2 / 100: 0.5 matches, 0.49 does not (with +1 pixel areas it would be 0.54).
    assert face_ap([([[0, 0, 10, 10]], [det([0, 0, 10, y2], 0.9)])]) == pytest.approx(expected)


def normalised_batch(images, tensor_hw):
    """Encode pixel (gt, dets, (h, w)) images as one eval batch padded to tensor_hw."""
    height, width = tensor_hw
    max_gt = max(len(gt) for gt, _, _ in images)
    batch = {'image': np.zeros((len(images), 3, height, width), np.float32),
             'im_shape': np.array([hw for _, _, hw in images], np.float32),
             'gt_bbox': np.zeros((len(images), max_gt, 4), np.float32),
             'gt_num': np.array([len(gt) for gt, _, _ in images], np.int32)}
    rows = []
    for i, (gt, dets, (h, w)) in enumerate(images):
        batch['gt_bbox'][i, :len(gt)] = np.array(gt, np.float64).reshape(-1, 4) / [w, h, w, h]
        for x1, y1, x2, y2, score in dets:
            rows.append([1, score, x1 / width, y1 / height, x2 / width, y2 / height])
    counts = np.array([len(d) for _, d, _ in images])
    return np.array(rows, np.float64).reshape(-1, 6), counts, batch


IMAGE_1 = ([FACE_A, FACE_B], [det(FACE_A, 0.9), det([100, 98, 141, 150], 0.7), det(MISS, 0.8)], (400, 360))
IMAGE_2 = ([[20, 30, 60, 80]], [det([24, 30, 60, 84], 0.85), det([0, 0, 30, 30], 0.75)], (200, 250))
IMAGE_3 = ([[5, 5, 40, 40]], [], (120, 100))


def test_split_eval_batch_undoes_padding_and_normalisation():
    images = [IMAGE_1, IMAGE_2, IMAGE_3]
    split = split_eval_batch(*normalised_batch(images, (400, 360)))
    assert len(split) == 3
    for (gt_px, dets_px), (gt, dets, _) in zip(split, images):
        np.testing.assert_allclose(gt_px, np.reshape(gt, (-1, 4)), atol=1e-3)
        np.testing.assert_allclose(dets_px, np.reshape(dets, (-1, 5)), atol=1e-6)


def test_batched_ap_equals_image_by_image_ap():
    images = [IMAGE_1, IMAGE_2, IMAGE_3]
    one_by_one = APAccumulator()
    for image in images:
        one_by_one.add(*normalised_batch([image], image[2]))
    batched = APAccumulator()
    batched.add(*normalised_batch(images[:2], (400, 360)))
    batched.add(*normalised_batch(images[2:], (128, 128)))
    expected = face_ap([(gt, dets) for gt, dets, _ in images])
    # 4 faces (IMAGE_3's is missed); ranks 0.9 TP, 0.85 TP, 0.8 FP, 0.75 FP, 0.7 TP -> (1 + 1 + 3/5) / 4
    assert expected == pytest.approx((1 + 1 + 0.6) / 4)
    assert one_by_one.accumulate() == pytest.approx(expected)
    assert batched.accumulate() == pytest.approx(expected)


def test_split_eval_batch_rejects_counts_that_do_not_add_up():
    detections, counts, batch = normalised_batch([IMAGE_1, IMAGE_2], (400, 360))
    with pytest.raises(ValueError, match='counts'):
        split_eval_batch(detections, counts + 1, batch)


def test_training_stats_log_the_window_median():
    stats = TrainingStats(3, ['loss', 'loss_cls'])
    for loss in [1.0, 9.0, 2.0, 4.0, 100.0]:
        stats.update({'loss': loss, 'loss_cls': np.array([loss, 0.0]), 'ignored': 7})
    # window [2, 4, 100]: median 4 (the mean would be 35.3); loss_cls is the mean of each entry, median 2
    assert stats.log() == 'loss: 4.000000, loss_cls: 2.000000'


@pytest.mark.parametrize('seconds, text', [(3725.9, '1:02:05'), (90061, '1 day, 1:01:01')])
def test_eta_string_formats_whole_seconds(seconds, text):
    assert eta_string(seconds) == text
