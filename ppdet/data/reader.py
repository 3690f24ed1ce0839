"""Batches for training and evaluation, built from a TrainReader / EvalReader config section.

``create_reader(reader_cfg, mode)`` returns an iterable of dicts of numpy arrays:

- train: ``image`` float32 [N, 3, H, W] (all images the same size), ``gt_bbox`` float32 [N, G, 4] (x1, y1, x2, y2
  in [0, 1], zero-padded to the batch's largest face count G >= 1), ``gt_class`` int32 [N, G] (0 for padding),
  ``gt_num`` int32 [N].
- eval: ``image`` float32 [N, 3, H, W] at native size (zero-padded bottom/right to the batch's largest image),
  ``im_id`` int64 [N], ``im_shape`` float32 [N, 2] (original h, w), ``gt_bbox`` normalised to the original image,
  ``gt_num``.

Samples are decoded and augmented by ``paddle.io.DataLoader`` worker processes (``worker_num`` of them when
``use_process`` is true, capped at the CPU count); ``memsize`` is accepted and ignored, since the DataLoader sizes
the shared memory it moves batches through. The workers end within a second or so of the process that iterates
them, however it dies (``ppdet.utils.processes``). Every sample's transforms draw from a generator of its own, seeded
from (seed, epoch, index), so a run gives the same batches whatever the number of workers, and numpy's and Python's
global generators are neither read nor reseeded (what else draws from them, the search's proposals included, does
not depend on the data). Unreadable samples are skipped with a
warning and counted; one summary line is logged per epoch. Images annotated without faces pass with ``gt_num`` 0;
with ``drop_empty`` (the default) an image whose every face was lost to augmentation is dropped, as in the original.
Batch arrays view the memory the DataLoader passed them in (no copy); they are writable and the batch's own.
"""
import itertools
import logging
import os
from collections import Counter

import numpy as np
import paddle

from ppdet.core.workspace import ConfigError, build, check_arguments
from ppdet.utils.processes import DataWorkerGuard
from .source.widerface import DatasetError
from .transform.operators import DecodeImage, NormalizeBox, Permute, SampleError

__all__ = ['create_reader', 'check_reader', 'ReaderConfig', 'BatchReader']

logger = logging.getLogger(__name__)

OUTPUTS = {'train': ('image', 'gt_bbox', 'gt_class', 'gt_num'),
           'eval': ('image', 'im_id', 'im_shape', 'gt_bbox', 'gt_num')}
OPTIONAL = {'train': ('im_id',), 'eval': ('gt_class',)}
INPUTS_DEF_KEYS = ('fields', 'image_shape', 'use_dataloader', 'iterable')
NO_FACES_LEFT = 'no faces left after augmentation'
SECTIONS = {'train': 'TrainReader', 'eval': 'EvalReader'}


class ReaderConfig:
    """The keys of a TrainReader / EvalReader section: the original Reader's arguments and defaults
    (``batch_size`` defaults to 1 rather than None). ``num_classes``, ``devices_num`` and ``memsize`` are accepted
    and not used; the mixup, cutmix, class-aware, fine-grained-loss and batch-transform options are refused."""

    def __init__(self, dataset=None, sample_transforms=None, batch_transforms=None, batch_size=1, shuffle=False,
                 drop_last=False, drop_empty=True, mixup_epoch=-1, cutmix_epoch=-1, class_aware_sampling=False,
                 worker_num=-1, use_process=False, use_fine_grained_loss=False, num_classes=80, bufsize=-1,
                 memsize='3G', inputs_def=None, devices_num=1):
        self.dataset = dataset
        self.sample_transforms = sample_transforms or []
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.drop_empty = shuffle, drop_last, drop_empty
        self.unsupported = {'mixup_epoch': mixup_epoch > 0, 'cutmix_epoch': cutmix_epoch > 0,
                            'class_aware_sampling': class_aware_sampling, 'batch_transforms': bool(batch_transforms),
                            'use_fine_grained_loss': use_fine_grained_loss}
        self.worker_num, self.use_process, self.bufsize = worker_num, use_process, bufsize
        self.inputs_def = inputs_def or {}


