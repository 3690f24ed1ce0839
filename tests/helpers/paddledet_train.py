"""Train, evaluate and export an emitted ``best_paddledet.yml`` with PaddleDetection 2.x's own engine; print one
JSON line.

    cd <workdir> && PYTHONPATH=<repo>/.venv/paddledet <repo>/.venv/bin/python \\
        <repo>/tests/helpers/paddledet_train.py CONFIG.yml IMAGE KEY=VALUE [KEY=VALUE ...]

``workdir`` is laid out as a PaddleDetection checkout would be (``configs/face_detection/``, ``dataset/``); outputs
go where PaddleDetection puts them, relative to it. The KEY=VALUE pairs are what a user passes with ``-o``.
Each stage does what PaddleDetection 2.6's tool of the same name does (the wheel ships ``ppdet`` but not ``tools/``):
``load_config`` + ``merge_config(-o)``, then ``ppdet.engine.Trainer``:

- train (tools/train.py): ``Trainer(cfg, 'train').train()``; every iteration's loss is recorded by a callback;
- eval (tools/eval.py): ``Trainer(cfg, 'eval')``, ``load_weights(cfg.weights)``, ``evaluate()``: for ``metric:
  WiderFace`` 2.6 writes ``output/pred/<event>/<image>.txt`` and exits (``sys.exit`` in its WiferFaceEval callback);
- export (tools/export_model.py): ``Trainer(cfg, 'test')``, ``load_weights(cfg.weights)``, ``export()`` into
  ``output_inference/<config name>/``. Just before, the same model predicts IMAGE fed as 2.6's tools/infer.py feeds
  it (its TestReader); ``reference.npz`` keeps that input and the boxes, for the caller to run the exported model
  on with Paddle Inference and compare.

2.6.0 trains, evaluates and exports on Paddle 3 with the fixes the Makefile applies (paddledet-2.6.0-paddle3.patch).
The run is seeded as 2.6's ``tools/train.py --enable_ce`` seeds it (``ppdet.engine.env.set_random_seed(0)``: paddle,
numpy and Python's generators; the reader runs in this process, worker_num=0). Unseeded, 2.6 draws the initial
weights, the sampler's shuffle and the augmentations afresh each run, and a test of "the loss goes down" over 16
iterations must not depend on the draw.

Output, the only line on stdout: ``{"ppdet": path, "losses": [...], "checkpoint": path, "pred_files": n,
"exported": folder, "reference": path}``.
"""
import contextlib
import glob
import json
import os
import sys

import yaml

PADDLEDET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             '.venv', 'paddledet')
REFERENCE = 'reference.npz'  # in the workdir


def load(path, options):
    """``tools/*.py``'s config: the file, then the ``-o`` options (parsed as YAML values, as 2.6's cli does)."""
    from ppdet.core.workspace import load_config, merge_config

    cfg = load_config(path)
    overrides = {}
    for option in options:
        key, value = option.split('=', 1)
        node = overrides
        *parents, last = key.split('.')
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    merge_config(overrides)
    return cfg


def train(cfg):
    from ppdet.engine import Trainer
    from ppdet.engine.callbacks import Callback

    losses = []

    class LossRecorder(Callback):
        def on_step_end(self, status):
            if status.get('mode') == 'train':
                losses.append(float(status['training_staus'].meters['loss'].value))

    trainer = Trainer(cfg, mode='train')
    trainer.register_callbacks([LossRecorder(trainer)])
    trainer.train()
    return losses


def evaluate(cfg):
    from ppdet.engine import Trainer

    trainer = Trainer(cfg, mode='eval')
    trainer.load_weights(cfg.weights)
    try:
        trainer.evaluate()
    except SystemExit as e:  # 2.6's WiferFaceEval ends the process once the predictions are written
        assert not e.code, 'evaluation exited with {}'.format(e.code)
    return len(glob.glob(os.path.join('output', 'pred', '*', '*.txt')))


def predict_reference(trainer, image, path):
    """The trained model's boxes for ``image``, fed as PaddleDetection's infer feeds it, saved with that input."""
    import numpy as np
    from ppdet.core.workspace import create

    trainer.dataset.set_images([image])
    batch = next(iter(create('TestReader')(trainer.dataset, 0)))
    trainer.model.eval()
    out = trainer.model(batch)
    arrays = {key: batch[key].numpy() for key in ('image', 'im_shape', 'scale_factor')}
    arrays.update({key: out[key].numpy() for key in ('bbox', 'bbox_num')})
    np.savez(path, **arrays)


def export(cfg, image):
    """tools/export_model.py's run(), after the reference prediction (export turns the model into a static one)."""
    from ppdet.engine import Trainer

    trainer = Trainer(cfg, mode='test')
    trainer.load_weights(cfg.weights)
    predict_reference(trainer, image, REFERENCE)
    trainer.export('output_inference')  # tools/export_model.py's default --output_dir
    return os.path.join('output_inference', os.path.splitext(os.path.basename(cfg.filename))[0])


def main(argv):
    path, image, options = os.path.abspath(argv[0]), os.path.abspath(argv[1]), argv[2:]
    with contextlib.redirect_stdout(sys.stderr):  # ppdet's own prints and logs stay off the JSON line
        import paddle
        import ppdet

        where = os.path.realpath(os.path.dirname(ppdet.__file__))
        assert where.startswith(os.path.realpath(PADDLEDET_DIR) + os.sep), where
        paddle.set_device('cpu')
        from ppdet.engine.env import set_random_seed
        set_random_seed(0)  # tools/train.py --enable_ce
        cfg = load(path, options)
        losses = train(cfg)
        checkpoint = cfg.weights + '.pdparams'
        assert os.path.isfile(checkpoint), 'train wrote no {} (weights: {})'.format(checkpoint, cfg.weights)
        pred_files = evaluate(load(path, options))
        exported = export(load(path, options), image)
    print(json.dumps({'ppdet': where, 'losses': losses, 'checkpoint': checkpoint, 'pred_files': pred_files,
                      'exported': exported, 'reference': REFERENCE}))


if __name__ == '__main__':
    main(sys.argv[1:])
