"""Learning-rate schedules and optimizers configured the way PaddleDetection 0.x configured them.

The YAML of the original (``LearningRate`` with ``!PiecewiseDecay``/``!LinearWarmup`` schedulers and an
``OptimizerBuilder`` naming a fluid optimizer) is read unchanged; what it builds are today's dygraph
``paddle.optimizer.lr`` schedulers and ``paddle.optimizer`` optimizers. Schedulers count iterations: call
``step()`` once per training iteration, as fluid's global step counter did.
"""
import inspect

import paddle
from paddle.optimizer.lr import LRScheduler

from ppdet.core.workspace import ConfigError, build, register

__all__ = ['PiecewiseDecay', 'CosineDecay', 'LinearWarmup', 'LearningRate', 'OptimizerBuilder']


@register
class PiecewiseDecay(object):
    """Step decay at absolute iteration numbers.

    ``values`` gives the learning rates outright; otherwise they are ``base_lr`` followed by ``base_lr * g`` for
    each ``g`` of ``gamma``. A float ``gamma`` means ``[gamma, gamma / 10, ...]``, one per milestone, as ppdet
    read it, so ``gamma: 0.1`` with two milestones decays to 0.1x and then 0.01x. ``gamma`` defaults to None,
    meaning ppdet's default ``[0.1, 0.01]``: the workspace checks a YAML value against the kind of its default,
    and a list default would reject the float the original config gives.
    """

    def __init__(self, gamma=None, milestones=[60000, 80000], values=None):
        if gamma is None:
            self.gamma = [0.1, 0.01]
        elif isinstance(gamma, (list, tuple)):
            self.gamma = list(gamma)
        else:
            self.gamma = [gamma / 10 ** i for i in range(len(milestones))]
        self.milestones = list(milestones)
        self.values = None if values is None else list(values)

    def __call__(self, base_lr, learning_rate=None, budget=None):
        """Return the schedule; like the original it replaces, not wraps, any earlier ``learning_rate``."""
        if self.values is not None:
            values, source = self.values, 'values'
        else:
            values, source = [base_lr] + [base_lr * g for g in self.gamma], 'base_lr and gamma'
        if len(values) != len(self.milestones) + 1:
            raise ConfigError('PiecewiseDecay: {} milestones need {} learning rates, got {} from {}'.format(
                len(self.milestones), len(self.milestones) + 1, len(values), source))
        return paddle.optimizer.lr.PiecewiseDecay(boundaries=self.milestones, values=values)


class _GlobalStepWarmup(paddle.optimizer.lr.LinearWarmup):
    """Paddle's LinearWarmup, except that the wrapped schedule keeps counting from iteration 0.

    Paddle restarts the wrapped scheduler at the end of the warm-up (it sees ``step - warmup_steps``), which
    would move every milestone ``warmup_steps`` later; fluid's ``linear_lr_warmup`` gave the wrapped schedule
    the global step, so milestones in the config are absolute iterations.
    """

    def get_lr(self):
        if self.last_epoch >= self.warmup_steps and isinstance(self.learning_rate, LRScheduler):
            self.learning_rate.step(self.last_epoch)
            return self.learning_rate()
        return super().get_lr()


@register
class CosineDecay(object):
    """Cosine decay from ``base_lr`` to ``base_lr * min_factor`` over ``max_iters`` iterations, by default the
    training's own budget (``max_iters`` of the config, or of the candidate's re-training).

    Not in the original: its milestones (240k, 300k) lie far beyond a candidate's 5000 iterations, so a candidate
    never sees a decay and its AP is read off a noisy, still-high learning rate. A schedule that ends with the budget
    settles the weights before they are evaluated (bench/SEARCH_QUALITY.md measures what that does to the ranking).
    """

    def __init__(self, max_iters=None, min_factor=0.):
        self.max_iters = max_iters
        self.min_factor = min_factor

    def __call__(self, base_lr, learning_rate=None, budget=None):
        steps = self.max_iters or budget
        if not steps or steps <= 0:
            raise ConfigError('CosineDecay: no max_iters and no training budget to fit; set CosineDecay.max_iters')
        return paddle.optimizer.lr.CosineAnnealingDecay(base_lr, T_max=int(steps), eta_min=base_lr * self.min_factor)


@register
class LinearWarmup(object):
    """Linear ramp from ``base_lr * start_factor`` to ``base_lr`` over ``steps`` iterations, then the schedule
    it wraps (or ``base_lr`` when it is the first scheduler)."""

    def __init__(self, steps=500, start_factor=1. / 3):
        self.steps = steps
        self.start_factor = start_factor

    def __call__(self, base_lr, learning_rate=None, budget=None):
        return _GlobalStepWarmup(learning_rate=base_lr if learning_rate is None else learning_rate,
                                 warmup_steps=self.steps, start_lr=base_lr * self.start_factor, end_lr=base_lr)


