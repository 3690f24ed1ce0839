"""The NAS reward: the original search's own face AP at IoU 0.5 (``calculate_ap_py``), not VOC or COCO AP.

How it scores, kept from the original so rewards stay comparable with it:
- within each image, predictions are matched in score-descending order (the decoder's order); each takes the
  first not-yet-matched ground-truth face, in annotation order, with IoU >= 0.5, else it is a false positive;
- over the whole eval set, predictions are ranked by score and predictions with exactly equal scores form one
  rank (one precision/recall point);
- AP = sum_i precision_i * (recall_i - recall_{i-1}) with recall_{-1} = 0, without interpolation.

Where the original failed, the port defines the result: no predictions at all gives 0.0 (the original raised
IndexError), and an eval set without any face gives 0.0 with a warning (the original divided by zero), so a
candidate that detects nothing is rewarded 0 instead of killing the search. The original gathered boxes
correctly only for eval batch size 1; ``split_eval_batch`` is right for any batch size.
"""
import warnings

import numpy as np

__all__ = ['IOU_THRESHOLD', 'face_ap', 'split_eval_batch', 'APAccumulator']

IOU_THRESHOLD = 0.5


def _iou_matrix(preds, gts):
    """IoU [K, G] computed as the original did: pixel boxes without +1, and the intersection capped by both
    areas (``min(intersection, area1, area2)``) before the union is formed."""
    lt = np.maximum(preds[:, None, :2], gts[None, :, :2])
    rb = np.minimum(preds[:, None, 2:4], gts[None, :, 2:4])
    overlaps = np.all(rb > lt, axis=2)
    inter = np.where(overlaps, np.prod(rb - lt, axis=2), 0.)
    area_p = ((preds[:, 2] - preds[:, 0]) * (preds[:, 3] - preds[:, 1]))[:, None]
    area_g = ((gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]))[None, :]
    inter = np.minimum(inter, np.minimum(area_p, area_g))
    union = np.where(overlaps, area_p + area_g - inter, 1.)
    return np.where(overlaps, inter / union, 0.)


def _match_image(gt_boxes, dets):
    """Greedy matching of one image: (scores, is_true_positive), predictions in score-descending order."""
    gts = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
    dets = dets[np.argsort(-dets[:, 4], kind='stable')]
    hits = _iou_matrix(dets, gts) >= IOU_THRESHOLD
    matched = np.zeros(len(gts), dtype=bool)
    is_tp = np.zeros(len(dets), dtype=bool)
    for k in range(len(dets)):
        free = np.flatnonzero(hits[k] & ~matched)
        if free.size:
            matched[free[0]] = is_tp[k] = True
    return dets[:, 4], is_tp


def _average_precision(scores, is_tp, num_gt):
    """AP over all matched predictions, equal scores merged into one rank."""
    if num_gt == 0:
        warnings.warn('face AP: the eval set has no ground-truth faces; AP is defined as 0.0')
        return 0.0
    if scores.size == 0:
        return 0.0
    _, rank = np.unique(scores, return_inverse=True)
    tp = np.bincount(rank, weights=is_tp.astype(np.float64))[::-1].cumsum()
    predicted = np.bincount(rank)[::-1].cumsum()
    recall = tp / num_gt
    return float(np.sum(tp / predicted * np.diff(recall, prepend=0.)))


def split_eval_batch(detections, counts, batch):
    """Per-image (gt_px [G, 4], dets_px [K, 5] x1, y1, x2, y2, score) from one eval batch.

    ``detections`` [M, 6] rows ``[label, score, x1, y1, x2, y2]`` are normalised to the input tensor, so they
    are scaled by the tensor's width and height (a padded image keeps its content at the top left, where the
    scaling puts it back); ``counts`` [N] gives each image's rows, in image order. Ground truth ``gt_bbox``
    [N, G, 4] is normalised to the original image and scaled by ``im_shape`` (h, w); only the first
    ``gt_num`` rows of each image are faces, the rest is padding.
    """
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    tensor_h, tensor_w = np.asarray(batch['image']).shape[2:4]
    if counts.sum() != len(detections) or len(counts) != len(batch['image']):
        raise ValueError('split_eval_batch: counts {} do not split {} detections over {} images'.format(
            counts.tolist(), len(detections), len(batch['image'])))
    per_image = np.split(detections, np.cumsum(counts)[:-1])
    im_shapes = np.asarray(batch['im_shape'], dtype=np.float64)
    gt_boxes = np.asarray(batch['gt_bbox'], dtype=np.float64)
    gt_nums = np.asarray(batch['gt_num']).reshape(-1)
    images = []
    for rows, (im_h, im_w), gt, gt_num in zip(per_image, im_shapes[:, :2], gt_boxes, gt_nums):
        dets = np.concatenate([rows[:, 2:6] * [tensor_w, tensor_h, tensor_w, tensor_h], rows[:, 1:2]], axis=1)
        images.append((gt[:int(gt_num)] * [im_w, im_h, im_w, im_h], dets))
    return images


class APAccumulator(object):
    """Streams the eval set: each image is matched as it arrives, keeping only scores and hit flags."""

    def __init__(self):
        self._scores = []
        self._is_tp = []
        self._num_gt = 0

    def add_image(self, gt_boxes, dets):
        """Add one image: pixel gt [G, 4] and pixel dets [K, 5] (x1, y1, x2, y2, score)."""
        scores, is_tp = _match_image(gt_boxes, dets)
        self._scores.append(scores)
        self._is_tp.append(is_tp)
        self._num_gt += len(np.asarray(gt_boxes).reshape(-1, 4))

    def add(self, detections, counts, batch):
        """Add one eval batch (see ``split_eval_batch`` for the layout)."""
        for gt_boxes, dets in split_eval_batch(detections, counts, batch):
            self.add_image(gt_boxes, dets)

    def accumulate(self):
        """AP@0.5 over everything added so far."""
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        is_tp = np.concatenate(self._is_tp) if self._is_tp else np.zeros(0, dtype=bool)
        return _average_precision(scores, is_tp, self._num_gt)


def face_ap(images):
    """AP@0.5 of an iterable of (gt_boxes [G, 4], dets [K, 5]) in pixels, x1 y1 x2 y2 (+ score)."""
    accumulator = APAccumulator()
    for gt_boxes, dets in images:
        accumulator.add_image(gt_boxes, dets)
    return accumulator.accumulate()
