"""Latency tables for the user's own device: which convs a search can place, and timing them.

Everything is timed with Paddle Inference (``paddle.inference`` predictors on saved inference programs), the
runtime users deploy with; eager dygraph timing would price Python dispatch, not the deployed network. Table
entries and end-to-end checks use the same predictor settings (device, thread count) so that they compare.
"""
import contextlib
import copy
import itertools
import os
import platform
import random
import tempfile
import time

import numpy as np
import paddle
from paddle import inference

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.candidate import CandidateTrainer
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.constraint import LatencyTable, conv_flops, latency_key

__all__ = ['DEVICES', 'KERNELS', 'load_table_setup', 'candidate_model', 'DeployedBlazeFace', 'table_header',
           'with_kernels', 'space_convs', 'missing_keys', 'reference_convs', 'measure_table', 'save_layer',
           'predictor_config', 'create_predictor', 'Timer', 'TableWriter']

DEVICES = ('cpu', 'gpu')
KERNELS = (3, 5)
UNIT = 'us'
REFERENCES = 5


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
    both; a table is only valid for predictors run with the same settings.
    """
    engine = 'paddle_inference_{}'.format(paddle.__version__)
    if device == 'gpu':
        name = paddle.device.cuda.get_device_name() if paddle.device.cuda.device_count() else 'unknown'
        where = 'gpu_{}'.format(name.replace(' ', '_'))
    else:
        where = 'cpu_{}_{}threads{}'.format(platform.machine(), threads, '_onednn' if onednn else '')
    return engine, where, UNIT


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


def space_convs(pricer):
    """Every distinct conv (by table key) a candidate of ``pricer.space`` places, as {key: PlacedConv}.

    The space has ~11.7M token vectors, but a conv's key depends on at most two channel tokens (its input and
    output widths) and the kernel token (the last one). Running every pair of channel tokens over all their
    values, for each kernel value, with the other tokens fixed, therefore meets every key in ~1,800
    candidates per kernel.
    """
    ranges = pricer.space.range_table()
    channel_tokens = range(len(ranges) - 1)
    convs = {}
    for kernel in range(ranges[-1]):
        for i, j in itertools.combinations(channel_tokens, 2):
            for a, b in itertools.product(range(ranges[i]), range(ranges[j])):
                tokens = [0] * len(ranges)
                tokens[i], tokens[j], tokens[-1] = a, b, kernel
                for placed in pricer.describe(tokens):
                    convs.setdefault(latency_key(placed), placed)
    return convs


@contextlib.contextmanager
def _static_mode():
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()


def measure_convs(timer, placed_convs, workdir):
    """Microseconds of each conv alone, as its key describes it: input 1 x C_in x H x W, no bias, no batch
    norm, no activation. The convs are timed together, taking turns (``Timer.measure``).

    One program is saved per conv signature with H and W left free, so the sizes a signature runs at share one
    predictor: creating predictors is most of a table's build time.
    """
    programs, models = {}, []
    for placed in placed_convs:
        spec = placed.spec
        if conv_signature(placed) not in programs:
            prefix = os.path.join(workdir, str(len(programs)), 'conv')
            programs[conv_signature(placed)] = save_conv_program(spec, [1, spec.in_channels, -1, -1], prefix)
        models.append((programs[conv_signature(placed)], [1, spec.in_channels, placed.in_height, placed.in_width]))
    return timer.measure(models)


def conv_signature(placed):
    """What a conv program fixes (its weights and stride); H and W are the feed's."""
    spec = placed.spec
    return spec.in_channels, spec.out_channels, spec.kernel, spec.stride, spec.groups


def missing_keys(convs, writer):
    """The keys of ``convs`` the table does not hold yet, in the order they are measured.

    A signature's sizes stay together (a batch shares their predictor), but the signatures come in a fixed
    shuffled order: what a batch's timing gets wrong then lands on unrelated convs, whose errors cancel in a
    candidate's sum, instead of on every conv of one channel width (sorted order), which would shift every
    candidate with that token value alike and reorder candidates.
    """
    signatures = sorted({conv_signature(placed) for placed in convs.values()})
    random.Random(0).shuffle(signatures)
    rank = {signature: i for i, signature in enumerate(signatures)}
    return [key for key in sorted(convs, key=lambda k: (rank[conv_signature(convs[k])], k))
            if key not in writer.entries]


