"""SSD loss: fluid's matching, mining and normalisation on tiny hand-built cases."""
import numpy as np
import paddle

from ppdet.core.workspace import create
from ppdet.modeling.losses import PriorIndex, SSDLoss, box_iou, match_priors
from ppdet.modeling.ops import PRIOR_VARIANCES, generate_priors

# six disjoint priors in a row
ROW = np.array([[0.1 * i + 0.01, 0.1, 0.1 * i + 0.09, 0.3] for i in range(6)], dtype=np.float32)
GRID = generate_priors([(4, 4), (2, 2)], (64, 64), [[16., 24.], [32., 48.]], [16., 32.])


def _batch(boxes_per_image, max_faces=3):
    """(gt_bbox, gt_class, gt_num) tensors, zero padded, every face labelled 1."""
    gt_bbox = np.zeros((len(boxes_per_image), max_faces, 4), dtype=np.float32)
    for n, boxes in enumerate(boxes_per_image):
        gt_bbox[n, :len(boxes)] = np.reshape(boxes, (-1, 4))
    num = [len(b) for b in boxes_per_image]
    gt_class = (np.arange(max_faces)[None] < np.array(num)[:, None]).astype(np.int32)
    return paddle.to_tensor(gt_bbox), paddle.to_tensor(gt_class), paddle.to_tensor(np.array(num, dtype=np.int32))


def _outputs(num_images, num_priors, seed=0):
    rng = np.random.RandomState(seed)
    locs = paddle.to_tensor(rng.randn(num_images, num_priors, 4).astype(np.float32) * 0.5, stop_gradient=False)
    confs = paddle.to_tensor(rng.randn(num_images, num_priors, 2).astype(np.float32), stop_gradient=False)
    return locs, confs


FACES = [[[0.1, 0.1, 0.45, 0.45]], [[0.5, 0.5, 0.9, 0.8], [0.05, 0.6, 0.3, 0.95]]]


def test_bipartite_step_matches_best_prior_below_threshold():
    # face A overlaps prior 0 by IoU 0.36 and prior 1 by 0.27; face B overlaps prior 0 by 0.75
    gt = np.array([[0.04, 0.1, 0.15, 0.3], [0.01, 0.1, 0.07, 0.3]], dtype=np.float32)
    iou = box_iou(gt[:, None], ROW[None])
    np.testing.assert_allclose(iou[:, :2], [[0.357, 0.267], [0.75, 0.0]], atol=1e-3)
    match, best = match_priors(gt, PriorIndex(ROW), overlap_threshold=0.35)
    assert match[0] == 1  # B takes prior 0, the largest IoU overall
    assert match[1] == 0  # A still gets its best remaining prior, below the threshold
    assert (match[2:] == -1).all()
    np.testing.assert_allclose(best, iou.max(axis=0), rtol=1e-6)


def test_per_prediction_step_adds_priors_above_threshold():
    priors = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.2, 0.1, 0.4, 0.3]], dtype=np.float32)
    gt = np.array([[0.1, 0.1, 0.3, 0.3]], dtype=np.float32)  # IoU 1.0, 0.82, 0.33 with the priors
    match, _ = match_priors(gt, PriorIndex(priors), overlap_threshold=0.35)
    assert match.tolist() == [0, 0, -1]


def test_prior_index_finds_every_overlap():
    rng = np.random.RandomState(3)
    xy = rng.uniform(-0.1, 0.9, (30, 2))
    gt = np.concatenate([xy, xy + rng.uniform(0.01, 0.5, (30, 2))], -1).astype(np.float32)
    for priors in (GRID, generate_priors([(4, 4)], (64, 64), [[16., 40.]], [16.], True, [[2, 1]])):
        g, p, iou = PriorIndex(priors).overlapping_pairs(gt)
        dense = box_iou(gt[:, None], priors[None])
        assert sorted(zip(g.tolist(), p.tolist())) == sorted(zip(*np.nonzero(dense >= 1e-6)))
        np.testing.assert_allclose(iou, dense[g, p], rtol=1e-6)


