"""Training for real on a small demo-like set: it beats the untrained network, and a candidate that inherits
starts from its parent's saved weights (not from a parent rebuilt afresh, whose copied/sliced/fresh counts would
look just the same)."""

import numpy as np
import paddle
import pytest

from ppdet.slim.nas.candidate import CandidateTrainer
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.inherit import Parent, plan_names
from search_fixtures import make_dataset, tiny_config

TOKENS = [2, 1, 3, 8, 2, 1, 2, 1, 0]
WIDER = [2, 1, 3, 9, 2, 1, 2, 1, 0]  # a one-token mutation: the last double blocks get 80 channels, not 72


@pytest.fixture(scope='module')
def demo_like(tmp_path_factory):
    """The demo's kind of data (portraits on plain gradients) at 64 px, and its config with a short budget."""
    tmp = tmp_path_factory.mktemp('demo_like')
    data = str(tmp / 'wider')
    make_dataset(data, train=48, val=12, size=64, seed=1, workers=1, scenes=('portraits',), clutter='none')
    return load_search_config(tiny_config(tmp, data, max_iters=150, log_iter=1000), {'TrainReader.batch_size': 8})


def test_training_beats_the_untrained_network(demo_like, tmp_path):
    """The reward measures training: the same initial weights score clearly higher after the candidate's budget."""
    trainer = CandidateTrainer(demo_like.cfg, seed=0)
    model = trainer.build(demo_like.pricer.blazenet_kwargs(TOKENS))
    untrained = trainer.evaluate(model)
    result = trainer.run(model, str(tmp_path))
    assert result.status == 'trained'
    # measured: AP 0.001 untrained, 0.12 trained; the bounds leave room for another machine's arithmetic
    assert result.ap > max(10 * untrained, 0.05), (untrained, result.ap)


def _by_plan_name(state, model):
    names = plan_names(model)
    return {names[k]: np.asarray(v) for k, v in state.items()}


def test_a_child_starts_from_its_parents_saved_weights(demo_like, tmp_path):
    """With a learning rate of 0 the child's convs end as they started: the tensors it copied must be the parent's
    saved ones (shifted here by 0.25 so that no freshly built network has them)."""
    cfg = load_search_config(demo_like.cfg['filename'], {'TrainReader.batch_size': 8, 'max_iters': 1,
                                                         'LearningRate.base_lr': 0.0}).cfg
    trainer = CandidateTrainer(cfg, seed=0)
    parent_kwargs = demo_like.pricer.blazenet_kwargs(TOKENS)
    parent = trainer.build(parent_kwargs)
    saved = {k: v.numpy() + 0.25 for k, v in parent.state_dict().items()}
    weights = str(tmp_path / 'parent.pdparams')
    paddle.save({k: paddle.to_tensor(v) for k, v in saved.items()}, weights)
    result = trainer.candidate(demo_like.pricer.blazenet_kwargs(WIDER), str(tmp_path / 'child'),
                               parent=Parent(parent_kwargs, weights))
    report = result.inherited
    assert report.copied and report.sliced and not report.fresh
    child = trainer.build(demo_like.pricer.blazenet_kwargs(WIDER))
    after = _by_plan_name({k: v.numpy() for k, v in paddle.load(result.weights).items()}, child)
    before = _by_plan_name(saved, parent)
    convs = [n for n in report.copied + report.sliced if after[n].ndim == 4]
    assert len(convs) > 10
    for name in convs:  # conv weights: what the parent saved (the overlap, where channels differ)
        region = tuple(slice(0, min(a, b)) for a, b in zip(after[name].shape, before[name].shape))
        np.testing.assert_allclose(after[name][region], before[name][region], rtol=0, atol=1e-6, err_msg=name)
