"""Final re-ranking: which candidates are trained again, with which seeds, and the winner by mean."""
import csv

import pytest

from ppdet.slim.nas.rerank import RerankPlan, rank, rerank_jobs, top_candidates, write_rerank_csv
from ppdet.slim.nas.vocabulary import Settings

REWARDS = [([1, 0], 0.50), ([2, 0], 0.40), ([3, 0], 0.45), ([4, 0], 0.10), ([1, 0], 0.20)]
RETRAINED = {(1, 0): 0.30, (3, 0): 0.44, (2, 0): 0.41}  # the lucky first reward of [1, 0] does not come back


def test_top_candidates_are_distinct_and_best_first():
    assert top_candidates(REWARDS, 3) == [((1, 0), 0.50), ((3, 0), 0.45), ((2, 0), 0.40)]
    assert top_candidates(REWARDS, 10)[-1] == ((4, 0), 0.10)


def test_the_jobs_are_the_top_k_with_the_next_seeds():
    jobs = rerank_jobs(REWARDS, RerankPlan(top_k=2, seeds=2), 5)
    assert [(tuple(t), s) for t, s in jobs] == [((1, 0), 6), ((1, 0), 7), ((3, 0), 6), ((3, 0), 7)]


def test_winner_is_the_best_mean_of_the_search_reward_and_the_retrainings(tmp_path):
    plan = RerankPlan(top_k=3, seeds=2)
    results = {(tuple(t), s): (RETRAINED[tuple(t)] + 0.001 * s, 1.5) for t, s in rerank_jobs(REWARDS, plan, 0)}
    ranked = rank(REWARDS, plan, 0, results)
    assert ranked[0].tokens == [3, 0]  # 0.45, 0.441, 0.442 beats 0.50, 0.301, 0.302
    assert ranked[0].seeds == [0, 1, 2] and ranked[0].aps == pytest.approx([0.45, 0.441, 0.442])
    assert ranked[0].mean == pytest.approx(0.444333, abs=1e-6) and ranked[0].spread > 0
    assert [r.tokens for r in ranked] == [[3, 0], [2, 0], [1, 0]]
    path = str(tmp_path / 'rerank.csv')
    write_rerank_csv(path, results)
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r['tokens'] for r in rows} == {'1 0', '2 0', '3 0'}


def test_a_training_not_finished_is_left_out_of_the_mean():
    plan = RerankPlan(top_k=1, seeds=2)
    ranked = rank(REWARDS, plan, 0, {((1, 0), 2): (0.3, 1.0)})
    assert ranked[0].seeds == [0, 2] and ranked[0].aps == pytest.approx([0.5, 0.3])


def test_plan_from_config_is_off_by_default():
    assert not RerankPlan.from_settings(Settings()).enabled
    assert RerankPlan.from_settings(Settings(rerank_top_k=3, rerank_seeds=1)) == RerankPlan(3, 1)


def test_after_a_supernet_search_each_top_candidate_is_trained_from_the_base_seed_and_its_score_is_not_averaged():
    plan = RerankPlan.from_settings(Settings(evaluator='supernet', rerank_seeds=2))
    assert plan == RerankPlan(5, 2, counts_reward=False)  # on by default: a score is not a training
    jobs = rerank_jobs(REWARDS, RerankPlan(2, 2, counts_reward=False), 5)
    assert [(tuple(t), s) for t, s in jobs] == [((1, 0), 5), ((1, 0), 6), ((3, 0), 5), ((3, 0), 6)]
    results = {((1, 0), 5): (0.30, 1.0), ((1, 0), 6): (0.32, 1.0), ((3, 0), 5): (0.40, 1.0)}
    ranked = rank(REWARDS, RerankPlan(3, 2, counts_reward=False), 5, results)
    assert [r.tokens for r in ranked] == [[3, 0], [1, 0]]  # [2, 0] was never trained: left out
    assert ranked[0].aps == pytest.approx([0.40]) and ranked[0].score == pytest.approx(0.45)
    assert ranked[1].seeds == [5, 6] and ranked[1].mean == pytest.approx(0.31) and ranked[1].score == 0.50
    assert 'supernet AP 0.5000' in ranked[1].describe()
