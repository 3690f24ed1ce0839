"""Latency tables for the user's own device: which runtime units a search can place, and timing them.

Everything is timed with Paddle Inference (``paddle.inference`` predictors on saved inference programs), the
runtime users deploy with; eager dygraph timing would price Python dispatch, not the deployed network. Table
entries and end-to-end checks use the same predictor settings (device, thread count) so that they compare.

A table prices the whole network as the runtime runs it: every conv, batch norm, ReLU, residual or bias add,
pool and the head's tail (``place_blazeface_units``, from the plan the model is built from; on the CPU path with
Paddle's kernels the deployed graph keeps them as separate ops). Each unit is timed alone (``measure_table``).
Alone, a unit pays a predictor run's fixed cost, which a network pays once, and it runs with warm caches, which
inside a network it does not: sums of raw unit times come out 8 to 18% high on this machine's CPU, net of the fixed
cost 20% low. So a finished table is calibrated once (``calibrate_table``) against whole networks it times itself:
every entry is the unit's time less a run's fixed cost, times the median ratio of those networks' measured time
(less the fixed cost) to their sums, and the fixed cost is stored as ``run_overhead,1``, paid once per network.
"""
import contextlib
import copy
import itertools
import os
import platform
import random
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import paddle
from paddle import inference

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.candidate import CandidateTrainer
from ppdet.slim.nas.config import load_search_config
from ppdet.modeling.layers import PlacedConv
from ppdet.slim.nas.constraint import RUN_OVERHEAD_KEY, LatencyTable, conv_flops, train_input_size, unit_key
from ppdet.slim.nas.files import atomic_write
from ppdet.slim.nas.tokens import sample_candidates

__all__ = ['DEVICES', 'KERNELS', 'load_table_setup', 'candidate_model', 'DeployedBlazeFace', 'table_header',
           'with_kernels', 'space_units', 'missing_keys', 'reference_convs', 'measure_units', 'measure_table',
           'calibrate_table',
           'sample_candidates', 'save_network', 'save_layer', 'predictor_config', 'create_predictor', 'Timer',
           'TableWriter', 'Calibration', 'CALIBRATION_NETWORKS', 'CALIBRATION_SEED']

DEVICES = ('cpu', 'gpu')
KERNELS = (3, 5)
UNIT = 'us'
REFERENCES = 5
CALIBRATION_NETWORKS = 8
CALIBRATION_ROUNDS, CALIBRATION_REPEATS = 20, 5  # as tools/validate_latency_table.py times networks
CALIBRATION_SEED = 20261201  # not a validation seed: the calibration networks are not the ones a check measures


def load_table_setup(config, overrides):
    """The config's search setup without its latency table: these tools build or check tables, so a config
    whose Constraint names a table not built yet must still load. The space keeps both kernel sizes."""
    return load_search_config(config, dict(overrides, **{'Constraint.ctype': 'flops',
                                                         'Constraint.table_file': None}))


def candidate_model(cfg, pricer, tokens):
    """The BlazeFace of a token vector of ``pricer.space``, built as the search builds candidates (the config's
    sections overlaid by the tokens), so it is the network the pricer describes."""
    try:
        kwargs = pricer.blazenet_kwargs(tokens)
    except ValueError as e:
        raise ConfigError('--tokens {}: {}'.format(','.join(map(str, tokens)), e)) from None
    return CandidateTrainer(cfg).build(kwargs)


class DeployedBlazeFace(paddle.nn.Layer):
    """What is saved for Paddle Inference: image -> decoded detections (``predict``), or with
    ``decoded=False`` the raw (locs, confs), the network a latency table prices without the decoder."""

    def __init__(self, model, decoded=True):
        super().__init__()
        self.model, self.decoded = model, decoded

    def forward(self, image):
        if self.decoded:
            return self.model.predict(image)
        locs, confs, _ = self.model(image)
        return locs, confs


