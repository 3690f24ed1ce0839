"""Run PaddleDetection 2.x's own BlazeNet on weights and an input given as numpy files; print one JSON line.

    cd <somewhere outside the repo> && PYTHONPATH=<repo>/.venv/paddledet <repo>/.venv/bin/python \\
        <repo>/tests/helpers/paddledet_blazenet.py FOLDER NAME [NAME ...]

``ppdet`` here is PaddleDetection's (the published ``paddledet`` 2.6.0 wheel in ``.venv/paddledet``), never this
repo's package of the same name: the script asserts where it was imported from.

Per case NAME, FOLDER holds ``NAME.json``, the arguments of PaddleDetection's ``BlazeNet`` as a 2.x config gives
them (blaze_filters, double_blaze_filters, use_5x5kernel, act), and ``NAME.npz``: ``image`` and ``w0000``,
``w0001``, ...: one array per state_dict entry of the other network, in its order. The script builds
``ppdet.modeling.backbones.blazenet.BlazeNet`` from the arguments, fills its state_dict entries with the arrays in
order (each shape must be the entry's: both networks register the same convs and batch norms in the same order, so
a mismatch means the networks differ), runs the image through it in eval mode (``backbone({'image': x})``, as
``BlazeFace._forward`` calls it) and saves the maps it returns in ``NAME.out.npz`` (``f0``, ``f1``, ...).

Output, the only line on stdout: ``{"ppdet": path, "paddle": version, "cases": {NAME: {"ok": true, "names":
[state_dict names filled], "shapes": [[N, C, H, W] per map]} or {"ok": false, "error": ...}}}``.
"""
import contextlib
import json
import os
import sys
import traceback

PADDLEDET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             '.venv', 'paddledet')


def run_case(folder, name):
    import numpy as np
    import paddle
    from ppdet.modeling.backbones.blazenet import BlazeNet

    with open(os.path.join(folder, name + '.json')) as f:
        kwargs = json.load(f)
    data = np.load(os.path.join(folder, name + '.npz'))
    weights = [data[k] for k in sorted(k for k in data.files if k.startswith('w'))]
    net = BlazeNet(**kwargs)
    state = net.state_dict()
    if len(state) != len(weights):
        raise ValueError('PaddleDetection BlazeNet has {} state entries, the weights given {}'.format(
            len(state), len(weights)))
    filled = {}
    for (key, tensor), value in zip(state.items(), weights):
        if list(tensor.shape) != list(value.shape):
            raise ValueError('{}: PaddleDetection has shape {}, the weights given {}'.format(
                key, list(tensor.shape), list(value.shape)))
        filled[key] = value
    net.set_state_dict(filled)
    net.eval()
    with paddle.no_grad():
        maps = net({'image': paddle.to_tensor(data['image'])})
    np.savez(os.path.join(folder, name + '.out.npz'), **{'f{}'.format(i): m.numpy() for i, m in enumerate(maps)})
    return {'ok': True, 'names': list(state), 'shapes': [list(map(int, m.shape)) for m in maps]}


def main(argv):
    folder, names = os.path.abspath(argv[0]), argv[1:]
    assert names, 'usage: paddledet_blazenet.py FOLDER NAME [NAME ...]'
    with contextlib.redirect_stdout(sys.stderr):  # ppdet prints its warnings about optional packages
        import paddle
        import ppdet

        where = os.path.realpath(os.path.dirname(ppdet.__file__))
        assert where.startswith(os.path.realpath(PADDLEDET_DIR) + os.sep), \
            'imported ppdet from {}, not PaddleDetection under {}'.format(where, PADDLEDET_DIR)
        paddle.set_device('cpu')
        cases = {}
        for name in names:
            try:
                cases[name] = run_case(folder, name)
            except Exception as e:
                cases[name] = {'ok': False, 'error': '{}: {}'.format(type(e).__name__, e),
                               'traceback': traceback.format_exc(limit=-3)}
    print(json.dumps({'ppdet': where, 'paddle': paddle.__version__, 'cases': cases}))


if __name__ == '__main__':
    main(sys.argv[1:])