def _fail(section, key, message):
    raise ConfigError('{}.{}: {}'.format(section, key, message))


def _check_transforms(cfg, mode, section):
    ops = cfg.sample_transforms
    if not isinstance(ops, list) or not all(callable(op) for op in ops):
        _fail(section, 'sample_transforms', 'should be a list of !Transform entries, got {!r}'.format(ops))
    needed = [(DecodeImage, 'decodes the image'), (Permute, 'makes the image CHW')]
    if mode == 'train':
        needed.append((NormalizeBox, 'makes boxes relative to the image, which the augmentations expect'))
    for cls, why in needed:
        if not any(isinstance(op, cls) for op in ops):
            _fail(section, 'sample_transforms', 'add !{} {{}} (it {})'.format(cls.__name__, why))


def _check_inputs_def(cfg, mode, section):
    inputs_def = cfg.inputs_def
    if not isinstance(inputs_def, dict):
        _fail(section, 'inputs_def', 'should be a mapping like {{fields: [image, gt_bbox]}}, got {!r}'.format(
            inputs_def))
    for key in inputs_def:
        if key not in INPUTS_DEF_KEYS:
            _fail(section, 'inputs_def', 'unknown key {!r}; known keys: {}'.format(key, ', '.join(INPUTS_DEF_KEYS)))
    known = OUTPUTS[mode] + OPTIONAL[mode]
    for field in inputs_def.get('fields') or []:
        if field not in known:
            _fail(section, 'inputs_def.fields', '{!r} is not produced in {} mode; known: {}'.format(
                field, mode, ', '.join(known)))


def _parse_config(reader_cfg, mode):
    """Check the section's keys and values and build its tagged objects; user mistakes raise ConfigError."""
    if mode not in SECTIONS:
        raise ValueError("mode should be 'train' or 'eval', got {!r}".format(mode))
    section = SECTIONS[mode]
    if not isinstance(reader_cfg, dict):
        raise ConfigError('{} should be a mapping of reader keys, got {!r}'.format(section, reader_cfg))
    check_arguments(ReaderConfig, reader_cfg, section)
    cfg = ReaderConfig(**build(dict(reader_cfg)))
    for key, used in cfg.unsupported.items():
        if used:
            _fail(section, key, 'not supported by this port (face training does not use it); remove the key')
    if not hasattr(cfg.dataset, 'get_roidb'):
        _fail(section, 'dataset', 'missing or not a dataset; write e.g. !WIDERFaceDataSet {dataset_dir: ...}')
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        _fail(section, 'batch_size', 'should be a positive integer, got {!r}'.format(cfg.batch_size))
    _check_transforms(cfg, mode, section)
    _check_inputs_def(cfg, mode, section)
    return cfg


def _worker_count(cfg, override, section):
    """Worker processes to decode with: ``override`` if given, else ``worker_num`` when ``use_process``."""
    if override is None:
        wanted = cfg.worker_num if cfg.use_process else 0
        if cfg.worker_num > 0 and not cfg.use_process:
            logger.info('%s: use_process is false, so samples are decoded in the main process', section)
    else:
        wanted = override
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    if wanted > cpus:
        logger.info('%s: worker_num %d capped to %d, the number of CPUs here', section, wanted, cpus)
    return max(0, min(wanted, cpus))


# The samples' generators have a spawn key of their own: SeedSequence pads entropy with zeros, so [seed, epoch]
# (the epoch's shuffle) and [seed, epoch, 0] (its first image) would otherwise be one stream.
SAMPLE_STREAM = 1


