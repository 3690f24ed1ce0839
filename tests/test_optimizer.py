"""Learning-rate schedules and optimizers built from the original config, checked against hand computation."""
import numpy as np
import paddle
import pytest

from ppdet.core.workspace import AttrDict, ConfigError, Tagged, create, load_config
from ppdet.optimizer import CosineDecay, LearningRate, LinearWarmup, OptimizerBuilder, PiecewiseDecay

ORIGINAL_CONFIG = """
LearningRate:
  base_lr: 0.001
  schedulers:
  - !PiecewiseDecay
    gamma: 0.1
    milestones: [240000, 300000]
OptimizerBuilder:
  optimizer: {momentum: 0.0, type: RMSPropOptimizer}
  regularizer: {factor: 0.0005, type: L2}
"""


@pytest.fixture
def original_config(tmp_path):
    path = tmp_path / 'blazeface_nas.yml'
    path.write_text(ORIGINAL_CONFIG)
    return AttrDict(load_config(str(path)))


def lr_at(scheduler, steps):
    """The learning rate at each iteration in ``steps``, stepping once per iteration as training does."""
    rates = {}
    for it in range(max(steps) + 1):
        if it in steps:
            rates[it] = scheduler()
        scheduler.step()
    return rates


def test_original_schedule_changes_at_the_milestones(original_config):
    scheduler = create('LearningRate', original_config)()
    assert isinstance(scheduler, paddle.optimizer.lr.LRScheduler)
    expected = {0: 1e-3, 239999: 1e-3, 240000: 1e-4, 299999: 1e-4, 300000: 1e-5, 400000: 1e-5}
    for it, lr in expected.items():
        scheduler.step(it)
        assert scheduler() == pytest.approx(lr, rel=1e-9), it


def test_warmup_ramps_then_milestones_count_from_iteration_zero():
    scheduler = LearningRate(base_lr=0.3, schedulers=[PiecewiseDecay(gamma=[0.5], milestones=[6]),
                                                      LinearWarmup(steps=4, start_factor=0.25)])()
    # ramp 0.075 -> 0.3 over 4 iterations; the decay at 6 is global (Paddle's own warmup would shift it to 10)
    expected = {0: 0.075, 2: 0.1875, 4: 0.3, 5: 0.3, 6: 0.15, 9: 0.15}
    assert lr_at(scheduler, set(expected)) == pytest.approx(expected)


def test_default_learning_rate_matches_ppdet_defaults():
    scheduler = LearningRate()()
    scheduler.step(250)
    assert scheduler() == pytest.approx(0.01 * (1 / 3 + 2 / 3 * 0.5))
    scheduler.step(60000)
    assert scheduler() == pytest.approx(0.001)
    scheduler.step(80000)
    assert scheduler() == pytest.approx(0.0001)


def test_schedulers_given_as_tagged_yaml_nodes_are_built():
    tagged = Tagged(PiecewiseDecay, {'values': [1.0, 0.5, 0.2], 'milestones': [2, 3]})
    assert lr_at(LearningRate(schedulers=[tagged])(), {1, 2, 3}) == pytest.approx({1: 1.0, 2: 0.5, 3: 0.2})


def test_piecewise_values_must_match_milestones():
    with pytest.raises(ConfigError, match='2 milestones need 3'):
        LearningRate(schedulers=[PiecewiseDecay(values=[1.0, 0.1], milestones=[5, 9])])()


COSINE_CONFIG = """
LearningRate:
  base_lr: 0.01
  schedulers:
  - !CosineDecay {}
"""