def table_header(device, threads, onednn=False):
    """(engine, device, unit), the three fields PaddleSlim reads from line 1: where the numbers hold.

    The thread count and the CPU kernel library are part of the device name, because CPU latencies change with
    both; a table is only valid for predictors run with the same settings. ``_network`` says it prices the whole
    network (entries net of the run's fixed cost), which conv-only tables of earlier versions did not.
    """
    engine = 'paddle_inference_{}'.format(paddle.__version__)
    if device == 'gpu':
        name = paddle.device.cuda.get_device_name() if paddle.device.cuda.device_count() else 'unknown'
        where = 'gpu_{}'.format(name.replace(' ', '_'))
    else:
        where = 'cpu_{}_{}threads{}'.format(platform.machine(), threads, '_onednn' if onednn else '')
    return engine, where + '_network', UNIT


def with_kernels(space, kernels):
    """A copy of ``space`` whose kernel token chooses among ``kernels`` (3 and/or 5), whatever the search uses.

    Latency searches run the 3x3-only space, but a table may also be asked to cover 5x5 convs.
    """
    kernels = sorted(set(kernels))
    if not kernels or any(k not in KERNELS for k in kernels):
        raise ConfigError('--kernels {}: choose from {}'.format(','.join(map(str, kernels)),
                                                               ','.join(map(str, KERNELS))))
    space = copy.copy(space)
    space.use_5x5kernel = [int(k == 5) for k in kernels]
    return space


def space_units(pricer):
    """Every distinct runtime unit (by table key) a candidate of ``pricer.space`` places, as {key: unit}.

    The space has ~11.7M token vectors, but a unit's key depends on at most two channel tokens (a conv's input
    and output widths; an op's one width) and the kernel token (the last one). Running every pair of channel
    tokens over all their values, for each kernel value, with the other tokens fixed, therefore meets every key in
    ~1,800 candidates per kernel.
    """
    ranges = pricer.space.range_table()
    channel_tokens = range(len(ranges) - 1)
    units = {}
    for kernel in range(ranges[-1]):
        for i, j in itertools.combinations(channel_tokens, 2):
            for a, b in itertools.product(range(ranges[i]), range(ranges[j])):
                tokens = [0] * len(ranges)
                tokens[i], tokens[j], tokens[-1] = a, b, kernel
                for unit in pricer.describe_units(tokens):
                    units.setdefault(unit_key(unit), unit)
    return units


@contextlib.contextmanager
def _static_mode():
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()


def unit_signature(unit):
    """What a unit's program fixes (weights, strides, channels); H and W are the feed's, except for the head's
    tail, whose few fixed shapes are its program."""
    if isinstance(unit, PlacedConv):
        spec = unit.spec
        return 'conv', spec.in_channels, spec.out_channels, spec.kernel, spec.stride, spec.groups
    if unit.kind == 'head_tail':
        return unit.kind, unit.shape, unit.last_dims
    return unit.kind, unit.shape[0], unit.pool


def unit_feeds(unit):
    """The input shapes a unit runs on: one tensor, the two operands of an add, or every head output."""
    if isinstance(unit, PlacedConv):
        return [[1, unit.spec.in_channels, unit.in_height, unit.in_width]]
    if unit.kind == 'head_tail':
        return [[1] + list(shape) for shape in unit.shape]
    return [[1] + list(unit.shape)] * (2 if unit.kind == 'add' else 1)


def measure_units(timer, units, workdir, extra_models=()):
    """Microseconds of each unit alone, as its key describes it (a conv: input 1 x C_in x H x W, no bias, no
    batch norm, no activation), then of ``extra_models`` ((prefix, feeds)): all timed together, taking turns.

    One program is saved per signature with H and W left free, so the sizes a signature runs at share one
    predictor: creating predictors is most of a table's build time.
    """
    return timer.measure(_unit_models(units, workdir) + list(extra_models))


