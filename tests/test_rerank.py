"""Final re-ranking: which candidates are trained again, the winner by mean, and what a resume trains again."""
import os

import pytest

from ppdet.slim.nas.rerank import RerankLog, RerankPlan, rerank, top_candidates

REWARDS = [([1, 0], 0.50), ([2, 0], 0.40), ([3, 0], 0.45), ([4, 0], 0.10), ([1, 0], 0.20)]


def test_top_candidates_are_distinct_and_best_first():
    assert top_candidates(REWARDS, 3) == [((1, 0), 0.50), ((3, 0), 0.45), ((2, 0), 0.40)]
    assert top_candidates(REWARDS, 10)[-1] == ((4, 0), 0.10)


class Trainings:
    """What each re-training returns: the lucky first reward of [1, 0] does not come back."""
    ap = {(1, 0): 0.30, (3, 0): 0.44, (2, 0): 0.41}

    def __init__(self):
        self.calls = []

    def __call__(self, tokens, seed):
        self.calls.append((tuple(tokens), seed))
        return self.ap[tuple(tokens)] + 0.001 * seed, 1.5


def test_winner_is_the_best_mean_and_every_training_is_written(tmp_path):
    train = Trainings()
    ranked = rerank(REWARDS, RerankPlan(top_k=3, seeds=2), 0, str(tmp_path), train)
    assert sorted(train.calls) == sorted((t, s) for t in [(1, 0), (3, 0), (2, 0)] for s in (1, 2))
    assert ranked[0].tokens == [3, 0]  # 0.45, 0.441, 0.442 beats 0.50, 0.301, 0.302
    assert ranked[0].seeds == [0, 1, 2] and ranked[0].aps == pytest.approx([0.45, 0.441, 0.442])
    assert ranked[0].mean == pytest.approx(0.444333, abs=1e-6) and ranked[0].spread > 0
    assert [r.tokens for r in ranked] == [[3, 0], [2, 0], [1, 0]]
    assert len(RerankLog(os.path.join(str(tmp_path), 'rerank.csv')).rows) == 6


def test_a_resumed_rerank_trains_only_what_is_missing(tmp_path):
    first = Trainings()
    plan = RerankPlan(top_k=2, seeds=2)
    ranked = rerank(REWARDS, plan, 0, str(tmp_path), first)
    again = Trainings()
    assert [r.aps for r in rerank(REWARDS, plan, 0, str(tmp_path), again)] == [r.aps for r in ranked]
    assert again.calls == []
    log = RerankLog(os.path.join(str(tmp_path), 'rerank.csv'))  # a kill after three of the four trainings
    log.rows = log.rows[:3]
    log.append([9, 9], 5, 0.0, 0.0)  # (and a row of another search's candidate, ignored)
    resumed = Trainings()
    rerank(REWARDS, plan, 0, str(tmp_path), resumed)
    assert resumed.calls == [first.calls[3]]


def test_plan_from_config_is_off_by_default():
    assert not RerankPlan.from_config({}).enabled
    assert RerankPlan.from_config({'rerank_top_k': 3, 'rerank_seeds': 1}) == RerankPlan(3, 1)


def test_a_new_search_in_an_old_save_dir_does_not_reuse_its_rows(tmp_path):
    rerank(REWARDS, RerankPlan(top_k=1, seeds=1), 0, str(tmp_path), Trainings())
    fresh = Trainings()
    rerank(REWARDS, RerankPlan(top_k=1, seeds=1), 0, str(tmp_path), fresh, resume=False)
    assert fresh.calls == [((1, 0), 1)]
    assert len(RerankLog(os.path.join(str(tmp_path), 'rerank.csv')).rows) == 1