def test_loss_value_mining_and_gradients_by_hand():
    gt_bbox, gt_class, gt_num = _batch([[ROW[0]]], max_faces=1)  # prior 0 matches exactly, the rest are negatives
    face_logit = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=np.float32)
    confs = paddle.to_tensor(np.stack([np.zeros(6), face_logit], -1)[None].astype(np.float32), stop_gradient=False)
    locs = paddle.to_tensor(np.zeros((1, 6, 4), dtype=np.float32), stop_gradient=False)
    with paddle.no_grad():
        locs[0, 0] = paddle.to_tensor([0.5, -2.0, 0.0, 0.0])
    loss = SSDLoss()(locs, confs, gt_bbox, gt_class, gt_num, paddle.to_tensor(ROW), PRIOR_VARIANCES)
    log_face = face_logit - np.log1p(np.exp(face_logit))  # log softmax of the face class
    log_bg = -np.log1p(np.exp(face_logit))
    hardest = [3, 4, 5]  # 3 negatives per positive, the ones that look most like faces
    expected = -log_face[0] - log_bg[hardest].sum() + (0.5 * 0.5 ** 2 + (2.0 - 0.5))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    loss.backward()
    conf_grad = np.abs(confs.grad.numpy()[0]).sum(-1)
    assert (conf_grad[[0] + hardest] > 0).all() and (conf_grad[[1, 2]] == 0).all()
    loc_grad = np.abs(locs.grad.numpy()[0]).sum(-1)
    assert loc_grad[0] > 0 and (loc_grad[1:] == 0).all()


def test_loss_finite_positive_and_variance_forms_agree():
    gt_bbox, gt_class, gt_num = _batch(FACES)
    locs, confs = _outputs(2, len(GRID))
    priors = paddle.to_tensor(GRID)
    loss = SSDLoss()(locs, confs, gt_bbox, gt_class, gt_num, priors, PRIOR_VARIANCES)
    assert loss.shape == [] and np.isfinite(float(loss)) and float(loss) > 0
    variances = paddle.to_tensor(np.tile(PRIOR_VARIANCES, (len(GRID), 1)).astype(np.float32))
    np.testing.assert_allclose(float(SSDLoss()(locs, confs, gt_bbox, gt_class, gt_num, priors, variances)),
                               float(loss), rtol=1e-6)


def test_faceless_images():
    priors = paddle.to_tensor(GRID)
    locs, confs = _outputs(2, len(GRID))
    loss_fn = create('SSDLoss', {})
    single = loss_fn(locs[:1], confs[:1], *_batch(FACES[:1]), priors, PRIOR_VARIANCES)
    mixed = loss_fn(locs, confs, *_batch([FACES[0], []]), priors, PRIOR_VARIANCES)
    np.testing.assert_allclose(float(mixed), float(single), rtol=1e-6)  # a faceless image adds nothing
    empty = loss_fn(locs, confs, *_batch([[], []]), priors, PRIOR_VARIANCES)
    assert float(empty) == 0.0
    empty.backward()
    assert np.isfinite(confs.grad.numpy()).all() and np.isfinite(locs.grad.numpy()).all()


def test_loss_decreases_when_overfitting():
    gt_bbox, gt_class, gt_num = _batch(FACES)
    locs, confs = _outputs(2, len(GRID), seed=1)
    locs, confs = paddle.create_parameter(locs.shape, 'float32'), paddle.create_parameter(confs.shape, 'float32')
    optimizer = paddle.optimizer.Adam(learning_rate=0.1, parameters=[locs, confs])
    loss_fn, priors = SSDLoss(), paddle.to_tensor(GRID)
    losses = []
    for _ in range(40):
        loss = loss_fn(locs, confs, gt_bbox, gt_class, gt_num, priors, PRIOR_VARIANCES)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.2 * losses[0]
