"""One-shot search: a BlazeFace supernet trained once, whose sub-networks score every candidate of the space.

Not in the original. After Once-for-All (Cai et al., ICLR 2020) and BigNAS (Yu et al., ECCV 2020): weights shared by
every candidate, trained with the sandwich rule (each step the largest, the smallest and ``supernet_random`` random
sub-networks, their losses summed), optionally with in-place distillation from the largest; a candidate is then
scored in seconds by its slice of the weights, its batch-norm statistics recalibrated on a fixed set of training
batches, and AP on the eval set.

One place knows the network: the supernet is made of the layers of the widest candidates (the largest value of every
channel token, once per kernel value the space allows), built by the same ``BlazeNet``/``BlazeFace`` code as any
candidate, and keyed by their conv names in the plans (``inherit.plan_layers``). A candidate's sub-network is a
``BlazeFace`` built from the candidate's own plan (``BlazeNet.from_plan``) whose every conv is ``SlicedConv``: the
leading output and input channels of the supernet's conv of the same name, and the same slice of its batch norm. The
kernel token is a choice of path, not a crop: in this space a 3x3 choice is two stacked 3x3 depthwise convs
(``..._dw_1``, ``..._dw_2``) where a 5x5 choice is one (``..._dw``), so the supernet holds both.

Why not PaddleSlim's OFA (``paddleslim.nas.ofa``): its elastic kernel is the centre crop of one conv, which cannot
express one 5x5 conv against two 3x3 ones, and its ``Convert`` gives every conv a width choice of its own, where here
one token sets the channels of several convs in different roles (a block's depthwise, projection and shortcut), which
the plan of the candidate already says.

Files in a supernet directory: ``supernet.pdparams`` and ``supernet.json`` (what it was trained as) once finished;
while it trains, every ``supernet_snapshot_iters`` iterations, ``checkpoint_<iteration>.pdparams``/``.pdopt`` and
``checkpoint.json`` naming the iteration, from which a killed training goes on (the same batches and sub-networks as
without the kill).
"""
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.workspace import ConfigError
from ppdet.data.reader import create_reader
from ppdet.modeling.backbones.blazenet import BlazeNet, blazenet_plan
from ppdet.modeling.ops import PRIOR_VARIANCES
from ppdet.slim.nas.candidate import build_blazeface
from ppdet.slim.nas.files import atomic_save, atomic_write
from ppdet.slim.nas.inherit import plan_layers, plan_names
from ppdet.slim.nas.vocabulary import Settings, of_type

__all__ = ['SupernetSettings', 'Supernet', 'SupernetError', 'SlicedConv', 'train_supernet', 'load_supernet',
           'SupernetScorer', 'EVALUATORS', 'WEIGHTS', 'META', 'CHECKPOINT', 'weight_dirs']

logger = logging.getLogger(__name__)
EVALUATORS = ('train', 'supernet')   # ``evaluator``: what a search step does with a candidate
WEIGHTS, META, CHECKPOINT = 'supernet.pdparams', 'supernet.json', 'checkpoint'
# the supernet's keys and their defaults; supernet_iters defaults to SUPERNET_ITERS_PER_CANDIDATE x max_iters
SUPERNET_DEFAULTS = {'supernet_random': 2, 'supernet_distill': 0.0, 'supernet_calib_batches': 20,
                     'supernet_snapshot_iters': 100, 'supernet_sample': 'uniform'}
SAMPLES = ('uniform', 'admitted')  # supernet_sample: where the random sub-networks of a step are drawn from
MAX_DRAWS = 1000  # supernet_sample admitted: draws before a step takes an inadmissible sub-network
SUPERNET_ITERS_PER_CANDIDATE = 4
# what a checkpoint or a finished supernet must agree on with the config to be used
IDENTITY = ('space', 'widest', 'iters', 'seed', 'random_subnets', 'distill', 'sample', 'bounds')


class SupernetError(RuntimeError):
    """The supernet cannot be trained or used (a diverged training, weights of another space)."""


