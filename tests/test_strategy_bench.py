"""The search-quality benchmark's parts: the ground truth's loader (and the committed data file), the surrogate's
interface, and the driver that runs the product's own search loop on surrogate rewards."""
import json
import os

import numpy as np
import pytest

from bench import strategy_quality
from bench.ground_truth import BAND, DEFAULT_OUT, DEFAULT_TABLE, demo_limit, load_setup
from bench.surrogate import (KINDS, GroundTruthError, Surrogate, best_kind, fit_report, load_ground_truth, seed_noise,
                             seed_pairs, spearman)
from search_fixtures import tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, 'demo.yml')


@pytest.fixture(scope='module')
def setup():
    return load_setup(DEMO, DEFAULT_TABLE)


def _row(tokens, seed, ap, **extra):
    return dict({'tokens': list(tokens), 'seed': seed, 'ap': ap, 'status': 'trained', 'flops': 1e6, 'params': 1e4,
                 'latency_us': 2000.0, 'train_seconds': 50.0, 'band': False}, **extra)


def _write(path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return str(path)


# --- the loader
def test_loader_reads_trainings_and_leaves_failed_ones_out(tmp_path):
    path = _write(tmp_path / 'gt.jsonl', [_row([1] * 9, 0, 0.3), _row([1] * 9, 1, 0.25, band=True),
                                          _row([2] * 9, 0, 0.0, status='failed')])
    trainings = load_ground_truth(path)
    assert [(t.tokens, t.seed, t.ap, t.band) for t in trainings] == [((1,) * 9, 0, 0.3, False),
                                                                    ((1,) * 9, 1, 0.25, True)]


@pytest.mark.parametrize('line, says', [
    ('{"tokens": [1]', 'line 2: not JSON'),
    (json.dumps({k: v for k, v in _row([1] * 9, 0, 0.3).items() if k != 'ap'}), "line 2: no 'ap'"),
    (json.dumps(_row([1] * 9, '0', 0.3)), "line 2: seed is '0', not a int"),
    (json.dumps(_row([1] * 9, 0, 0.3, band='yes')), "line 2: band is 'yes', not a bool"),
])
def test_a_bad_line_is_one_error_naming_file_line_and_key(tmp_path, line, says):
    path = tmp_path / 'gt.jsonl'
    path.write_text(json.dumps(_row([1] * 9, 0, 0.3)) + '\n' + line + '\n')
    with pytest.raises(GroundTruthError) as e:
        load_ground_truth(str(path))
    assert str(e.value).startswith(str(path)) and says in str(e.value)
    assert '\n' not in str(e.value)


def test_a_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(GroundTruthError, match='bench/ground_truth.py --out'):
        load_ground_truth(str(tmp_path / 'none.jsonl'))


def test_seed_noise_and_agreement_of_pairs(tmp_path):
    rows = []
    for i, (a, b) in enumerate([(0.1, 0.2), (0.3, 0.5), (0.5, 0.4), (0.7, 0.9)]):
        rows += [_row([i] * 9, 0, a, band=i < 2), _row([i] * 9, 1, b, band=i < 2)]
    rows.append(_row([9] * 9, 0, 0.5))  # one seed only: in no pair
    trainings = load_ground_truth(_write(tmp_path / 'gt.jsonl', rows))
    pairs = seed_pairs(trainings)
    assert len(pairs) == 4 and len(seed_pairs(trainings, band_only=True)) == 2
    assert seed_noise(pairs) == pytest.approx(np.sqrt((0.01 + 0.04 + 0.01 + 0.04) / 4 / 2))
    assert spearman([a for _, a, _ in pairs], [b for _, _, b in pairs]) == pytest.approx(0.8)


def test_the_committed_ground_truth_was_made_with_the_committed_table(setup):
    """Every line prices as the fixed table prices it now, and its band flag is its latency's distance to the demo
    limit: the data, the table and the limit the benchmark uses agree."""
    trainings = load_ground_truth(DEFAULT_OUT)
    assert len(trainings) >= 2
    limit = demo_limit(setup)
    for t in trainings:
        price = setup.pricer.price(list(t.tokens))
        assert (price.latency_us, price.flops) == (pytest.approx(t.latency_us), t.flops), t
        assert t.band == (abs(t.latency_us / limit - 1) <= BAND), (t, limit)


# --- the surrogate
def _synthetic_truth(setup, count, noise, seed=0):
    """Trainings whose mean AP grows with the widths (a known order), with seeds 0 and 1 of the given noise."""
    from ppdet.slim.nas.latency import sample_candidates
    rng = np.random.default_rng(seed)
    candidates = sample_candidates(setup.space, count, seed)
    truth = {tuple(t): 0.05 * t[1] + 0.02 * t[2] + 0.03 * t[3] + 0.01 * t[0] for t in candidates}
    rows = [_row(t, s, m + noise * rng.standard_normal()) for t, m in truth.items() for s in (0, 1)]
    return rows, truth


@pytest.fixture(scope='module')
def fitted(setup, tmp_path_factory):
    rows, truth = _synthetic_truth(setup, 60, 0.01)
    path = _write(tmp_path_factory.mktemp('surrogate') / 'gt.jsonl', rows)
    trainings = load_ground_truth(path)
    surrogate = Surrogate.fit(trainings, setup.space, setup.space_name, 'gp')
    model = str(tmp_path_factory.getbasetemp() / 'surrogate.joblib')
    surrogate.save(model)
    return surrogate, truth, trainings, model


def test_the_surrogate_ranks_candidates_it_was_not_fitted_on(setup, fitted):
    surrogate, _, _, _ = fitted
    rows, truth = _synthetic_truth(setup, 40, 0.0, seed=1)
    held_out = [t for t in truth if t not in fitted[1]]
    assert len(held_out) >= 30
    assert spearman(surrogate.mean(held_out, setup.space), [truth[t] for t in held_out]) > 0.8
    assert surrogate.noise_sd == pytest.approx(0.01, rel=0.3)


def test_a_draw_is_the_same_for_the_same_candidate_seed_and_repeat(setup, fitted):
    surrogate = fitted[0]
    tokens = next(iter(fitted[1]))
    assert surrogate.draw(tokens, 0, 3, setup.space) == surrogate.draw(tokens, 0, 3, setup.space)
    others = {surrogate.draw(tokens, s, r, setup.space) for s, r in ((1, 3), (0, 4))}
    assert surrogate.draw(tokens, 0, 3, setup.space) not in others
    draws = [surrogate.draw(tokens, s, 0, setup.space) for s in range(400)]
    assert np.mean(draws) == pytest.approx(surrogate.mean([tokens], setup.space)[0], abs=4 * surrogate.noise_sd / 20)
    assert np.std(draws) == pytest.approx(surrogate.noise_sd, rel=0.15)


def test_the_saved_surrogate_predicts_as_the_fitted_one(setup, fitted):
    surrogate, truth, _, model = fitted
    tokens = list(truth)[:10]
    loaded = Surrogate.load(model)
    np.testing.assert_array_equal(loaded.mean(tokens, setup.space), surrogate.mean(tokens, setup.space))
    assert (loaded.kind, loaded.noise_sd, loaded.space_name) == ('gp', surrogate.noise_sd, setup.space_name)
    with pytest.raises(GroundTruthError, match='bench/surrogate.py --out'):
        Surrogate.load(model + '.missing')


def test_fit_report_has_the_ceiling_and_the_held_out_fit(setup, fitted):
    report = fit_report(fitted[2], setup.space)
    entry = report['all']
    assert entry['candidates'] == 60 and entry['noise_sd'] == pytest.approx(0.01, rel=0.3)
    assert entry['seed_spearman'] > 0.9 and all(entry[kind]['vs_mean'] > 0.7 for kind in KINDS)
    chosen = best_kind(report)  # the kind bench/surrogate.py saves
    assert all(entry[chosen]['vs_mean'] >= entry[kind]['vs_mean'] for kind in KINDS)


# --- the driver: the product's search loop on surrogate rewards
@pytest.fixture(scope='module')
def reference(setup, fitted):
    return strategy_quality.Reference(fitted[0], setup, demo_limit(setup), count=3000)


@pytest.fixture(scope='module')
def data_overrides(tmp_path_factory):
    data = tiny_dataset(tmp_path_factory.mktemp('bench_data'))  # preflight checks the readers' data exist
    return {'TrainReader.dataset.dataset_dir': data, 'EvalReader.dataset.dataset_dir': data}


@pytest.mark.parametrize('strategy', ['sanas', 'evolution'])
def test_a_short_run_gives_the_same_pick_twice_within_the_limit(setup, fitted, reference, data_overrides, strategy):
    runs = [strategy_quality.run_one(strategy, 8, 1, fitted[0], reference, DEMO, data_overrides) for _ in range(2)]
    first, second = runs
    assert first['pick'] == second['pick'] and first['regret'] == second['regret']
    assert first['trainings'] == 8  # the budget, as the search counts it
    assert first['pick_latency_us'] <= reference.limit
    assert setup.pricer.price(first['pick']).latency_us == first['pick_latency_us']
    assert 0 <= first['regret'] and 0 < first['hypervolume'] <= 1


def test_the_pick_follows_the_rewards(setup, fitted, reference, data_overrides):
    """The pick is the report's: with rewards that favour small networks, the same search picks another one."""
    flipped = Surrogate(fitted[0].model, fitted[0].noise_sd, fitted[0].space_name, 0, 'gp')
    flipped.mean = lambda tokens, space: -fitted[0].mean(tokens, space)
    up = strategy_quality.run_one('random', 8, 2, fitted[0], reference, DEMO, data_overrides)
    down = strategy_quality.run_one('random', 8, 2, flipped, reference, DEMO, data_overrides)
    assert up['pick'] != down['pick']
    assert fitted[0].mean([up['pick']], setup.space)[0] > fitted[0].mean([down['pick']], setup.space)[0]


def test_hypervolume_of_a_front():
    assert strategy_quality.hypervolume([(1.0, 0.5)], 3.0, 0.0) == pytest.approx(2.0 * 0.5)
    # a dominated point adds nothing; a point past the limit counts for nothing
    assert strategy_quality.hypervolume([(1.0, 0.5), (2.0, 0.4), (5.0, 0.9)], 3.0, 0.0) == pytest.approx(1.0)
    assert strategy_quality.hypervolume([(1.0, 0.5), (2.0, 0.8)], 3.0, 0.0) == pytest.approx(0.5 + 0.8)


def test_a_real_check_section_has_each_search_its_iterations_and_both_seeds(tmp_path):
    row = {'strategy': 'tpe+hyperband', 'steps': 25, 'pick': [1] * 9, 'reported_ap': 0.31, 'iterations': 5100,
           'train_seconds': 600.0, 'wall_seconds': 330.0, 'latency_us': 3400.0, 'ap_seeds': [0.3, 0.2],
           'surrogate_mean_ap': 0.27, 'benchmark_mean_pick_ap': None}
    lines = strategy_quality.real_check_text(_write(tmp_path / 'check.jsonl', [row]), 'Pruning', 'cmd', 'searches')
    assert lines[0] == '### Pruning' and '25 search steps' in lines[2] and '(6 in all' in lines[2]
    row = '| tpe+hyperband | 1 1 1 1 1 1 1 1 1 | 3400 | 5100 | 10.0 | 5.5 | 0.310 | 0.300, 0.200 (0.250) | 0.270 | - |'
    assert row in lines
    missing = strategy_quality.real_check_text(str(tmp_path / 'none.jsonl'), 'Pruning', 'cmd', 'searches')
    assert missing[2] == 'Not run yet: `cmd` (searches).'


def test_the_rerank_section_sets_each_variant_beside_the_demos_own(tmp_path, monkeypatch):
    def result(regret, rerank_top_k):
        return {'strategy': 'tpe', 'budget': 300, 'repeat': 0, 'pick_mean_ap': 0.3, 'regret': regret,
                'hypervolume': 0.5, 'seconds': 1.0, 'overrides': {'rerank_top_k': rerank_top_k}}
    none = _write(tmp_path / 'none.jsonl', [result(0.05, 0), dict(result(0.03, 0), repeat=1)])
    monkeypatch.setattr(strategy_quality, 'RERANK_VARIANTS', (('none', none), ('5x2', str(tmp_path / 'absent.jsonl'))))
    demo = strategy_quality.summarize([result(0.02, 2)])
    lines = strategy_quality.rerank_text(demo)
    assert lines[4] == '| re-ranking | tpe at 300 |'
    assert lines[6].startswith('| none | 0.0400 ± 0.0100 (AP 0.300; n=2) |')
    assert 'demo.yml' in lines[7] and '0.0200 ± 0.0000' in lines[7] and len(lines) == 9


# --- the strategies judged on the ground truth itself
@pytest.fixture(scope='module')
def pool(setup):
    from bench.ground_truth_search import Pool
    return Pool(load_ground_truth(DEFAULT_OUT), demo_limit(setup), list(setup.space.range_table()))


def test_the_restriction_trains_only_admitted_ground_truth_candidates_and_largest_its_most_expensive(setup, pool):
    from bench.ground_truth_search import restricted_search
    limit = demo_limit(setup)
    assert pool.tokens and all(pool.latency[t] <= limit for t in pool.tokens)
    trained = restricted_search('tpe', 12, 0, setup, pool, pool.rewards(0))
    assert len(set(trained)) == 12 and set(trained) <= set(pool.tokens)
    assert restricted_search('largest', 5, 0, setup, pool, pool.rewards(0)) == pool.by_cost()[:5]


@pytest.mark.parametrize('strategy', ['tpe', 'largest'])
def test_the_restrictions_judge_never_sees_the_rewards_seed(setup, pool, strategy):
    """The judge's APs shuffled: the search trains and picks the same, only the judged AP moves."""
    import copy
    from bench.ground_truth_search import run_one
    first = run_one(strategy, 10, 1, (0, 1), setup, pool, 0)
    shuffled = copy.deepcopy(pool)
    judged = [shuffled.aps[t][1] for t in shuffled.tokens]
    for t, ap in zip(shuffled.tokens, np.random.default_rng(0).permutation(judged)):
        shuffled.aps[t][1] = float(ap)
    again = run_one(strategy, 10, 1, (0, 1), setup, shuffled, 0)
    assert again['pick'] == first['pick']
    assert again['judged_ap'] == shuffled.aps[tuple(first['pick'])][1] != first['judged_ap']
