"""Shared pieces of the benchmarks: data sets, configs, the published structure, a bare training loop, timing."""
import contextlib
import io
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

import numpy as np  # noqa: E402

PUBLISHED_TOKENS = [2, 1, 3, 8, 2, 1, 2, 1, 1]   # BlazeFace-NAS as published (5x5 kernels)
WORK = os.environ.get('BENCH_WORK', '/tmp/blazeface_bench')
SIZE = 640
BATCH = 8
# PaddleDetection's own BlazeFace trainer, Paddle 3.3.1 CPU, 2 cores, published NAS structure (depthwise 5x5), 640,
# batch 8: about 2.7 images/s on this kind of machine (figure given with the issue; not re-measured here).
ANCHOR_IMAGES_PER_S = 2.7


def dataset(name, train, val, size):
    """A synthetic WIDER-format set under WORK, made once (same arguments give the same files)."""
    from ppdet.utils.synthetic import make_dataset
    path = os.path.join(WORK, '{}_{}x{}_{}'.format(name, train, val, size))
    stamp = os.path.join(path, '.complete')
    if not os.path.isfile(stamp):
        with contextlib.redirect_stdout(io.StringIO()):
            make_dataset(path, train=train, val=val, size=size, seed=0, workers=2)
        open(stamp, 'w').close()
    return path


def wider640():
    return dataset('wider', 200, 20, SIZE)


def blazeface_cfg(data_dir, max_iters=5000):
    """blazeface.yml (640, batch 8, its augmentations, RMSProp) on ``data_dir``, CPU, quiet logging."""
    import ppdet.data  # noqa: F401
    import ppdet.modeling.architectures.blazeface  # noqa: F401
    import ppdet.modeling.backbones.blazenet  # noqa: F401
    import ppdet.optimizer  # noqa: F401
    from ppdet.core.workspace import load_config, merge_config
    return merge_config({'TrainReader.dataset.dataset_dir': data_dir, 'EvalReader.dataset.dataset_dir': data_dir,
                         'use_gpu': False, 'max_iters': max_iters, 'log_iter': 10 ** 9},
                        load_config(os.path.join(REPO, 'blazeface.yml')))


def published_kwargs(depthwise=True):
    """BlazeNet arguments of the published structure; ``depthwise`` = the corrected form (dense_double_5x5=False)."""
    from search_space import BlazeFaceNasSpace
    return dict(BlazeFaceNasSpace().blazenet_args(PUBLISHED_TOKENS), dense_double_5x5=not depthwise)


def build_model(cfg, depthwise=True, seed=0):
    import paddle
    from ppdet.core.workspace import create
    paddle.seed(seed)
    backbone = create('BlazeNet', cfg, **published_kwargs(depthwise))
    model = create('BlazeFace', cfg, backbone=backbone)
    model.train()
    return model


def load_batches(cfg, count, workers=2, seed=0):
    from ppdet.data.reader import create_reader
    return list(create_reader(cfg['TrainReader'], 'train', max_iters=count, seed=seed, worker_num=workers))


def random_batches(count, size=SIZE, batch=BATCH, seed=0):
    """Batches shaped like the reader's, without the reader (for memory baselines)."""
    rng = np.random.default_rng(seed)
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.56, 0.57], [0.6, 0.2, 0.9, 0.6]], np.float32)
    return [{'image': rng.standard_normal((batch, 3, size, size)).astype(np.float32),
             'gt_bbox': np.tile(boxes, (batch, 1, 1)), 'gt_class': np.ones((batch, 3), np.int32),
             'gt_num': np.full(batch, 3, np.int32)} for _ in range(count)]


class BareLoop:
    """The same network, loss and optimizer with nothing around them: to_tensor, loss, backward, step."""

    def __init__(self, cfg, model):
        from ppdet.core.workspace import create
        self.model = model
        self.lr = create('LearningRate', cfg)()
        self.optimizer = create('OptimizerBuilder', cfg)(self.lr, model.parameters())

    def step(self, batch):
        import paddle
        tensors = {k: paddle.to_tensor(batch[k]) for k in ('image', 'gt_bbox', 'gt_class', 'gt_num')}
        loss = self.model.loss(**tensors)
        loss.backward()
        self.optimizer.step()
        self.optimizer.clear_grad()
        self.lr.step()
        return float(loss)

    def timed_step(self, batch):
        """One step split into its parts (CPU kernels run synchronously, so wall time per part is exact)."""
        import paddle
        from ppdet.modeling.ops import PRIOR_VARIANCES
        t = [time.perf_counter()]
        x = {k: paddle.to_tensor(batch[k]) for k in ('image', 'gt_bbox', 'gt_class', 'gt_num')}
        t.append(time.perf_counter())
        locs, confs, priors = self.model(x['image'])
        t.append(time.perf_counter())
        loss = self.model.ssd_loss(locs, confs, x['gt_bbox'], x['gt_class'], x['gt_num'], priors, PRIOR_VARIANCES)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        self.optimizer.step()
        self.optimizer.clear_grad()
        self.lr.step()
        value = float(loss)
        t.append(time.perf_counter())
        parts = ('to_tensor', 'forward', 'loss', 'backward', 'optimizer')
        return value, dict(zip(parts, np.diff(t)))

    def run(self, batches, iters):
        """Per-iteration wall times of ``iters`` steps cycling over ``batches``, and each step's parts."""
        times, parts = [], []
        for i in range(iters):
            start, cpu = time.perf_counter(), time.process_time()
            _, split = self.timed_step(batches[i % len(batches)])
            split['cpu'] = time.process_time() - cpu
            times.append(time.perf_counter() - start)
            parts.append(split)
        return times, parts


