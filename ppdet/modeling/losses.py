"""SSD multibox loss of BlazeFace (fluid.layers.ssd_loss as BlazeFace calls it), for Paddle 3 dygraph.

Matching and hard negative mining choose indices and carry no gradient, so they run in numpy on detached
values; the loss itself is built from Paddle ops on the network outputs.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from ppdet.core.workspace import register
from ppdet.modeling.ops import encode_center_size

__all__ = ['SSDLoss', 'box_iou', 'PriorIndex', 'match_priors']

# fluid's matchers ignore pairs whose IoU is below this (they "do not overlap").
_EPS = 1e-6


def box_iou(a, b):
    """fluid iou_similarity with box_normalized=True, elementwise over broadcast [..., 4] boxes: no +1 on
    sizes, 1e-10 added to the union."""
    inter_w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    inter_h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + 1e-10)


def _unit_key(values, origin, span):
    """Monotone map into [0, 0.5]: ``integer + key`` sorts by the integer first, then by the value."""
    return 0.5 * np.clip((values - origin) / span, 0.0, 1.0)


def _expand(owner, start, stop):
    """Flatten the index ranges [start, stop) into (their owner, index) per element."""
    counts = np.maximum(stop - start, 0)
    return np.repeat(owner, counts), np.arange(counts.sum()) + np.repeat(start - np.cumsum(counts) + counts, counts)


class PriorIndex(object):
    """Priors arranged so that the ones overlapping a box are found without scoring all of them.

    The dense [G, P] IoU costs ~100 ms per image with hundreds of faces at 22400 priors. Priors are grouped
    by size (rounded; the group's largest size bounds it); a prior overlaps a box only if its centre lies in
    the box grown by half that size. That rectangle is a run of centre columns of the group (sorted by x)
    and, in each column, a run of centres (sorted by y); both runs come from searchsorted on composite keys
    (group + x key, column + y key). Works for any priors; regular grids just make the runs short.
    """

    def __init__(self, priors):
        self.priors = priors
        centers = (priors[:, :2].astype(np.float64) + priors[:, 2:]) / 2
        sizes = (priors[:, 2:] - priors[:, :2]).astype(np.float64)
        self._x = (centers[:, 0].min(), np.ptp(centers[:, 0]) + 1.0)
        self._y = (centers[:, 1].min(), np.ptp(centers[:, 1]) + 1.0)
        _, group = np.unique(np.round(sizes, 4), axis=0, return_inverse=True)
        group = group.reshape(-1)
        self._half_sizes = np.zeros((group.max() + 1, 2))
        np.maximum.at(self._half_sizes, group, sizes / 2)
        self._column_keys, column = np.unique(group + _unit_key(centers[:, 0], *self._x), return_inverse=True)
        column = column.reshape(-1)
        self._column_half_h = self._half_sizes[self._column_keys.astype(np.int64), 1]
        self._order = np.lexsort((centers[:, 1], column))
        self._prior_keys = (column + _unit_key(centers[:, 1], *self._y))[self._order]

    def overlapping_pairs(self, boxes):
        """(gt index, prior index, IoU) of every pair with IoU >= 1e-6."""
        num_groups = len(self._half_sizes)
        gt = np.repeat(np.arange(len(boxes)), num_groups)
        group = np.tile(np.arange(num_groups), len(boxes))
        half_w = self._half_sizes[group, 0]
        first = np.searchsorted(self._column_keys, group + _unit_key(boxes[gt, 0] - half_w, *self._x), 'left')
        last = np.searchsorted(self._column_keys, group + _unit_key(boxes[gt, 2] + half_w, *self._x), 'right')
        gt, column = _expand(gt, first, last)
        half_h = self._column_half_h[column]
        first = np.searchsorted(self._prior_keys, column + _unit_key(boxes[gt, 1] - half_h, *self._y), 'left')
        last = np.searchsorted(self._prior_keys, column + _unit_key(boxes[gt, 3] + half_h, *self._y), 'right')
        gt, position = _expand(gt, first, last)
        prior = self._order[position]
        iou = box_iou(boxes[gt], self.priors[prior])
        keep = iou >= _EPS
        return gt[keep], prior[keep], iou[keep]


def _bipartite(gt, prior, match):
    """fluid's greedy bipartite match on pairs sorted best first, written into ``match`` (prior -> gt).

    fluid repeatedly takes the largest remaining IoU and retires its gt and prior. A pair that comes first
    among the remaining pairs of both its gt and its prior cannot be pre-empted, so every such pair is
    accepted at once: fluid's result in a few vectorised rounds instead of one step per gt.
    """
    alive = np.ones(len(gt), dtype=bool)
    while alive.any():
        idx = np.nonzero(alive)[0]
        _, gt_first = np.unique(gt[idx], return_index=True)
        _, prior_first = np.unique(prior[idx], return_index=True)
        chosen = idx[np.intersect1d(gt_first, prior_first)]
        match[prior[chosen]] = gt[chosen]
        alive &= ~np.isin(gt, gt[chosen]) & ~np.isin(prior, prior[chosen])


def match_priors(boxes, prior_index, overlap_threshold):
    """fluid bipartite_match(match_type='per_prediction'): [P] gt index per prior (-1 none), [P] best IoU.

    Every gt first gets its own best prior whatever the IoU (bipartite step); then every other prior takes
    the gt it overlaps most if that IoU reaches overlap_threshold. Ties go, as in fluid, to the lower index.
    """
    gt, prior, iou = prior_index.overlapping_pairs(boxes)
    order = np.lexsort((gt, prior, -iou))
    gt, prior, iou = gt[order], prior[order], iou[order]
    num_priors = len(prior_index.priors)
    match = np.full(num_priors, -1, dtype=np.int64)
    _bipartite(gt, prior, match)
    _, first = np.unique(prior, return_index=True)  # each prior's best pair
    best_iou = np.zeros(num_priors, dtype=np.float32)
    best_iou[prior[first]] = iou[first]
    extra = first[(match[prior[first]] == -1) & (iou[first] >= overlap_threshold)]
    match[prior[extra]] = gt[extra]
    return match, best_iou


def _smooth_l1(diff):
    """fluid smooth_l1 with sigma 1: 0.5*x^2 where |x| < 1, else |x| - 0.5."""
    absolute = paddle.abs(diff)
    return paddle.where(absolute < 1.0, 0.5 * diff * diff, absolute - 0.5)


def _positive_loc_loss(locs, target_boxes, image, prior, priors, variances):
    """Smooth L1 of the positives' predicted offsets against their encoded faces, summed.

    fluid weighs every other prior by 0; leaving them out gives the same value and gradient at a fraction of
    the cost. ``variances`` is a 4-sequence or a [P, 4] tensor.
    """
    prior_idx = paddle.to_tensor(prior)
    if isinstance(variances, paddle.Tensor) and variances.ndim == 2:
        variances = paddle.gather(variances, prior_idx)
    targets = encode_center_size(paddle.to_tensor(target_boxes), paddle.gather(priors, prior_idx), variances)
    predicted = paddle.gather_nd(locs, paddle.to_tensor(np.stack([image, prior], axis=1)))
    return _smooth_l1(predicted - targets).sum()


@register
class SSDLoss(object):
    """fluid.layers.ssd_loss with match_type per_prediction, mining_type max_negative, normalize=True.

    Per image: match priors to faces (``match_priors``); positives get their face's label, the rest
    background; among unmatched priors whose best IoU is below neg_overlap, the
    min(int(neg_pos_ratio * positives), candidates) with the largest confidence loss become negatives.
    Loss = conf_loss_weight * softmax cross-entropy over positives and negatives + loc_loss_weight *
    smooth L1 of positives' center-size encoded offsets, summed over the batch and divided by the number of
    positives in the batch (fluid's normaliser, then BlazeFace's reduce_sum).

    Deviations from fluid:
    - a batch with no positive at all (only faceless images) is divided by 1 instead of 0, so the loss is a
      finite 0 instead of NaN;
    - mining candidates need max IoU < neg_overlap. fluid compared the matched distance instead, which is 0
      for every unmatched prior, so it ignored neg_overlap; both agree when neg_overlap >= overlap_threshold,
      as in BlazeFace (0.35 and 0.35).
    """

    def __init__(self, overlap_threshold=0.35, neg_overlap=0.35, neg_pos_ratio=3.0, loc_loss_weight=1.0,
                 conf_loss_weight=1.0):
        self.overlap_threshold = overlap_threshold
        self.neg_overlap = neg_overlap
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_loss_weight = loc_loss_weight
        self.conf_loss_weight = conf_loss_weight
        self._prior_index = None

    def _index(self, priors):
        """The PriorIndex of ``priors``, rebuilt only when they change (priors are fixed for an input size)."""
        if self._prior_index is None or not np.array_equal(self._prior_index.priors, priors):
            self._prior_index = PriorIndex(priors)
        return self._prior_index

    def __call__(self, locs, confs, gt_bbox, gt_class, gt_num, priors, variances):
        matches, max_ious = self._match_batch(gt_bbox.numpy(), gt_num.numpy(), self._index(priors.numpy()))
        positive = matches >= 0
        image, prior = np.nonzero(positive)
        gt = matches[image, prior]
        labels = np.zeros(matches.shape, dtype=np.int64)
        labels[image, prior] = gt_class.numpy()[image, gt]
        conf_loss = F.cross_entropy(confs, paddle.to_tensor(labels).unsqueeze(-1), reduction='none',
                                    axis=-1).squeeze(-1)
        negative = self._mine_negatives(conf_loss.numpy(), positive, max_ious)
        conf_sum = (conf_loss * paddle.to_tensor((positive | negative).astype(np.float32))).sum()
        loc_sum = _positive_loc_loss(locs, gt_bbox.numpy()[image, gt], image, prior, priors, variances)
        total = self.conf_loss_weight * conf_sum + self.loc_loss_weight * loc_sum
        return total / float(max(len(image), 1))

    def _match_batch(self, gt_bbox, gt_num, prior_index):
        """[N, P] matched gt index (-1 none) and [N, P] best IoU with any face (0 for faceless images)."""
        matches = np.full((gt_bbox.shape[0], len(prior_index.priors)), -1, dtype=np.int64)
        max_ious = np.zeros(matches.shape, dtype=np.float32)
        for n, count in enumerate(gt_num.reshape(-1)):
            if count > 0:
                matches[n], max_ious[n] = match_priors(gt_bbox[n, :count], prior_index, self.overlap_threshold)
        return matches, max_ious

    def _mine_negatives(self, conf_loss, positive, max_ious):
        """[N, P] bool: the hard negatives of each image (max_negative mining)."""
        negative = np.zeros_like(positive)
        for n in range(positive.shape[0]):
            candidates = np.nonzero(~positive[n] & (max_ious[n] < self.neg_overlap))[0]
            count = min(int(positive[n].sum() * self.neg_pos_ratio), candidates.size)
            if count > 0:
                hardest = np.argpartition(-conf_loss[n, candidates], count - 1)[:count]
                negative[n, candidates[hardest]] = True
        return negative