def _sample_rng(seed, epoch, index):
    """One sample's generator, so its augmentation depends neither on the worker nor on anything else drawn."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index], spawn_key=(SAMPLE_STREAM,)))


def _clean_boxes(boxes, classes):
    """Clip normalised boxes to [0, 1] and drop those without area (they would give NaN in the box encoding)."""
    boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0., 1.)
    keep = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], np.asarray(classes, np.int32).reshape(-1)[keep]


def _finish_train(sample, record):
    """Train boxes are the augmented ones, already relative to the augmented image."""
    boxes, classes = _clean_boxes(sample['gt_bbox'], sample['gt_class'])
    return {'gt_bbox': boxes, 'gt_class': classes}


def _finish_eval(sample, record):
    """Eval boxes come from the annotation, relative to the decoded size, whatever the transforms did to them."""
    h, w = sample['im_shape']
    boxes, classes = _clean_boxes(record['gt_bbox'] / np.array([w, h, w, h], np.float32), record['gt_class'])
    return {'gt_bbox': boxes, 'gt_class': classes, 'im_shape': np.array([h, w], np.float32)}


class _Samples(paddle.io.Dataset):
    """Map-style dataset over keys (epoch, index): one decoded and augmented sample, or why it was skipped."""

    def __init__(self, records, transforms, seed, mode, drop_empty):
        self.records, self.transforms, self.seed = records, transforms, seed
        self.finish = _finish_train if mode == 'train' else _finish_eval
        self.drop_empty = drop_empty

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        epoch, index = key
        rng = _sample_rng(self.seed, epoch, index)
        record = self.records[index]
        sample = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in record.items()}
        try:
            for op in self.transforms:
                sample = op(sample, rng=rng)
        except SampleError as e:
            return {'epoch': epoch, 'skip': [str(e), record['im_file']]}
        out = self.finish(sample, record)
        if self.drop_empty and len(record['gt_bbox']) and not len(out['gt_bbox']):
            return {'epoch': epoch, 'skip': [NO_FACES_LEFT, record['im_file']]}
        out.update(epoch=epoch, image=np.ascontiguousarray(sample['image'], np.float32),
                   im_id=int(record['im_id'][0]))
        return out


class _BatchPlan:
    """Lists of (epoch, index) keys: one pass, or (``cycle``) epochs forever, reshuffled per epoch from the seed."""

    def __init__(self, size, batch_size, shuffle, drop_last, seed, cycle, start=0):
        self.size, self.batch_size = size, batch_size
        self.shuffle, self.drop_last, self.seed, self.cycle = shuffle, drop_last, seed, cycle
        self.start = start

    def __len__(self):
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _order(self, epoch):
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return np.arange(self.size)

    def __iter__(self):
        return itertools.islice(self._keys(), self.start, None)

    def _keys(self):
        epoch = 0
        while True:
            order = self._order(epoch)
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                yield [(epoch, int(i)) for i in order[start:start + self.batch_size]]
            if not self.cycle:
                return
            epoch += 1


def _pad_boxes(samples):
    """Ragged per-image boxes -> [N, G, 4] / [N, G] zero-padded, plus the real counts."""
    counts = [len(s['gt_bbox']) for s in samples]
    size = max([1] + counts)
    boxes = np.zeros((len(samples), size, 4), np.float32)
    classes = np.zeros((len(samples), size), np.int32)
    for i, s in enumerate(samples):
        boxes[i, :counts[i]] = s['gt_bbox']
        classes[i, :counts[i]] = s['gt_class']
    return {'gt_bbox': boxes, 'gt_class': classes, 'gt_num': np.array(counts, np.int32)}


def _pad_images(images):
    """Zero-pad CHW images bottom/right to the largest height and width."""
    height = max(im.shape[1] for im in images)
    width = max(im.shape[2] for im in images)
    out = np.zeros((len(images), images[0].shape[0], height, width), np.float32)
    for i, im in enumerate(images):
        out[i, :, :im.shape[1], :im.shape[2]] = im
    return out


def _stack(samples, mode):
    images = [s['image'] for s in samples]
    shapes = sorted({im.shape for im in images})
    if mode == 'train' and len(shapes) > 1:
        return {'_error': 'training images in one batch differ in size {}; end sample_transforms with a fixed-size '
                          'resize such as !RandomInterpImage {{target_size: 640}}'.format(shapes)}
    batch = _pad_boxes(samples)
    batch['image'] = np.stack(images) if len(shapes) == 1 else _pad_images(images)
    batch['im_id'] = np.array([s['im_id'] for s in samples], np.int64)
    if mode == 'eval':
        batch['im_shape'] = np.stack([s['im_shape'] for s in samples])
    return batch


class _Collate:
    """Runs in the worker: stacks the usable samples and passes on which ones were skipped and in which epoch."""

    def __init__(self, mode):
        self.mode = mode

    def __call__(self, items):
        # the epoch goes as an array: the DataLoader takes a batch without any array for the end of the data
        batch = {'_epoch': np.array([items[0]['epoch']]), '_skipped': [i['skip'] for i in items if 'skip' in i]}
        good = [i for i in items if 'skip' not in i]
        if good:
            batch.update(_stack(good, self.mode))
        return batch


class _Writable:
    """Exposes a read-only DLPack view as writable memory, holding the view (and so the tensor) alive."""

    def __init__(self, view):
        self.view = view
        self.__array_interface__ = dict(view.__array_interface__, data=(view.__array_interface__['data'][0], False))


def _as_numpy(value):
    """A DataLoader tensor as numpy without copying it: ``Tensor.numpy()`` copies a 39 MB training batch, which
    costs the main process more time than the training step can spare. The memory is this batch's own."""
    if isinstance(value, paddle.Tensor):
        return np.asarray(_Writable(np.from_dlpack(value)))
    return np.asarray(value)