def _unit_models(units, workdir):
    """(program prefix, feeds) of each unit, for ``Timer.measure``; one program per signature."""
    programs, models = {}, []
    batch_dir = tempfile.mkdtemp(dir=workdir)  # a folder per batch: a program must not meet another's files
    for unit in units:
        signature = unit_signature(unit)
        if signature not in programs:
            programs[signature] = save_unit_program(unit, os.path.join(batch_dir, str(len(programs)), 'unit'))
        models.append((programs[signature], unit_feeds(unit)))
    return models


def missing_keys(units, writer):
    """The keys of ``units`` the table does not hold yet, in the order they are measured.

    A signature's sizes stay together (a batch shares their predictor), but the signatures come in a fixed
    shuffled order: what a batch's timing gets wrong then lands on unrelated units, whose errors cancel in a
    candidate's sum, instead of on every conv of one channel width (sorted order), which would shift every
    candidate with that token value alike and reorder candidates.
    """
    signatures = sorted({unit_signature(unit) for unit in units.values()}, key=repr)
    random.Random(0).shuffle(signatures)
    rank = {signature: i for i, signature in enumerate(signatures)}
    return [key for key in sorted(units, key=lambda k: (rank[unit_signature(units[k])], k))
            if key not in writer.entries]


def reference_convs(units, count=REFERENCES):
    """``count`` conv keys spread over the FLOPs range (quantiles), timed in every batch to follow the machine's
    speed."""
    convs = {key: unit for key, unit in units.items() if isinstance(unit, PlacedConv)}
    ranked = sorted(convs, key=lambda key: (conv_flops(convs[key]), key))
    picks = sorted({round((i + 0.5) * len(ranked) / count - 0.5) for i in range(min(count, len(ranked)))})
    return [ranked[i] for i in picks]


def measure_table(timer, writer, units, batch_size=24):
    """Measure the units missing from the table in batches, appending each batch; yields the count written.

    Other load on the machine (on 2 cores, any other process) slows everything measured meanwhile by a common
    factor, and it changes over the minute a table takes. So every batch is timed together with the same few
    reference convs (spread over the FLOPs range) and scaled by the median of their ratios to their first
    timings (their entries in the file, when a build resumes): units measured at different moments compare. One
    reference alone is not enough: its own timing noise would shift a whole batch of related units together.
    """
    references = reference_convs(units)
    todo = [key for key in missing_keys(units, writer) if key not in references]
    with tempfile.TemporaryDirectory() as workdir:
        for start in range(0, max(len(todo), any(r not in writer.entries for r in references)), batch_size):
            batch, before = todo[start:start + batch_size], len(writer.entries)
            times, scale = _measure_with_references(timer, writer, units, references, batch, workdir)
            for key, us in zip(batch, times):
                writer.add(key, us * scale)
            yield len(writer.entries) - before


def _measure_with_references(timer, writer, units, references, keys, workdir, extra_models=()):
    """Time the units of ``keys`` (then ``extra_models``) together with the reference convs; their times and the
    drift scale (the references' first timings are written when the table has none yet)."""
    times = measure_units(timer, [units[key] for key in references + keys], workdir, extra_models)
    for key, us in zip(references, times):
        if key not in writer.entries:
            writer.add(key, us)
    scale = float(np.median([writer.entries[r] / us for r, us in zip(references, times)]))
    return times[len(references):], scale


@dataclass
class Calibration:
    """How a finished table's entries were fitted to whole networks (``calibrate_table``), in microseconds."""
    fixed_cost: float     # a predictor run's fixed cost: out of every unit's time, into run_overhead once
    slope: float          # network time per microsecond of (unit time - fixed cost): the median over networks
    spread: float         # the networks' own ratios, max / min: how well one slope fits them all
    networks: int