def test_cosine_is_fitted_to_the_training_budget(tmp_path):
    path = tmp_path / 'cosine.yml'
    path.write_text(COSINE_CONFIG)
    for budget in (300, 1200):
        scheduler = create('LearningRate', AttrDict(load_config(str(path))))(budget=budget)
        rates = lr_at(scheduler, {0, budget // 2, budget - 1})
        assert rates[0] == pytest.approx(0.01)
        assert rates[budget // 2] == pytest.approx(0.005)  # half way down at half the budget, whatever it is
        assert rates[budget - 1] < 0.01 * 1e-3  # and (nearly) zero at its last iteration


def test_cosine_with_warmup_and_a_floor():
    scheduler = LearningRate(base_lr=0.2, schedulers=[CosineDecay(min_factor=0.1),
                                                      LinearWarmup(steps=10, start_factor=0.5)])(budget=100)
    rates = lr_at(scheduler, {0, 10, 50, 100})
    assert rates[0] == pytest.approx(0.1) and rates[10] == pytest.approx(0.2 * (0.1 + 0.9 * (1 + np.cos(np.pi * 0.1)) / 2))
    assert rates[50] == pytest.approx(0.2 * 0.55) and rates[100] == pytest.approx(0.02)


def test_cosine_without_a_budget_names_the_key():
    with pytest.raises(ConfigError, match='CosineDecay.max_iters'):
        LearningRate(schedulers=[CosineDecay()])()
    assert lr_at(LearningRate(schedulers=[CosineDecay(max_iters=10)])(), {5}) == pytest.approx({5: 0.005})


def test_the_trainer_fits_the_schedule_to_its_budget(tmp_path):
    """CandidateTrainer hands its max_iters to the schedule."""
    from ppdet.slim.nas.candidate import CandidateTrainer
    path = tmp_path / 'cosine.yml'
    for budget in (40, 8):
        path.write_text(COSINE_CONFIG + OPTIMIZER_SECTION + 'max_iters: {}\n'.format(budget))
        trainer = CandidateTrainer(AttrDict(load_config(str(path))))
        lr, _ = trainer.optimizer(paddle.nn.Linear(2, 2), trainer.max_iters)
        assert lr.T_max == budget


OPTIMIZER_SECTION = """
OptimizerBuilder:
  optimizer: {momentum: 0.0, type: RMSPropOptimizer}
  regularizer: {factor: 0.0005, type: L2}
"""


class Tiny(paddle.nn.Layer):
    """y = head_w * (conv_w * x) + head_b on a 1x1 image, with the BlazeFace ParamAttrs: conv weights at lr
    0.1, head bias at lr 2.0 and no L2, head weight at the defaults."""

    def __init__(self):
        super().__init__()
        attr = paddle.ParamAttr
        const = paddle.nn.initializer.Constant
        self.conv = paddle.nn.Conv2D(1, 1, 1, weight_attr=attr(learning_rate=0.1, initializer=const(0.5)),
                                     bias_attr=False)
        self.head = paddle.nn.Conv2D(1, 1, 1, weight_attr=attr(initializer=const(-0.3)),
                                     bias_attr=attr(learning_rate=2.0, initializer=const(0.7),
                                                    regularizer=paddle.regularizer.L2Decay(0.)))

    def forward(self, x):
        return self.head(self.conv(x))

    def values(self):
        return np.array([p.numpy().item() for p in (self.conv.weight, self.head.weight, self.head.bias)])


LR_MULT = np.array([0.1, 1.0, 2.0])
HAS_L2 = np.array([1.0, 1.0, 0.0])


def grads(params, x):
    """Hand-derived d(sum y)/d(conv_w, head_w, head_b) for input x (before any regularization)."""
    conv_w, head_w, _ = params
    return np.array([head_w * x, conv_w * x, 1.0])


def train(builder, lr, x, steps):
    paddle.seed(0)
    model = Tiny()
    optimizer = builder(lr, model.parameters())
    for _ in range(steps):
        model(paddle.full([1, 1, 1, 1], x)).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
    return model.values()


@pytest.mark.parametrize('name', ['SGDOptimizer', 'SGD', 'MomentumOptimizer', 'Momentum'])
def test_first_step_applies_lr_multipliers_and_param_regularizers(name):
    builder = OptimizerBuilder(regularizer={'type': 'L2', 'factor': 0.5}, optimizer={'type': name})
    params = np.array([0.5, -0.3, 0.7])
    g = grads(params, 2.0) + 0.5 * HAS_L2 * params
    np.testing.assert_allclose(train(builder, 0.1, 2.0, 1), params - 0.1 * LR_MULT * g, rtol=1e-6)


@pytest.mark.parametrize('optimizer', [{'type': 'RMSPropOptimizer', 'momentum': 0.0}, {'type': 'RMSProp'}])
def test_rmsprop_follows_fluid_defaults(optimizer):
    builder = OptimizerBuilder(regularizer={'type': 'L2', 'factor': 0.0005}, optimizer=optimizer)
    params = np.array([0.5, -0.3, 0.7])
    mean_square = np.zeros(3)
    x = 0.01  # gradients ~5e-3, so the L2 term, rho and epsilon all move the result
    for _ in range(3):
        g = grads(params, x) + 0.0005 * HAS_L2 * params
        mean_square = 0.95 * mean_square + 0.05 * g ** 2
        params = params - 0.001 * LR_MULT * g / np.sqrt(mean_square + 1e-6)
    np.testing.assert_allclose(train(builder, 0.001, x, 3), params, rtol=1e-5)


def test_original_config_builds_rmsprop_with_l2(original_config):
    optimizer = create('OptimizerBuilder', original_config)(0.001, Tiny().parameters())
    assert isinstance(optimizer, paddle.optimizer.RMSProp)
    assert isinstance(optimizer.regularization, paddle.regularizer.L2Decay)


def test_clip_grad_by_norm_clips_the_global_norm():
    builder = OptimizerBuilder(clip_grad_by_norm=0.1, regularizer=None, optimizer={'type': 'SGD'})
    params = np.array([0.5, -0.3, 0.7])
    g = grads(params, 2.0)
    expected = params - LR_MULT * g * 0.1 / np.linalg.norm(g)
    np.testing.assert_allclose(train(builder, 1.0, 2.0, 1), expected, rtol=1e-5)


@pytest.mark.parametrize('kwargs, named', [
    ({'optimizer': {'type': 'AdaGradOptimizer'}}, "'AdaGradOptimizer'"),
    ({'optimizer': {'momentum': 0.9}}, 'None'),
    ({'optimizer': {'type': 'RMSPropOptimizer', 'mometum': 0.0}}, "'mometum'"),
    ({'optimizer': {'type': 'Momentum', 'regularization': 0.1}}, "'regularization'"),
    ({'regularizer': {'type': 'L3', 'factor': 0.1}}, "'L3'"),
    ({'regularizer': {'type': 'L2', 'coeff': 0.1}}, "'coeff'"),
    ({'regularizer': {'type': 'L2'}}, "'factor'"),
])
def test_config_mistakes_raise_config_error_naming_them(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        OptimizerBuilder(**kwargs)