@dataclass(frozen=True)
class SupernetSettings:
    iters: int            # supernet_iters: training iterations (each one step of the sandwich)
    random_subnets: int   # supernet_random: random sub-networks per step beside the largest and the smallest
    distill: float        # supernet_distill: weight of in-place distillation from the largest (0: off)
    calib_batches: int    # supernet_calib_batches: training batches a scoring recalibrates batch norm on
    snapshot_iters: int   # supernet_snapshot_iters: iterations between checkpoints
    sample: str = 'uniform'  # supernet_sample: random sub-networks from the whole space, or those the limit admits

    @classmethod
    def from_config(cls, cfg, path='config'):
        """The settings, each checked (a one-line ConfigError naming the key)."""
        values = dict(SUPERNET_DEFAULTS, **{k: cfg[k] for k in SUPERNET_DEFAULTS if k in cfg})
        values['supernet_iters'] = cfg.get('supernet_iters',
                                           SUPERNET_ITERS_PER_CANDIDATE * Settings.from_config(cfg).max_iters)
        for key in ('supernet_iters', 'supernet_calib_batches', 'supernet_snapshot_iters', 'supernet_random'):
            low = 0 if key == 'supernet_random' else 1
            if not (of_type(values[key], int) and values[key] >= low):
                raise ConfigError('{}: {} is {!r}; it must be a whole number >= {}'.format(path, key, values[key], low))
        distill = values['supernet_distill']
        if not (of_type(distill, float) and distill >= 0):
            raise ConfigError('{}: supernet_distill is {!r}; give a weight >= 0 (0 turns in-place distillation '
                              'off)'.format(path, distill))
        if values['supernet_sample'] not in SAMPLES:
            raise ConfigError('{}: supernet_sample is {!r}; use uniform (the whole space) or admitted (the candidates '
                              'the Constraint admits)'.format(path, values['supernet_sample']))
        return cls(values['supernet_iters'], values['supernet_random'], float(distill),
                   values['supernet_calib_batches'], values['supernet_snapshot_iters'], values['supernet_sample'])