class _Tally:
    """Used and skipped samples of the current epoch; logs one summary line when the epoch ends."""

    def __init__(self, section, load_skips):
        self.section, self.load_skips = section, load_skips
        self.epoch, self.used, self.skipped = None, 0, Counter()

    def add(self, epoch, used, skipped):
        if epoch != self.epoch:
            self.finish(check=True)
            self.epoch = epoch
        self.used += used
        self.skipped.update(kind for kind, _ in skipped)

    def finish(self, check=False):
        if self.epoch is None:
            return
        counts = self.skipped + Counter(self.load_skips)
        detail = ', '.join('{}: {}'.format(k, n) for k, n in sorted(counts.items()))
        logger.log(logging.WARNING if counts else logging.INFO, '%s epoch %d: %d images used, %d skipped%s',
                   self.section, self.epoch, self.used, sum(counts.values()), ' ({})'.format(detail) if detail else '')
        if check and not self.used:
            raise DatasetError('{}: no usable image in epoch {} ({})'.format(self.section, self.epoch, detail))
        self.epoch, self.used, self.skipped = None, 0, Counter()


class BatchReader:
    """What ``create_reader`` returns; each ``iter()`` starts again from epoch 0 with fresh worker processes."""

    def __init__(self, cfg, mode, max_iters, seed, num_workers, start=0):
        self.mode, self.section = mode, SECTIONS[mode]
        self.dataset = cfg.dataset
        records = cfg.dataset.get_roidb()
        cycle = mode == 'train' and bool(max_iters)
        if cycle and cfg.drop_last and len(records) < cfg.batch_size:
            _fail(self.section, 'drop_last', 'with {} images and batch_size {} no batch is ever full'.format(
                len(records), cfg.batch_size))
        self.samples = _Samples(records, cfg.sample_transforms, seed, mode, cfg.drop_empty)
        self.plan = _BatchPlan(len(records), cfg.batch_size, cfg.shuffle, cfg.drop_last, seed, cycle, start)
        self.max_iters = max_iters
        self.num_workers = num_workers
        self.prefetch = cfg.bufsize if cfg.bufsize > 0 else 2
        self.fields = OUTPUTS[mode] + tuple(f for f in cfg.inputs_def.get('fields') or [] if f in OPTIONAL[mode])
        self.image_shape = cfg.inputs_def.get('image_shape') if mode == 'train' else None

    def __len__(self):
        if not self.max_iters:
            return len(self.plan)
        return self.max_iters if self.mode == 'train' else min(self.max_iters, len(self.plan))

    def _loader(self):
        return paddle.io.DataLoader(self.samples, batch_sampler=self.plan, collate_fn=_Collate(self.mode),
                                    num_workers=self.num_workers, use_shared_memory=True,
                                    prefetch_factor=self.prefetch, worker_init_fn=DataWorkerGuard(os.getpid()))

    def __iter__(self):
        tally = _Tally(self.section, getattr(self.dataset, 'skipped', {}))
        batches = iter(self._loader())
        produced = 0
        try:
            for raw in batches:
                batch = self._unpack(raw, tally)
                if batch is None:
                    continue
                yield batch
                produced += 1
                if self.max_iters and produced >= self.max_iters:
                    return
            tally.finish(check=True)
        finally:
            tally.finish()
            # stop the workers now rather than whenever the iterator is collected (a traceback can hold it)
            getattr(batches, '_try_shutdown_all', lambda: None)()

    def _unpack(self, raw, tally):
        """Worker output -> dict of numpy arrays (None when every sample of the batch was skipped)."""
        raw = dict(raw)
        if raw.get('_error'):
            raise ConfigError('{}: {}'.format(self.section, raw['_error']))
        for kind, im_file in raw['_skipped']:
            logger.log(logging.DEBUG if kind == NO_FACES_LEFT else logging.WARNING, 'skipped %s: %s', im_file, kind)
        batch = {k: _as_numpy(raw[k]) for k in self.fields if k in raw}
        tally.add(int(_as_numpy(raw['_epoch'])[0]), len(batch['image']) if batch else 0, raw['_skipped'])
        if batch:
            self._check_shape(batch['image'])
        return batch or None

    def _check_shape(self, images):
        shape = self.image_shape
        if shape and all(isinstance(d, int) and d > 0 for d in shape) and list(images.shape[1:]) != list(shape):
            raise ConfigError('{}: images come out {} but inputs_def.image_shape is {}; make the resize target '
                              'match it'.format(self.section, list(images.shape[1:]), list(shape)))