def calibrate_table(timer, writer, units, cfg, pricer, count=CALIBRATION_NETWORKS, seed=CALIBRATION_SEED):
    """Fit the table's unit times to whole networks and rewrite it in its final form (see the module docstring).

    ``count`` random candidates, saved as ``tools/export_model.py --without-decoder`` saves them, and a program of
    one trivial op (its run is the fixed cost, plus that op's dispatch: under a microsecond here; a difference of
    two programs would be the exact figure, and under load a noisy one) are timed together with the reference
    convs, so that the drift scale puts them on the entries' footing. One parameter, a median ratio, rather than a
    least-squares line: candidates of one input size span less than 2x in latency, over which a fitted intercept
    is at the mercy of two noisy networks.
    """
    references = reference_convs(units)
    candidates = sample_candidates(pricer.space, count, seed)
    height, width = train_input_size(cfg)
    with tempfile.TemporaryDirectory() as workdir:
        models = [(save_trivial_program(os.path.join(workdir, 'trivial', 'unit')), [[1, 1, 1, 1]])]
        for i, tokens in enumerate(candidates):
            prefix = save_network(candidate_model(cfg, pricer, tokens), height, width,
                                  os.path.join(workdir, 'net{}'.format(i), 'net'))
            models.append((prefix, [[1, 3, height, width]]))
        timer = timer.with_rounds(max(timer.rounds, CALIBRATION_ROUNDS), CALIBRATION_REPEATS)
        times, scale = _measure_with_references(timer, writer, units, references, [], workdir, models)
    fixed, measured = times[0] * scale, [t * scale for t in times[1:]]
    sums = [sum(max(writer.entries[unit_key(u)] - fixed, 0.0) for u in pricer.describe_units(t)) for t in candidates]
    ratios = [(m - fixed) / s for m, s in zip(measured, sums)]
    slope = float(np.median(ratios))
    final = {key: max(value - fixed, 0.0) * slope for key, value in writer.entries.items()}
    final[RUN_OVERHEAD_KEY] = fixed
    writer.rewrite(final)
    return Calibration(fixed, slope, max(ratios) / min(ratios), len(candidates))


def save_network(model, height, width, prefix):
    """A candidate as ``tools/export_model.py --without-decoder`` exports it (static [1, 3, H, W], no decoder:
    its cost depends on the weights, not the architecture): the deployed graph whose latency tables predict."""
    return save_layer(DeployedBlazeFace(model, decoded=False), [1, 3, height, width], prefix)


def save_unit_program(unit, prefix):
    """Save an inference program holding just this unit, with H and W free (the head's tail: its shapes).

    Built as a static program directly (no dygraph tracing), which keeps a table of hundreds of units fast. The
    ops are the ones the deployed network runs: ``build_conv``'s conv and batch norm, ``Block``'s pool, add and
    ReLU, ``BlazeFace``'s NHWC flattening and concats.
    """
    with _static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            shapes = [[1, s[1], -1, -1] for s in unit_feeds(unit)] if unit_signature(unit)[0] != 'head_tail' \
                else unit_feeds(unit)
            inputs = [paddle.static.data('in{}'.format(i), shape, 'float32') for i, shape in enumerate(shapes)]
            outputs = _unit_ops(unit, inputs)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(prefix, inputs, outputs, exe, program=main)
    return prefix


def _unit_ops(unit, inputs):
    if isinstance(unit, PlacedConv):
        spec = unit.spec
        return [paddle.nn.Conv2D(spec.in_channels, spec.out_channels, spec.kernel, spec.stride, spec.padding,
                                 groups=spec.groups, bias_attr=False)(inputs[0])]
    if unit.kind == 'batch_norm':  # with its running statistics, as the exported network runs it
        return [paddle.nn.BatchNorm2D(unit.shape[0], use_global_stats=True)(inputs[0])]
    if unit.kind == 'relu':
        return [paddle.nn.functional.relu(inputs[0])]
    if unit.kind == 'add':
        return [inputs[0] + inputs[1]]
    if unit.kind == 'max_pool':
        return [paddle.nn.functional.max_pool2d(inputs[0], unit.pool, unit.pool, ceil_mode=True)]
    if unit.kind == 'head_tail':
        flat = [x.transpose([0, 2, 3, 1]).reshape([0, -1, last]) for x, last in zip(inputs, unit.last_dims)]
        return [paddle.concat(flat[0::2], axis=1), paddle.concat(flat[1::2], axis=1)]
    raise ValueError('no program for runtime op {!r}'.format(unit.kind))