class SlicedConv(nn.Layer):
    """A candidate's conv (``spec``) computed with the leading channels of the supernet's widest conv of the same
    name (``source``: what ``build_conv`` made of the widest spec), as ``build_conv(spec)`` would compute it."""

    def __init__(self, spec, source):
        super().__init__()
        self.spec = spec
        self._source = (source,)  # a tuple: the supernet owns the layer, this one only reads it

    def forward(self, x):
        spec, source = self.spec, self._source[0]
        conv = source[0] if spec.norm else source
        weight = conv.weight[:spec.out_channels, :spec.in_channels // spec.groups]
        bias = None if spec.norm else conv.bias[:spec.out_channels]
        y = F.conv2d(x, weight, bias, stride=spec.stride, padding=spec.padding, groups=spec.groups)
        if not spec.norm:
            return y
        bn, c = source[1], spec.out_channels
        y = F.batch_norm(y, bn._mean[:c], bn._variance[:c], bn.weight[:c], bn.bias[:c], training=self.training,
                         momentum=bn._momentum, epsilon=bn._epsilon)
        return F.relu(y) if spec.relu else y


class Supernet(nn.Layer):
    """The widest candidates' layers, one per conv name of the space; ``subnet(tokens)`` is a candidate's
    sub-network on them, ``extract(tokens)`` its standalone BlazeFace with copies of its slices."""

    def __init__(self, cfg, pricer, seed=0):
        super().__init__()
        self.cfg, self.pricer = cfg, pricer
        space = pricer.space
        widest = [r - 1 for r in space.range_table()]
        kernels = range(len(getattr(space, 'use_5x5kernel', [0])))
        paddle.seed(seed)  # the supernet's initial weights, as a candidate's are seeded
        layers = {}
        for kernel in kernels:
            model = self.standalone(widest[:-1] + [kernel])
            found = dict(model.named_sublayers())
            for path, name in plan_layers(model).items():
                layers.setdefault(name, found[path])
        self.layers = nn.LayerDict(layers)
        self.widest = {n: list(p.shape) for n, p in self.state_dict().items()}

    @property
    def identity(self):
        """What weights of this supernet are trained for: the space and the widest layers' shapes."""
        return {'space': type(self.pricer.space).__name__, 'widest': self.widest}

    def standalone(self, tokens, backbone=None):
        """The candidate's BlazeFace as a search step builds it (the config's sections overlaid by the tokens)."""
        return build_blazeface(self.cfg, self.pricer.blazenet_kwargs(list(tokens)), backbone)

    def subnet(self, tokens):
        """The candidate's network computed on the supernet's weights (gradients flow into them)."""
        plan = blazenet_plan(**self.pricer.blazenet_kwargs(list(tokens)))
        net = self.standalone(tokens, BlazeNet.from_plan(plan, lambda spec: SlicedConv(spec, self.layers[spec.name])))
        net.train(self.training)
        return net

    def _key(self, plan_name):
        return 'layers.' + plan_name

    def extract(self, tokens):
        """The candidate's standalone BlazeFace holding copies of its slices of the supernet's weights."""
        model = self.standalone(tokens)
        names, state = plan_names(model), self.state_dict()
        model.set_state_dict({k: state[self._key(names[k])][tuple(slice(0, n) for n in v.shape)]
                              for k, v in model.state_dict().items()})
        return model

    def recalibrate(self, tokens, batches):
        """The candidate's standalone BlazeFace with batch-norm statistics recomputed on ``batches`` (the exact mean
        of their batch statistics), in eval mode; the supernet's slices take the same statistics, so that
        ``subnet(tokens)`` in eval mode computes what it does."""
        model = self.extract(tokens)
        norms = [layer for layer in model.sublayers() if isinstance(layer, nn.BatchNorm2D)]
        momentum = [bn._momentum for bn in norms]
        for bn in norms:
            bn._mean.set_value(paddle.zeros_like(bn._mean))
            bn._variance.set_value(paddle.ones_like(bn._variance))
        model.train()
        with paddle.no_grad():
            for k, batch in enumerate(batches):
                for bn in norms:
                    bn._momentum = k / (k + 1)  # running = mean of the first k+1 batches' statistics
                model(paddle.to_tensor(batch['image']))
        for bn, m in zip(norms, momentum):
            bn._momentum = m
        model.eval()
        self._take_statistics(model)
        return model

    def _take_statistics(self, model):
        names, state = plan_names(model), self.state_dict()
        for key, value in model.state_dict().items():
            if key.endswith(('._mean', '._variance')):
                full = state[self._key(names[key])]
                array = full.numpy()
                array[:value.shape[0]] = value.numpy()
                full.set_value(array)

    def sandwich(self, rng, random_subnets, admits=None):
        """The sub-networks of one training step: the largest, the smallest, ``random_subnets`` drawn by ``rng``
        (among those ``admits(tokens)`` accepts, if given: up to MAX_DRAWS draws each)."""
        ranges = self.pricer.space.range_table()

        def draw():
            for _ in range(MAX_DRAWS):
                tokens = [int(rng.integers(r)) for r in ranges]
                if admits is None or admits(tokens):
                    break
            return tokens
        return [[r - 1 for r in ranges], [0] * len(ranges)] + [draw() for _ in range(random_subnets)]


class SandwichLoss(nn.Layer):
    """A training step's loss (what ``CandidateTrainer.fit`` trains): the sandwich's losses summed. The sub-networks
    of iteration ``i`` come from a generator seeded by (seed, i): the same on every rank and after a resume."""

    def __init__(self, supernet, settings, seed, start=0, admits=None):
        super().__init__()
        self.supernet, self.settings, self.seed, self.admits = supernet, settings, seed, admits
        self.iteration = start

    def forward(self, image, gt_bbox, gt_class, gt_num):
        rng = np.random.default_rng([self.seed, self.iteration])
        self.iteration += 1
        total, teacher = 0.0, None
        for tokens in self.supernet.sandwich(rng, self.settings.random_subnets, self.admits):
            net = self.supernet.subnet(tokens)
            locs, confs, priors = net(image)
            loss = net.ssd_loss(locs, confs, gt_bbox, gt_class, gt_num, priors, PRIOR_VARIANCES)
            if teacher is None:
                teacher = (locs.detach(), confs.detach())
            elif self.settings.distill > 0:
                loss = loss + self.settings.distill * _distillation(locs, confs, *teacher)
            total = total + loss
        return total


def _distillation(locs, confs, teacher_locs, teacher_confs):
    """In-place distillation: the largest's class distribution (KL) and box offsets (smooth L1), every prior."""
    kl = F.kl_div(F.log_softmax(confs, axis=-1), F.softmax(teacher_confs, axis=-1), reduction='batchmean')
    return kl / confs.shape[1] + F.smooth_l1_loss(locs, teacher_locs)


def _save_paddle(obj, path):
    atomic_save(path, lambda tmp: paddle.save(obj, tmp))


def _save_json(obj, path):
    atomic_write(path, json.dumps(obj, indent=1))


def _read_meta(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _identity(supernet, settings, seed, constraint):
    identity = dict(supernet.identity, iters=settings.iters, seed=seed, random_subnets=settings.random_subnets,
                    distill=settings.distill)
    if settings.sample != 'uniform':  # (left out when uniform: what supernets trained before the key say)
        identity.update(sample=settings.sample, bounds=[constraint.metric, constraint.lower_bound,
                                                         constraint.max_constraint])
    return identity


def _mismatch(meta, identity):
    return [k for k in IDENTITY if meta.get(k) != identity.get(k)]


def _admits(pricer, constraint, settings):
    """supernet_sample admitted: whether the constraint admits a candidate (as the search prices it)."""
    if settings.sample == 'uniform':
        return None
    return lambda tokens: constraint.admits(pricer.price(tokens)) is True


def train_supernet(trainer, pricer, out_dir, settings=None, seed=None, constraint=None):
    """Train the supernet of ``pricer``'s space under ``trainer``'s config into ``out_dir`` (going on from its
    checkpoint if there is one); returns the trained Supernet. A finished one in ``out_dir`` is loaded, not
    trained again. ``constraint``: the search's, for ``supernet_sample: admitted``."""
    settings = settings or SupernetSettings.from_config(trainer.cfg)
    seed = trainer.seed if seed is None else seed
    supernet = Supernet(trainer.cfg, pricer, seed)
    identity = _identity(supernet, settings, seed, constraint)
    if _read_meta(os.path.join(out_dir, META)) is not None:
        return _load_weights(supernet, out_dir, identity, IDENTITY)
    lr, optimizer = trainer.optimizer(supernet, settings.iters)
    start, before = _resume(supernet, optimizer, out_dir, identity)
    supernet.train()
    loss = SandwichLoss(supernet, settings, seed, start, _admits(pricer, constraint, settings))
    logger.info('supernet: %d iterations from %d, each the largest, the smallest and %d random %ssub-networks%s; '
                'into %s', settings.iters, start, settings.random_subnets,
                'admitted ' if settings.sample == 'admitted' else '',
                ', distilled from the largest (weight {})'.format(settings.distill) if settings.distill else '',
                out_dir)
    started = time.time()

    def seconds():  # training time over every run of it (a resumed one included)
        return round(before + time.time() - started, 1)

    def snapshot(done):
        if trainer.ranks.is_main and done % settings.snapshot_iters == 0 and done < settings.iters:
            _save_checkpoint(supernet, optimizer, out_dir, dict(identity, iteration=done, seconds=seconds()))
        return False
    if not trainer.fit(loss, lr, optimizer, settings.iters, seed, start, snapshot, find_unused=True):
        raise SupernetError('the supernet\'s loss is not finite (iteration {}); lower LearningRate.base_lr, or '
                            'train again from the last checkpoint in {}'.format(loss.iteration, out_dir))
    if trainer.ranks.is_main:
        _save_paddle(supernet.state_dict(), os.path.join(out_dir, WEIGHTS))
        _save_json(dict(identity, iteration=settings.iters, seconds=seconds()), os.path.join(out_dir, META))
        _remove_checkpoints(out_dir)  # the finished weights supersede the checkpoint
        if os.path.exists(os.path.join(out_dir, CHECKPOINT + '.json')):
            os.remove(os.path.join(out_dir, CHECKPOINT + '.json'))
    supernet.eval()
    return supernet


def _checkpoint_files(out_dir, iteration):
    base = os.path.join(out_dir, '{}_{}'.format(CHECKPOINT, iteration))
    return base + '.pdparams', base + '.pdopt'


def _remove_checkpoints(out_dir, keep=None):
    """Every checkpoint's weights and optimizer state in ``out_dir`` but iteration ``keep``'s."""
    kept = _checkpoint_files(out_dir, keep) if keep is not None else ()
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if name.startswith(CHECKPOINT + '_') and path not in kept:
            os.remove(path)


def _save_checkpoint(supernet, optimizer, out_dir, meta):
    """The iteration's weights and optimizer state in files of their own, then ``checkpoint.json`` naming that
    iteration (atomically), then the older files removed: a kill at any moment leaves a complete checkpoint."""
    os.makedirs(out_dir, exist_ok=True)
    weights, state = _checkpoint_files(out_dir, meta['iteration'])
    _save_paddle(supernet.state_dict(), weights)
    _save_paddle(optimizer.state_dict(), state)
    _save_json(meta, os.path.join(out_dir, CHECKPOINT + '.json'))
    _remove_checkpoints(out_dir, keep=meta['iteration'])


def _resume(supernet, optimizer, out_dir, identity):
    """The iteration to start from and the seconds trained so far: (0, 0), or those of ``out_dir``'s checkpoint
    (its weights and optimizer state loaded)."""
    path = os.path.join(out_dir, CHECKPOINT + '.json')
    meta = _read_meta(path)
    if meta is None:
        return 0, 0.0
    wrong = _mismatch(meta, identity)
    if wrong:
        raise ConfigError('{} was saved by a supernet training with other {} than this config\'s; give another '
                          'output directory, or delete {}*'.format(path, ', '.join(wrong), os.path.join(
                              out_dir, CHECKPOINT)))
    weights, state = _checkpoint_files(out_dir, meta['iteration'])
    supernet.set_state_dict(paddle.load(weights))
    optimizer.set_state_dict(paddle.load(state))
    logger.info('supernet: going on from the checkpoint of iteration %d in %s', meta['iteration'], out_dir)
    return int(meta['iteration']), float(meta.get('seconds', 0.0))


def load_supernet(cfg, pricer, weights_dir):
    """A trained supernet from ``weights_dir`` (``supernet_weights``, ``--weights``), in eval mode. Weights of
    another space or widest shape are a one-line ConfigError."""
    supernet = Supernet(cfg, pricer)
    return _load_weights(supernet, weights_dir, supernet.identity, ('space', 'widest'))


def _load_weights(supernet, weights_dir, want, keys):
    """``supernet`` with the finished weights of ``weights_dir``, in eval mode, if what they were trained as agrees
    with ``want`` on ``keys``; else a one-line ConfigError."""
    meta = _read_meta(os.path.join(weights_dir, META))
    if meta is None or not os.path.isfile(os.path.join(weights_dir, WEIGHTS)):
        raise ConfigError('{}: no trained supernet there ({} and {}); train one with python tools/supernet.py train '
                          '-c CONFIG --out {}'.format(weights_dir, WEIGHTS, META, weights_dir))
    wrong = [k for k in keys if meta.get(k) != want.get(k)]
    if wrong:
        what = ('it was trained for {}, this config searches {}'.format(meta.get('space'), want['space'])
                if 'space' in wrong else 'its {} differ from this config\'s'.format(', '.join(wrong)))
        raise ConfigError('{}: this supernet does not fit: {}; train one for the config (python tools/supernet.py '
                          'train -c CONFIG --out DIR)'.format(weights_dir, what))
    supernet.set_state_dict(paddle.load(os.path.join(weights_dir, WEIGHTS)))
    supernet.eval()
    return supernet


def weight_dirs(value):
    """``supernet_weights`` / ``--weights`` as a list of directories: one, or several whose scores are averaged."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


@dataclass
class Score:
    tokens: list
    ap: float       # the mean of ``aps``
    aps: list       # one AP per supernet
    seconds: float


class SupernetScorer:
    """A candidate's score: with each supernet, its sub-network's weights, batch norm recalibrated on the same
    ``calib_batches`` training batches for every candidate (the TrainReader's first batches for ``seed``), AP on the
    eval set; the mean over the supernets (measured: two supernets' mean ranks better than either,
    bench/SUPERNET.md). The same supernets and candidate give the same AP."""

    def __init__(self, trainer, supernets, calib_batches, seed=None):
        self.trainer, self.supernets = trainer, list(supernets)
        self.calib_batches = calib_batches
        self.seed = trainer.seed if seed is None else seed
        self._batches = None

    @property
    def batches(self):
        if self._batches is None:  # read once, in this process: the same batches for every candidate
            self._batches = list(create_reader(self.trainer.cfg['TrainReader'], 'train', max_iters=self.calib_batches,
                                               seed=self.seed, worker_num=0))
        return self._batches

    def score(self, tokens):
        start = time.time()
        aps = [self.trainer.evaluate(supernet.recalibrate(tokens, self.batches)) for supernet in self.supernets]
        return Score([int(t) for t in tokens], float(np.mean(aps)), aps, time.time() - start)