def reference_convs(convs, count=REFERENCES):
    """``count`` keys spread over the FLOPs range (quantiles), timed in every batch to follow the machine's speed."""
    ranked = sorted(convs, key=lambda key: (conv_flops(convs[key]), key))
    picks = sorted({round((i + 0.5) * len(ranked) / count - 0.5) for i in range(min(count, len(ranked)))})
    return [ranked[i] for i in picks]


def measure_table(timer, writer, convs, batch_size=24):
    """Measure the convs missing from the table in batches, appending each batch; yields the count written.

    Other load on the machine (on 2 cores, any other process) slows everything measured meanwhile by a common
    factor, and it changes over the minute a table takes. So every batch is timed together with the same few
    reference convs (spread over the FLOPs range) and scaled by the median of their ratios to their first
    timings (their entries in the file, when a build resumes): convs measured at different moments compare. One
    reference alone is not enough: its own timing noise would shift a whole batch of related convs together.
    """
    references = reference_convs(convs)
    todo = [key for key in missing_keys(convs, writer) if key not in references]
    with tempfile.TemporaryDirectory() as workdir:
        for start in range(0, max(len(todo), any(r not in writer.entries for r in references)), batch_size):
            batch = todo[start:start + batch_size]
            times = measure_convs(timer, [convs[key] for key in references + batch], workdir)
            first = [r for r in references if r not in writer.entries]
            for key, us in zip(references, times):
                if key in first:
                    writer.add(key, us)
            scale = float(np.median([writer.entries[r] / us for r, us in zip(references, times)]))
            for key, us in zip(batch, times[len(references):]):
                writer.add(key, us * scale)
            yield len(batch) + len(first)


def save_conv_program(spec, input_shape, prefix):
    """Save an inference program holding just this conv.

    Built as a static program directly (no dygraph tracing), which keeps a table of hundreds of convs fast.
    """
    with _static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            image = paddle.static.data('x', list(input_shape), 'float32')
            conv = paddle.nn.Conv2D(spec.in_channels, spec.out_channels, spec.kernel, spec.stride, spec.padding,
                                    groups=spec.groups, bias_attr=False)
            out = conv(image)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        paddle.static.save_inference_model(prefix, [image], [out], exe, program=main)
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

    def measure(self, models):
        """Median microseconds of one run of each saved model, given as (prefix, input shape), on random input.

        The models take turns over ``rounds`` rounds of ``repeats`` runs each, so that changing load from other
        processes on the machine slows them all alike instead of one model's whole measurement. Entries with the
        same prefix (a program with free sizes) share one predictor.
        """
        predictors, runs = {}, []
        for prefix, shape in models:
            if prefix not in predictors:
                predictors[prefix] = create_predictor(prefix, self.device, self.threads, self.onednn)
            runs.append(_Run(predictors[prefix], shape, self.device == 'gpu'))
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
    """``predictor.run()`` on one input: the input is copied in before timing (``feed``) and the output stays
    in the predictor, so only the run is timed. On a GPU each run ends with a device synchronisation, since
    kernels are launched asynchronously."""

    def __init__(self, predictor, shape, gpu):
        self.predictor, self.gpu = predictor, gpu
        self.handle = predictor.get_input_handle(predictor.get_input_names()[0])
        self.input = np.random.RandomState(0).standard_normal(shape).astype(np.float32)

    def feed(self):
        self.handle.reshape(list(self.input.shape))
        self.handle.copy_from_cpu(self.input)

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
    most the batch it was timing and a rerun resumes from the keys already in the file."""

    def __init__(self, path, header):
        self.path = path
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

    def add(self, key, microseconds):
        with open(self.path, 'a') as f:
            f.write('{}\t{:.1f}\n'.format(key, microseconds))
        self.entries[key] = round(microseconds, 1)


def _has_content(path):
    return os.path.isfile(path) and os.path.getsize(path) > 0


def _drop_partial_line(path):
    """Cut an unterminated last line (a kill mid-write) so the table parses and that key is measured again."""
    with open(path, 'rb+') as f:
        data = f.read()
        if not data.endswith(b'\n'):
            f.truncate(data.rfind(b'\n') + 1)