@register
class LearningRate(object):
    """``base_lr`` shaped by ``schedulers`` applied in order, each receiving the schedule built so far."""

    def __init__(self, base_lr=0.01, schedulers=[PiecewiseDecay(), LinearWarmup()]):
        self.base_lr = base_lr
        self.schedulers = [build(s) for s in schedulers]
        for sched in self.schedulers:
            if not callable(sched):
                raise ConfigError('LearningRate.schedulers: {!r} is not a scheduler such as !PiecewiseDecay'.format(
                    sched))

    def __call__(self, budget=None):
        """Return a ``paddle.optimizer.lr.LRScheduler``; step it once per iteration. ``budget``: the iterations
        the training will run, for schedules fitted to it (``!CosineDecay``)."""
        if not self.schedulers:
            raise ConfigError('LearningRate.schedulers is empty; give at least one, e.g. !PiecewiseDecay')
        lr = None
        for sched in self.schedulers:
            lr = sched(self.base_lr, lr, budget=budget)
        return lr


# fluid class names map to today's; RMSProp's defaults are pinned to fluid's so a change of Paddle's own
# defaults cannot silently change the search's training.
_OPTIMIZER_NAMES = {'RMSPropOptimizer': 'RMSProp', 'MomentumOptimizer': 'Momentum', 'SGDOptimizer': 'SGD',
                    'AdamOptimizer': 'Adam', 'RMSProp': 'RMSProp', 'Momentum': 'Momentum', 'SGD': 'SGD',
                    'Adam': 'Adam'}
_FLUID_DEFAULTS = {'RMSProp': {'rho': 0.95, 'epsilon': 1e-6, 'momentum': 0.0, 'centered': False}}
_BUILDER_ARGS = ('self', 'learning_rate', 'parameters', 'weight_decay', 'grad_clip')
_REGULARIZERS = {'L1': paddle.regularizer.L1Decay, 'L2': paddle.regularizer.L2Decay}


def _optimizer_class_and_args(optimizer):
    """Resolve ``{'type': name, **args}`` to a Paddle optimizer class and its arguments, or raise ConfigError."""
    args = dict(optimizer)
    name = args.pop('type', None)
    if name not in _OPTIMIZER_NAMES:
        raise ConfigError('OptimizerBuilder.optimizer.type: unknown optimizer {!r}; known: {}'.format(
            name, ', '.join(_OPTIMIZER_NAMES)))
    cls = getattr(paddle.optimizer, _OPTIMIZER_NAMES[name])
    known = [k for k in inspect.signature(cls.__init__).parameters if k not in _BUILDER_ARGS]
    for key in args:
        if key not in known:
            raise ConfigError('OptimizerBuilder.optimizer: {} has no key {!r}; known keys: {}'.format(
                name, key, ', '.join(known)))
    return cls, dict(_FLUID_DEFAULTS.get(cls.__name__, {}), **args)


def _weight_decay(regularizer):
    """Resolve ``{'type': 'L2', 'factor': f}`` to a Paddle regularizer (None when not configured)."""
    if not regularizer:
        return None
    extra = set(regularizer) - {'type', 'factor'}
    if extra:
        raise ConfigError('OptimizerBuilder.regularizer has no key {!r}; known keys: type, factor'.format(
            sorted(extra)[0]))
    if regularizer.get('type') not in _REGULARIZERS:
        raise ConfigError('OptimizerBuilder.regularizer.type: unknown regularizer {!r}; known: {}'.format(
            regularizer.get('type'), ', '.join(_REGULARIZERS)))
    if 'factor' not in regularizer:
        raise ConfigError('OptimizerBuilder.regularizer: missing key \'factor\'')
    return _REGULARIZERS[regularizer['type']](regularizer['factor'])


@register
class OptimizerBuilder(object):
    """Build the optimizer named in the config.

    The regularizer applies to every parameter whose ParamAttr has none of its own (a ParamAttr regularizer,
    such as the heads' ``L2Decay(0.)`` on biases, wins), and ParamAttr learning-rate multipliers scale the
    learning rate per parameter, both as in fluid. The config is checked here so a typo fails before training.
    """

    def __init__(self, clip_grad_by_norm=None, regularizer={'type': 'L2', 'factor': .0001},
                 optimizer={'type': 'Momentum', 'momentum': .9}):
        self.clip_grad_by_norm = clip_grad_by_norm
        self.regularizer = regularizer
        self.optimizer = optimizer
        self._cls, self._args = _optimizer_class_and_args(optimizer)
        self._weight_decay = _weight_decay(regularizer)

    def __call__(self, learning_rate, parameters):
        """Return a ``paddle.optimizer.Optimizer`` over ``parameters`` (a float or an LRScheduler)."""
        grad_clip = None
        if self.clip_grad_by_norm is not None:
            grad_clip = paddle.nn.ClipGradByGlobalNorm(clip_norm=self.clip_grad_by_norm)
        return self._cls(learning_rate=learning_rate, parameters=parameters, weight_decay=self._weight_decay,
                         grad_clip=grad_clip, **self._args)