def save_trivial_program(prefix):
    """One ReLU on a single value: almost nothing but a run's fixed cost."""
    with _static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data('in0', [1, 1, 1, 1], 'float32')
            y = paddle.nn.functional.relu(x)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(prefix, [x], [y], exe, program=main)
    return prefix


def save_layer(layer, input_shape, prefix):
    """``paddle.jit.save`` a layer in eval mode for a static input shape (what Paddle Inference and Lite load)."""
    layer.eval()
    spec = [paddle.static.InputSpec(list(input_shape), 'float32', 'image')]
    static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    paddle.jit.save(static, prefix, input_spec=spec)
    return prefix


def model_files(prefix):
    """The (program, params) files of a saved inference model: PIR saves ``.json``, older Paddle ``.pdmodel``."""
    for ext in ('.json', '.pdmodel'):
        if os.path.isfile(prefix + ext):
            return prefix + ext, prefix + '.pdiparams'
    raise ConfigError('no inference model at {} (expected {}.json or {}.pdmodel with {}.pdiparams)'.format(
        prefix, prefix, prefix, prefix))


def predictor_config(prefix, device='cpu', threads=1, onednn=False):
    """Paddle Inference settings (IR optimisation on) with a pinned thread count, so that latencies measured
    with them are reproducible.

    On a CPU, Paddle's own kernels by default; ``onednn`` switches to oneDNN (Paddle Inference's x86 default).
    A latency table adds up per-conv times, and oneDNN's are not additive: in a network its convs pass blocked
    layouts to each other and fuse the residual adds, alone they reorder their input and output, so a conv
    timed alone says little about its share of a network (docs/latency.md has the measurements).
    """
    config = inference.Config(*model_files(prefix))
    if device == 'gpu':
        config.enable_use_gpu(256, 0)
    else:
        config.disable_gpu()
        if onednn:
            config.enable_onednn()
        else:
            config.disable_onednn()
        config.set_cpu_math_library_num_threads(threads)
    config.disable_glog_info()
    return config


def create_predictor(prefix, device='cpu', threads=1, onednn=False):
    return inference.create_predictor(predictor_config(prefix, device, threads, onednn))


class Timer:
    """Median latency (us) of ``predictor.run()`` after warm-up, on one device with a fixed thread count (and on
    a CPU, Paddle's kernels or oneDNN's)."""

    def __init__(self, device='cpu', threads=1, warmup=10, repeats=10, rounds=1, onednn=False):
        if device not in DEVICES:
            raise ConfigError('--device {!r}: choose cpu or gpu'.format(device))
        if onednn and device != 'cpu':
            raise ConfigError('--onednn chooses CPU kernels; drop it for --device {}'.format(device))
        if device == 'gpu' and not paddle.device.is_compiled_with_cuda():
            raise ConfigError('--device gpu: this Paddle is built without CUDA')
        if min(threads, repeats, rounds) < 1 or warmup < 0:
            raise ConfigError('--threads, --repeats and --rounds must be at least 1, --warmup at least 0')
        self.device, self.threads, self.warmup, self.repeats, self.rounds = device, threads, warmup, repeats, rounds
        self.onednn = onednn

    @property
    def header(self):
        return table_header(self.device, self.threads, self.onednn)

    def with_rounds(self, rounds, repeats):
        """The same device and kernels, timed over more rounds: a few networks deserve more than many units."""
        return Timer(self.device, self.threads, self.warmup, repeats, rounds, self.onednn)

    def measure(self, models):
        """Median microseconds of one run of each saved model, given as (prefix, input shapes), on random input.

        The models take turns over ``rounds`` rounds of ``repeats`` runs each, so that changing load from other
        processes on the machine slows them all alike instead of one model's whole measurement. Entries with the
        same prefix (a program with free sizes) share one predictor.
        """
        predictors, runs = {}, []
        for prefix, shapes in models:
            if prefix not in predictors:
                predictors[prefix] = create_predictor(prefix, self.device, self.threads, self.onednn)
            runs.append(_Run(predictors[prefix], shapes, self.device == 'gpu'))
            runs[-1].feed()
            for _ in range(self.warmup):
                runs[-1]()
        times = [[] for _ in runs]
        for _ in range(self.rounds):
            for run, samples in zip(runs, times):
                run.feed()
                samples.extend(_time(run) for _ in range(self.repeats))
        return [float(np.median(samples)) * 1e6 for samples in times]


