"""Build and run emitted ``best_paddledet.yml`` files with PaddleDetection 2.x's own code; print one JSON line.

    cd <somewhere outside the repo> && PYTHONPATH=<repo>/.venv/paddledet <repo>/.venv/bin/python \\
        <repo>/tests/helpers/paddledet_build.py HEIGHT WIDTH CONFIG.yml [CONFIG.yml ...]

``ppdet`` here is PaddleDetection's (the published ``paddledet`` wheel, installed by ``make test`` into
``.venv/paddledet``), never this repo's package of the same name: the script asserts where it was imported from.

For each file, in a forked child so that PaddleDetection's global config starts clean (as one ``tools/train.py``
run would), it calls ``ppdet.core.workspace.load_config(file)`` and then ``create(cfg.architecture)``, the
call ``tools/train.py`` makes through its Trainer. So PaddleDetection itself resolves ``_BASE_``, merges the
override over it and interprets every key: ``BlazeNet`` (blaze_filters, double_blaze_filters, use_5x5kernel,
act), ``BlazeNeck`` (neck_type, in_channel), ``FaceHead`` (in_channels, which ``FaceHead.from_config`` replaces
by the neck's ``out_shape``). It then runs the network as ``BlazeFace._forward`` does in eval mode, backbone ->
neck -> head, on one random HEIGHT x WIDTH image (no gradients), and reports what it saw.

Covered: PaddleDetection's YAML loader, ``_BASE_`` merge and registry build of BlazeNet, BlazeNeck, FaceHead
(with its AnchorGeneratorSSD and SSDLoss) and BBoxPostProcess, and a forward pass through the first three.
Not covered: the real ``configs/face_detection/blazeface_1000e.yml`` chain. The wheel ships no ``configs/``, so
the caller puts a stand-in ``blazeface_1000e.yml`` beside each file; what that stand-in holds (the test writes
the model sections of PaddleDetection's ``_base_/blazeface.yml`` and the ``num_classes``/``weights`` keys) is
all this check knows of the base. Also not run: the post-process (decode + NMS), the loss, the data readers,
the optimizer and the trainer.

Output, the only line on stdout (ppdet's own prints go to stderr): ``{"ppdet": path, "paddle": version,
"numpy": version, "input": [H, W], "results": [one per file]}``; a file that fails to load, build or run gives
``{"config": path, "ok": false, "stage": ..., "error": ...}``.
"""
import contextlib
import json
import os
import sys
import traceback

PADDLEDET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             '.venv', 'paddledet')


def conv_kernels(block):
    """Kernel sizes of a PaddleDetection BlazeBlock's depthwise convs, as built."""
    convs = list(block.conv_dw) + list(getattr(block, 'conv_dw2', []))
    return sorted({int(sub._conv._kernel_size[0]) for sub in convs})


def describe(cfg, model, height, width):
    import numpy as np
    import paddle

    backbone, neck, head = model.backbone, model.neck, model.blaze_head
    blocks = list(backbone.blaze_block)
    doubles = [b for b in blocks if b.use_double_block]
    image = paddle.to_tensor(np.random.RandomState(0).uniform(-1, 1, (1, 3, height, width)).astype('float32'))
    model.eval()
    with paddle.no_grad():
        feats = backbone({'image': image})
        neck_feats = neck(feats)
        (box_preds, cls_scores), priors = head(neck_feats, image)

    def maps(tensors):
        out = []
        for t in tensors:
            n, c, h, w = t.shape
            out.append({'channels': int(c), 'shape': [int(h), int(w)],
                        'stride': [height / float(h), width / float(w)]})
        return out

    return {
        'filename': cfg.filename,
        'weights': cfg.get('weights'),
        'num_classes': int(cfg.num_classes),
        'architecture': cfg.architecture,
        'blocks': len(blocks),
        'double_blocks': len(doubles),
        'kernel_sizes': sorted({k for b in blocks for k in conv_kernels(b)}),
        'double_pw_act': sorted({str(b.conv_pw.act) for b in doubles}),
        'single_pw_act': sorted({str(b.conv_pw.act) for b in blocks if not b.use_double_block}),
        'backbone_out_shape': [s.channels for s in backbone.out_shape],
        'neck_type': neck.neck_type,
        'neck_type_repr': repr(neck.neck_type),
        'neck_passes_through': bool(neck.reture_input),
        'neck_out_shape': [s.channels for s in neck.out_shape],
        'head_in_channels': list(head.in_channels),
        'head_num_priors': list(head.num_priors),
        'config_neck_in_channel': list(cfg.BlazeNeck['in_channel']),
        'config_head_in_channels': list(cfg.FaceHead['in_channels']),
        'features': maps(feats),
        'neck_features': maps(neck_feats),
        'head': {'boxes': [list(map(int, t.shape)) for t in box_preds],
                 'scores': [list(map(int, t.shape)) for t in cls_scores],
                 'priors': [list(map(int, t.shape)) for t in priors]},
        'params': int(sum(int(np.prod(p.shape)) for p in model.parameters())),
    }


def run_one(path, height, width):
    """Load, build and run one file in this (fresh) process; returns its JSON-able result."""
    from ppdet.core.workspace import create, load_config

    stage = 'load_config'
    try:
        cfg = load_config(path)
        stage = 'create'
        model = create(cfg.architecture)
        stage = 'forward'
        result = describe(cfg, model, height, width)
    except Exception as e:
        return {'config': path, 'ok': False, 'stage': stage, 'error': '{}: {}'.format(type(e).__name__, e),
                'traceback': traceback.format_exc(limit=-3)}
    result.update({'config': path, 'ok': True})
    return result


def run_forked(path, height, width):
    """``run_one`` in a forked child (a clean PaddleDetection global config per file); the child always exits."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_fd)
            with contextlib.redirect_stdout(sys.stderr):
                data = json.dumps(run_one(path, height, width)).encode()
            with os.fdopen(write_fd, 'wb') as f:
                f.write(data)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, 'rb') as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return {'config': path, 'ok': False, 'stage': 'child', 'error': 'child exited with status {}'.format(status)}
    return json.loads(data.decode())


def main(argv):
    height, width, paths = int(argv[0]), int(argv[1]), [os.path.abspath(p) for p in argv[2:]]
    assert paths, 'usage: paddledet_build.py HEIGHT WIDTH CONFIG.yml [CONFIG.yml ...]'

    with contextlib.redirect_stdout(sys.stderr):  # ppdet prints its warnings about optional packages
        import numpy
        import paddle
        import ppdet  # registers every module, as PaddleDetection's tools do

    where = os.path.realpath(os.path.dirname(ppdet.__file__))
    assert where.startswith(os.path.realpath(PADDLEDET_DIR) + os.sep), \
        'imported ppdet from {}, not PaddleDetection under {}'.format(where, PADDLEDET_DIR)
    assert int(numpy.__version__.split('.')[0]) < 2, 'numpy {} (must stay < 2)'.format(numpy.__version__)
    paddle.set_device('cpu')
    results = [run_forked(p, height, width) for p in paths]
    print(json.dumps({'ppdet': where, 'paddle': paddle.__version__, 'numpy': numpy.__version__,
                      'input': [height, width], 'results': results}))


if __name__ == '__main__':
    main(sys.argv[1:])
