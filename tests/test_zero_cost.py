"""Zero-cost proxies on real Paddle networks and the tiny synthetic set: repeatable, network-specific, finite."""
import math

import numpy as np
import pytest

from ppdet.slim.nas import zero_cost
from ppdet.slim.nas.candidate import CandidateTrainer
from ppdet.slim.nas.config import load_search_config
from search_fixtures import tiny_config, tiny_dataset

PUBLISHED = [2, 1, 3, 8, 2, 1, 2, 1, 1]
SMALL = [0, 0, 0, 0, 0, 0, 0, 0, 0]


@pytest.fixture(scope='module')
def scored(tmp_path_factory):
    """(setup, trainer, batch, {name: scores}) for two networks, the first one scored twice."""
    tmp = tmp_path_factory.mktemp('zero_cost')
    setup = load_search_config(tiny_config(tmp, tiny_dataset(tmp)))
    trainer = CandidateTrainer(setup.cfg)
    batch = zero_cost.minibatch(setup.cfg, seed=0)
    runs = {'published': zero_cost.scores(trainer, setup.pricer, PUBLISHED, batch, seed=0),
            'published again': zero_cost.scores(trainer, setup.pricer, PUBLISHED, zero_cost.minibatch(setup.cfg, 0),
                                                seed=0),
            'small': zero_cost.scores(trainer, setup.pricer, SMALL, batch, seed=0)}
    return setup, trainer, batch, runs


def test_the_same_seed_and_network_give_the_same_scores(scored):
    _, _, _, runs = scored
    assert runs['published'] == runs['published again']


def test_two_networks_score_differently_on_every_proxy(scored):
    _, _, _, runs = scored
    for name in zero_cost.PROXIES + ('params', 'flops'):
        assert runs['published'][name] != runs['small'][name], name


def test_every_proxy_is_finite(scored):
    _, _, _, runs = scored
    for run in runs.values():
        assert set(run) == set(zero_cost.PROXIES) | {'params', 'flops'}
        assert all(math.isfinite(v) for v in run.values()), run


def test_another_seed_changes_the_scores_and_paddles_generator_is_left_as_it_was(scored):
    import paddle
    setup, trainer, batch, runs = scored
    paddle.seed(7)
    expected = paddle.rand([4]).numpy()
    paddle.seed(7)
    other = zero_cost.scores(trainer, setup.pricer, PUBLISHED, batch, seed=1, proxies=('synflow',))
    assert np.array_equal(paddle.rand([4]).numpy(), expected)  # the caller's random stream did not move
    assert other['synflow'] != runs['published']['synflow']