class _Run:
    """``predictor.run()`` on fixed inputs: they are copied in before timing (``feed``) and the outputs stay in
    the predictor, so only the run is timed. On a GPU each run ends with a device synchronisation, since kernels
    are launched asynchronously."""

    def __init__(self, predictor, shapes, gpu):
        self.predictor, self.gpu = predictor, gpu
        rng = np.random.RandomState(0)
        self.inputs = [(predictor.get_input_handle(name), rng.standard_normal(shape).astype(np.float32))
                       for name, shape in zip(predictor.get_input_names(), shapes)]

    def feed(self):
        for handle, value in self.inputs:
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)

    def __call__(self):
        self.predictor.run()
        if self.gpu:
            paddle.device.synchronize()


def _time(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class TableWriter:
    """Appends ``key<TAB>us`` lines to a table, flushed as they are measured, so an interrupted build loses at
    most the batch it was timing and a rerun resumes from the keys already in the file. ``rewrite`` replaces the
    file at once with its calibrated, final form, which holds ``run_overhead,1`` (``finished``)."""

    def __init__(self, path, header):
        self.path, self.header = path, tuple(header)
        self.entries = self._existing_entries(path, header)
        if not _has_content(path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, 'w') as f:
                f.write('\t'.join(header) + '\n')

    @staticmethod
    def _existing_entries(path, header):
        if _has_content(path):
            _drop_partial_line(path)
        if not _has_content(path):
            return {}
        table = LatencyTable.load(path)
        if table.header != tuple(header):
            raise ConfigError('{} was measured as {!r}, this run measures {!r}; resuming would mix the two, so '
                              'write to another --out'.format(path, '\t'.join(table.header), '\t'.join(header)))
        return dict(table.entries)

    @property
    def finished(self):
        return RUN_OVERHEAD_KEY in self.entries

    def add(self, key, microseconds):
        with open(self.path, 'a') as f:
            f.write(_line(key, microseconds))
        self.entries[key] = round(microseconds, 1)

    def rewrite(self, entries):
        """The whole table at once (atomically): a kill leaves the measured one or the final one."""
        atomic_write(self.path, '\t'.join(self.header) + '\n' + ''.join(_line(k, v) for k, v in entries.items()))
        self.entries = {key: round(value, 1) for key, value in entries.items()}


def _line(key, microseconds):
    return '{}\t{:.1f}\n'.format(key, microseconds)


def _has_content(path):
    return os.path.isfile(path) and os.path.getsize(path) > 0


def _drop_partial_line(path):
    """Cut an unterminated last line (a kill mid-write) so the table parses and that key is measured again."""
    with open(path, 'rb+') as f:
        data = f.read()
        if not data.endswith(b'\n'):
            f.truncate(data.rfind(b'\n') + 1)