def check_reader(reader_cfg, mode):
    """A reader section checked as ``create_reader`` would, plus its dataset's files, without reading any data.

    Raises ConfigError, or the dataset's DatasetError (which names the dataset key at fault).
    """
    cfg = _parse_config(reader_cfg, mode)
    check_layout = getattr(cfg.dataset, 'check_layout', None)
    if check_layout is not None:
        check_layout()
    if 'memsize' in reader_cfg:  # said once, here, rather than for every candidate's reader
        logger.info('%s.memsize is ignored: paddle.io.DataLoader sizes its shared memory itself', SECTIONS[mode])
    return cfg


def create_reader(reader_cfg, mode, max_iters=None, seed=0, worker_num=None, start=0):
    """Batches from a TrainReader (``mode='train'``) or EvalReader (``'eval'``) section; see the module docstring.

    ``max_iters``: train yields exactly that many batches, cycling and reshuffling epochs; eval stops after at most
    that many (one pass by default). ``worker_num`` overrides the section's worker_num/use_process (0: in-process).
    ``start``: the first ``start`` batches of the same seed's sequence are left out, undecoded (a resumed training
    goes on with the batches it would have had).
    """
    cfg = _parse_config(reader_cfg, mode)
    num_workers = _worker_count(cfg, worker_num, SECTIONS[mode])
    return BatchReader(cfg, mode, max_iters, seed, num_workers, start)