def timed_trainer_run(trainer, model):
    """CandidateTrainer.train(model) with a timestamp at the start of every iteration.

    Returns the intervals between consecutive iteration starts, each one whole loop iteration of the trainer
    (reader, step, LR, stats, logging; the time after the last start, reader shutdown, is not one), and the
    process CPU time of each (this process only: reader workers are other processes).
    """
    stamps, cpu = [], []
    step = trainer._step

    def stamped(*args, **kwargs):
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
        return step(*args, **kwargs)

    trainer._step = stamped
    try:
        ok = trainer.train(model)
    finally:
        del trainer._step
    if not ok:
        raise RuntimeError('training diverged during the benchmark')
    return list(np.diff(stamps)), [{'cpu': c} for c in np.diff(cpu)]


def rate(intervals, batch=BATCH, skip=1):
    """Images per second over the intervals after the first ``skip`` (warm-up)."""
    kept = list(intervals)[skip:]
    return batch * len(kept) / sum(kept) if kept else float('nan')


def loadavg():
    with open('/proc/loadavg') as f:
        return [float(v) for v in f.read().split()[:3]]


def vm_hwm_mb(pid='self'):
    """Peak resident set size of a process (VmHWM), MB."""
    with open('/proc/{}/status'.format(pid)) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


_OP_LINE = re.compile(r'^(\S.*?)\s+(\d+)\s+([\d.]+) / [\d.]+ / [\d.]+ / [\d.]+ / [\d.]+\s')
OP_GROUPS = (('depthwise conv (fwd+bwd)', ('depthwise_conv2d', 'DepthwiseConv2d')),
             ('other conv (fwd+bwd)', ('conv2d', 'Conv2d')),
             ('batch norm (fwd+bwd)', ('batch_norm', 'BatchNorm')),
             ('relu (fwd+bwd)', ('relu', 'Relu')),
             ('max pool (fwd+bwd)', ('pool2d', 'Pool2d')),
             ('add (fwd+bwd)', ('add dygraph', 'AddGrad')),
             ('optimizer (rmsprop, add_n)', ('rmsprop', 'add_n')))


def op_profile(loop, batches, steps=2):
    """Share of operator time by kind, from Paddle's profiler (operator summary, all threads merged)."""
    import paddle.profiler as profiler
    loop.step(batches[0])
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU])
    prof.start()
    for i in range(steps):
        loop.step(batches[i % len(batches)])
        prof.step()
    prof.stop()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit='ms')
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if 'Operator Summary' in line), None)
    if start is None:
        return {}
    totals = {}
    for line in lines[start:]:
        if 'Memory' in line and 'Summary' in line:
            break
        match = _OP_LINE.match(line)
        if match:
            totals.setdefault(match.group(1), float(match.group(3)))
    grand = sum(totals.values()) or 1.0
    shares = {}
    for name, total in totals.items():
        group = next((g for g, keys in OP_GROUPS if any(k in name for k in keys)), 'other')
        shares[group] = shares.get(group, 0.0) + total
    return {g: round(100.0 * v / grand, 1) for g, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def write_section(path, name, text):
    """Replace the part of the markdown file ``path`` between ``<!-- NAME -->`` and ``<!-- /NAME -->`` by ``text``
    (appended if it has none): several benchmarks write one document, each its own part."""
    begin, end = '<!-- {} -->'.format(name), '<!-- /{} -->'.format(name)
    block = '{}\n{}\n{}\n'.format(begin, text.strip('\n'), end)
    old = open(path).read() if os.path.isfile(path) else ''
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):].lstrip('\n')
    else:
        new = old + ('\n' if old and not old.endswith('\n\n') else '') + block
    with open(path, 'w') as f:
        f.write(new)
