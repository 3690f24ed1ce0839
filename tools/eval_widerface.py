#!/usr/bin/env python
"""WIDER FACE's Easy / Medium / Hard AP of a detector's predictions, as the official evaluation computes them.

    python tools/eval_widerface.py --pred output/pred --gt dataset/wider_face/WIDER_val/ground_truth

--pred: one ``<event>/<image>.txt`` per image (image path, box count, then ``x y w h score`` lines), what
PaddleDetection 2.6's ``tools/eval.py`` writes to ``output/pred`` for a WIDER FACE config. --gt: the folder of
``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` (the official eval_tools' ground_truth, which
tools/download_widerface.py and tools/make_synthetic_widerface.py put in ``WIDER_val/ground_truth``).

Why here: PaddleDetection 2.6 only writes the predictions and sends users to MATLAB or to a separate repository to
score them; develop computes the same three APs itself during ``tools/eval.py``. The protocol, as the eval_tools
define it: scores normalised to [0, 1] over all images; per image, each prediction (by falling score) is matched to
the ground-truth face it overlaps most, at IoU >= 0.5 (areas counted with +1 pixels); a face the subset does not
count neither adds recall nor makes its match a false positive; precision and recall at 1000 score thresholds,
summed over images; AP is the area under the precision envelope.
"""
import argparse
import os
import sys

import numpy as np
import scipy.io

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.core.cli import run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402

SUBSETS = ('easy', 'medium', 'hard')
THRESHOLDS = 1000
IOU = 0.5


def _mat(path, keys):
    try:
        data = scipy.io.loadmat(path)
    except (OSError, ValueError) as e:
        raise ConfigError('--gt: cannot read {} ({}); pass the folder of the official ground-truth .mat files'
                          .format(path, e)) from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise ConfigError('--gt: {} has no {}; it is not an official WIDER FACE ground-truth file'.format(
            path, ', '.join(missing)))
    return data


def load_ground_truth(gt_dir):
    """{(event, image name): (boxes (n, 4) x y w h, {subset: 1-based indices of the faces it counts})}."""
    face = _mat(os.path.join(gt_dir, 'wider_face_val.mat'), ('event_list', 'file_list', 'face_bbx_list'))
    subsets = {s: _mat(os.path.join(gt_dir, 'wider_{}_val.mat'.format(s)), ('gt_list',))['gt_list']
               for s in SUBSETS}
    truth = {}
    for e, event in enumerate(face['event_list'][:, 0]):
        names, boxes = face['file_list'][e, 0][:, 0], face['face_bbx_list'][e, 0][:, 0]
        for i, name in enumerate(names):
            keep = {s: np.asarray(subsets[s][e, 0][i, 0], np.int64).reshape(-1) for s in SUBSETS}
            truth[str(event[0]), str(name[0])] = (np.asarray(boxes[i], np.float64).reshape(-1, 4), keep)
    return truth


def read_predictions(pred_dir, truth):
    """{key of ``truth``: (n, 5) x y w h score}; an image without a file has no predictions."""
    if not os.path.isdir(pred_dir):
        raise ConfigError('--pred {}: no such directory; run the evaluation that writes it first'.format(pred_dir))
    preds = {}
    for event, name in truth:
        path = os.path.join(pred_dir, event, name + '.txt')
        if os.path.isfile(path):
            with open(path) as f:
                lines = f.read().splitlines()[2:]
            try:
                preds[event, name] = np.array([[float(v) for v in line.split()[:5]] for line in lines if line.strip()],
                                              np.float64).reshape(-1, 5)
            except ValueError:
                raise ConfigError('{}: a line is not "x y w h score"; it is not a WIDER FACE prediction file'
                                  .format(path)) from None
    if not preds:
        raise ConfigError('--pred {}: no prediction file for any image of the ground truth (expected '
                          '<event>/<image>.txt)'.format(pred_dir))
    return preds


def _corners(boxes):
    out = boxes[:, :4].copy()
    out[:, 2:] += out[:, :2]
    return out


def _overlaps(a, b):
    """IoU of x1 y1 x2 y2 boxes, areas and intersections counted in whole pixels (+1), as the eval_tools do."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-8)


def _image_curve(pred, gt, counted):
    """(THRESHOLDS, 2): predictions kept and counted faces found, at each score threshold, for one image."""
    pred = pred[np.argsort(-pred[:, 4], kind='stable')]
    overlaps = _overlaps(_corners(pred), _corners(gt))
    found = np.zeros(len(gt))  # 1: a counted face found; -1: a face the subset ignores, matched
    proposal = np.ones(len(pred))  # 0: matched to an ignored face, so neither true nor false
    recall = np.zeros(len(pred))
    for h in range(len(pred)):
        best = int(overlaps[h].argmax())
        if overlaps[h, best] >= IOU:
            if not counted[best]:
                found[best], proposal[h] = -1, 0
            elif found[best] == 0:
                found[best] = 1
        recall[h] = np.sum(found == 1)
    curve = np.zeros((THRESHOLDS, 2))
    for t in range(THRESHOLDS):
        above = np.nonzero(pred[:, 4] >= 1 - (t + 1) / THRESHOLDS)[0]
        if len(above):
            curve[t] = np.sum(proposal[:above[-1] + 1] == 1), recall[above[-1]]
    return curve


def _ap(recall, precision):
    recall = np.concatenate(([0.], recall, [1.]))
    precision = np.concatenate(([0.], precision, [0.]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def evaluate(preds, truth):
    """{subset: AP} over the images of ``truth``."""
    scores = np.concatenate([p[:, 4] for p in preds.values()] or [np.zeros(0)])
    low, span = (scores.min(), max(np.ptp(scores), 1e-12)) if len(scores) else (0., 1.)
    aps = {}
    for subset in SUBSETS:
        curve, faces = np.zeros((THRESHOLDS, 2)), 0
        for key, (gt, keep) in truth.items():
            counted = np.zeros(len(gt), bool)
            counted[keep[subset] - 1] = True
            faces += int(counted.sum())
            pred = preds.get(key)
            if pred is None or not len(pred) or not len(gt):
                continue
            pred = pred.copy()
            pred[:, 4] = (pred[:, 4] - low) / span
            curve += _image_curve(pred, gt, counted)
        with np.errstate(invalid='ignore', divide='ignore'):
            precision = np.nan_to_num(curve[:, 1] / curve[:, 0])
        aps[subset] = _ap(curve[:, 1] / max(faces, 1), precision)
    return aps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--pred', default='output/pred', help='predictions folder (default: %(default)s)')
    parser.add_argument('--gt', required=True, help='folder of wider_face_val.mat and wider_{easy,medium,hard}_val.mat')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    truth = load_ground_truth(args.gt)
    aps = evaluate(read_predictions(args.pred, truth), truth)
    print('Easy AP {easy:.4f}  Medium AP {medium:.4f}  Hard AP {hard:.4f}  ({0} images)'.format(len(truth), **aps))


if __name__ == '__main__':
    run_cli(main)
