"""The search strategies (random, evolution, tpe, nsga2 on an Optuna study; sanas's mirror), the accuracy-cost
front, the shared re-ranking board, and many workers on one real PostgreSQL study."""
import csv
import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from postgres_server import PASSWORD, postgres_server
from search_fixtures import dashboard as _dashboard, fixed_reward_search, free_port, read_until, run_search, \
    start_search, tiny_config, tiny_dataset, wait_until_gone
from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.search import SearchError, build_search
from ppdet.slim.nas.strategies import make_strategy
from ppdet.slim.nas.strategies.evolution import RegularizedEvolutionSampler
from ppdet.slim.nas.strategies.largest import largest_first
from ppdet.slim.nas.strategies.storage import JobBoard, default_storage_url, open_storage
from ppdet.slim.nas.strategies.study import SearchExhausted, param_names
from ppdet.slim.nas.tokens import Tokens, sample_candidates
from search_space.blazefacespace_nas import BlazeFaceNasSpace

STUDY = 'blazeface-nas'


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _study(save_dir, name=STUDY, url=None):
    return optuna.load_study(study_name=name, storage=url or default_storage_url(save_dir))


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


# --- the pieces, on real Optuna studies in memory or in a file
def test_tokens_own_every_spelling():
    tokens = Tokens([2, 1, 3, 8])
    assert (tokens.wire, tokens.csv, tokens.folder, tokens.key) == ('2,1,3,8', '2 1 3 8', '2-1-3-8', '[2, 1, 3, 8]')
    for text in (tokens.wire, tokens.csv, tokens.folder, tokens.key):
        assert Tokens.parse(text) == tokens
    for bad in ('', '2,,1', '[2, 1', 'a b', '-1'):
        with pytest.raises(ValueError):
            Tokens.parse(bad)


def _study_with(values, ranges):
    names = param_names(len(ranges))
    study = optuna.create_study(direction='maximize')
    dists = {n: optuna.distributions.IntDistribution(0, r - 1) for n, r in zip(names, ranges)}
    for tokens, value in values:
        study.add_trial(optuna.trial.create_trial(params=dict(zip(names, tokens)), distributions=dists, value=value))
    return study, names


def test_regularized_evolution_mutates_one_token_of_a_tournament_winner_of_the_youngest():
    ranges = BlazeFaceNasSpace().range_table()
    # 6 trained: the two oldest are the best, but the population (4 youngest) no longer holds them
    history = [([0] * 9, 0.9), ([1] * 9, 0.8)] + [([2, 2, 2, 2, 2, 2, 2, 2, i % 2], 0.1 * i) for i in range(4)]
    study, names = _study_with(history, ranges)
    sampler = RegularizedEvolutionSampler(names, ranges, population_size=4, tournament_size=4, seed=3)
    youngest_best = (2, 2, 2, 2, 2, 2, 2, 2, 1)  # value 0.3, the best of the 4 youngest
    for _ in range(20):
        trial = study.ask()
        params = sampler.sample_relative(study, trial, sampler.infer_relative_search_space(study, trial))
        child = tuple(params[n] for n in names)
        assert tuple(sampler.parents[trial.number]) == youngest_best  # a tournament of the whole population
        assert sum(a != b for a, b in zip(child, youngest_best)) == 1, child
        study.tell(trial, state=TrialState.FAIL)


def test_regularized_evolution_draws_uniformly_until_the_population_is_full():
    ranges = BlazeFaceNasSpace().range_table()
    study, names = _study_with([([0] * 9, 0.5)], ranges)
    sampler = RegularizedEvolutionSampler(names, ranges, population_size=5, tournament_size=2, seed=0)
    children = set()
    for _ in range(10):
        trial = study.ask()
        children.add(tuple(sampler.sample_relative(study, trial, sampler.infer_relative_search_space(study, trial))
                           .values()))
        assert trial.number not in sampler.parents
        study.tell(trial, state=TrialState.FAIL)
    assert len(children) > 5 and all(sum(c != 0 for c in child) > 1 for child in children)


def test_a_job_handed_out_again_while_it_trained_is_dropped_when_it_finishes_not_a_crash(tmp_path):
    """Under load a worker's heartbeat came late, another failed its job as stale and took the copy: the first
    worker's late result is dropped (the copy counts), where it used to end the search with UpdateFinishedTrialError."""
    url = default_storage_url(str(tmp_path))
    slow = JobBoard(open_storage(url, 1, 2), 'x.rerank', 1)
    assert slow.post([((1, 2, 3), 1)])
    job = slow.take()
    slow.study.tell(job[0], state=TrialState.FAIL)  # what fail_stale does to a job whose heartbeat is late
    assert slow.done(job, 0.5, 1.0) is False
    assert slow.results() == {}


def test_a_job_board_is_shared_and_a_dead_workers_job_comes_back(tmp_path):
    url = default_storage_url(str(tmp_path))
    first = JobBoard(open_storage(url, 1, 2), 'x.rerank', 1)
    second = JobBoard(open_storage(url, 1, 2), 'x.rerank', 1)
    assert not second.open()
    jobs = [((1, 2, 3), 1), ((1, 2, 3), 2), ((4, 5, 6), 1)]
    assert first.post(jobs) and not second.post(jobs)  # only one worker posts
    assert second.wait_posted(timeout=5)
    held = first.take()  # the first worker trains one and then dies (its heartbeat stops, it never reports)
    held[3].stop()
    taken = []
    while True:
        job = second.take()
        if job is None:
            break
        taken.append(job)
        second.done(job, 0.5, 1.0)
    assert len(taken) == 2 and second.pending() == 1
    deadline = time.time() + 30
    while second.pending() and time.time() < deadline:  # after the grace period the dead worker's job is re-queued
        job = second.take()
        if job is None:
            time.sleep(0.5)
            continue
        assert (tuple(job[1]), job[2]) == (tuple(held[1]), held[2])
        second.done(job, 0.7, 1.0)
    assert set(second.results()) == {(tuple(t), s) for t, s in jobs}


# --- real searches
@pytest.mark.parametrize('strategy', ['random', 'evolution', 'tpe', 'nsga2', 'largest'])
def test_every_strategy_completes_a_real_search_with_the_outputs(tmp_path, dataset, strategy):
    config = tiny_config(tmp_path, dataset, strategy=strategy, search_steps=3, max_iters=2,
                         population_size=2, tpe_startup_trials=1)
    out = run_search(config)
    assert out.returncode == 0, out.stderr[-3000:]
    save_dir = str(tmp_path / 'out')
    rows = _rows(os.path.join(save_dir, 'search_history.csv'))
    trained = [r for r in rows if r['status'] == 'trained']
    assert len(trained) == 3 and len({r['tokens'] for r in trained}) == 3
    if strategy != 'largest':  # the by-hand baseline trains its list only
        assert trained[0]['tokens'] == Tokens(BlazeFaceNasSpace().init_tokens()).csv  # the published structure first
    for r in rows:
        assert (1e6 <= float(r['flops']) <= 12e6) == (r['status'] == 'trained'), r  # priced before training
    study = _study(save_dir)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert [d.name for d in study.directions] == (['MAXIMIZE', 'MINIMIZE'] if strategy == 'nsga2' else ['MAXIMIZE'])
    front = _rows(os.path.join(save_dir, 'pareto.csv'))
    assert front and all(r['tokens'] in {t['tokens'] for t in trained} for r in front)
    for r in front:
        for name in ('best_structure.yml', 'best_paddledet.yml'):
            assert os.path.isfile(os.path.join(save_dir, r['folder'], name))
    assert [float(r['flops']) for r in front] == sorted(float(r['flops']) for r in front)
    assert [float(r['ap']) for r in front] == sorted(float(r['ap']) for r in front)
    assert 'front: {} point(s)'.format(len(front)) in out.stderr
    for name in ('best_structure.yml', 'best_paddledet.yml', 'search_pareto.png'):
        assert os.path.isfile(os.path.join(save_dir, name))


def test_a_resumed_study_trains_only_the_new_steps_and_a_new_search_there_is_refused(tmp_path, dataset):
    config = tiny_config(tmp_path, dataset, strategy='random', search_steps=2, max_iters=2)
    save_dir = str(tmp_path / 'out')
    first = []
    fixed_reward_search(load_search_config(config), trained=first).run()
    with pytest.raises(ConfigError, match='resume it with -r'):
        fixed_reward_search(load_search_config(config))
    typo = run_search(config, '-r', save_dir + '-typo')  # the driver's one line, as a user sees it
    assert typo.returncode == 2 and 'no such directory' in typo.stderr.strip().splitlines()[-1], typo.stderr[-500:]
    again = []
    fixed_reward_search(load_search_config(config, {'search_steps': 3}), save_dir, trained=again).run()
    assert len(first) == 2 and len(again) == 1 and again[0] not in first  # the two rewarded are not trained again
    assert len(_study(save_dir).get_trials(states=(TrialState.COMPLETE,))) == 3


def test_two_local_workers_share_a_study_and_its_reranking(tmp_path, dataset):
    """(Which worker trains what is the machine's timing, so it is not asserted: the board's sharing is, above.)"""
    config = tiny_config(tmp_path, dataset, strategy='evolution', search_steps=4, max_iters=2, population_size=2,
                         rerank_top_k=2, rerank_seeds=2)
    out = run_search(config, '--workers', '2')
    assert out.returncode == 0, out.stderr[-3000:]
    save_dir = str(tmp_path / 'out')
    complete = _study(save_dir).get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and len({tuple(t.params.values()) for t in complete}) == 4
    board = _study(save_dir, STUDY + '.rerank').get_trials(states=(TrialState.COMPLETE,))
    assert len(board) == 4 and len(_rows(os.path.join(save_dir, 'rerank.csv'))) == 4
    with open(os.path.join(save_dir, 'best_structure.yml')) as f:
        assert '# re-ranked: mean AP' in f.read()


def _dashboard_studies(url, tmp_path):
    """The studies a real optuna-dashboard lists (name -> summary)."""
    return {s['study_name']: s for s in _dashboard(url, tmp_path)['study_summaries']}


@pytest.mark.parametrize('strategy, objectives', [('random', ['AP']), ('tpe', ['AP']), ('evolution', ['AP']),
                                                  ('nsga2', ['AP', 'flops'])])
def test_the_dashboard_shows_priced_out_candidates_as_pruned_and_the_objective_as_ap(tmp_path, dataset, strategy,
                                                                                     objectives):
    config = tiny_config(tmp_path, dataset, strategy=strategy, search_steps=2, max_iters=2)
    fixed_reward_search(load_search_config(config, {'Constraint.max_constraint': 2700000})).run()  # rejects some
    save_dir = str(tmp_path / 'out')
    rows = _rows(os.path.join(save_dir, 'search_history.csv'))
    assert any(r['status'] == 'skipped' for r in rows), 'the bound should reject some candidates'
    assert all(float(r['flops']) <= 2700000 for r in rows if r['status'] == 'trained'), 'trained outside the bound'
    url = default_storage_url(save_dir)
    study_id = _dashboard_studies(url, tmp_path)[STUDY]['study_id']
    shown = _dashboard(url, tmp_path, '/api/studies/{}?after=0'.format(study_id))
    assert shown['objective_names'] == objectives
    states = {}
    for t in shown['trials']:
        status = {a['key']: a['value'] for a in t['user_attrs']}.get('status', 'trained')
        states.setdefault(status, set()).add(t['state'])
    assert states['skipped'] == {'Pruned'} and states['trained'] == {'Complete'}, states
    assert len([t for t in shown['trials'] if t['state'] == 'Complete']) == 2, 'priced-out trials used no step'


def test_a_sanas_search_is_mirrored_into_a_study_the_dashboard_shows(tmp_path, dataset):
    fixed_reward_search(load_search_config(tiny_config(tmp_path, dataset, search_steps=2, max_iters=2))).run()
    save_dir = str(tmp_path / 'out')
    mirror = _study(save_dir, 'sanas').get_trials()
    history = [r for r in _rows(os.path.join(save_dir, 'search_history.csv')) if r['status'] == 'trained']
    assert sorted(Tokens(t.params.values()).csv for t in mirror) == sorted(r['tokens'] for r in history)
    assert all(t.user_attrs['flops'] > 0 for t in mirror)
    assert 'sanas' in _dashboard_studies(default_storage_url(save_dir), tmp_path)


# --- many machines: one real PostgreSQL server
@pytest.fixture(scope='module')
def postgres():
    with postgres_server() as url:
        yield url


def _last_line(out):
    return out.stderr.strip().splitlines()[-1]


def test_a_storage_that_refuses_or_cannot_be_reached_is_one_line_without_the_password(tmp_path, dataset, postgres):
    wrong = postgres.replace(PASSWORD, 'wrong-secret-1')
    config = tiny_config(tmp_path, dataset, strategy='random')
    out = run_search(config, '-o', 'storage={}'.format(wrong))
    line = _last_line(out)
    assert out.returncode != 0 and 'storage' in line and 'authentication failed' in line, out.stderr[-2000:]
    assert 'refused the login' in line and 'wrong-secret-1' not in out.stderr
    gone = postgres.replace(postgres.split('@')[1].split('/')[0], '127.0.0.1:{}'.format(free_port()))
    out = run_search(config, '-o', 'storage={}'.format(gone))
    line = _last_line(out)
    assert out.returncode != 0 and 'storage' in line and 'cannot connect' in line and PASSWORD not in out.stderr
    assert 'Traceback' not in out.stderr


def test_a_study_made_for_another_constraint_is_refused(tmp_path, dataset, postgres):
    name = 'other-constraint'
    config = tiny_config(tmp_path, dataset, strategy='random', search_steps=1, max_iters=1, study_name=name)
    fixed_reward_search(load_search_config(config, {'storage': postgres})).run()
    for change, named in (({'Constraint.max_constraint': 9000000}, 'max_constraint'), ({'strategy': 'nsga2'}, 'nsga2')):
        with pytest.raises(ConfigError) as refused:
            fixed_reward_search(load_search_config(config, dict(change, storage=postgres)))
        line = str(refused.value)
        assert named in line and name in line and '\n' not in line


def test_two_machines_on_one_postgresql_study_one_killed_mid_training(tmp_path, dataset, postgres):
    """Every machine runs the same command; one dies with kill -9 while training. Its trial is failed by the
    heartbeat and trained again by the other; the count is exact and nothing is rewarded twice."""
    name, steps = 'kill-test', 5
    configs = []
    for machine in ('a', 'b'):
        os.makedirs(str(tmp_path / machine))
        configs.append(tiny_config(tmp_path / machine, dataset, strategy='random', search_steps=steps, max_iters=40,
                                   storage=postgres, study_name=name, heartbeat_interval=1, heartbeat_grace=4))
    a = start_search(configs[0])
    read_until(a, lambda line: 'search step 1/' in line)
    b = start_search(configs[1])
    read_until(b, lambda line: '----->>> search step' in line)
    read_until(b, lambda line: 'iter: 5,' in line)  # mid-training
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    out, err = a.communicate(timeout=600)
    assert a.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name=name, storage=postgres)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == steps
    assert len({tuple(t.params.values()) for t in complete}) == steps, 'a candidate was rewarded twice'
    lost = [t for t in study.get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get('status') == 'training']
    assert len(lost) == 1, 'the killed worker had one trial in training'
    retried = [t for t in complete if t.system_attrs.get('failed_trial') == lost[0].number]
    assert len(retried) == 1 and retried[0].params == lost[0].params
    assert not wait_until_gone(str(tmp_path / 'b'), timeout=10), 'the killed machine left processes running'


# --- pruning (pruner): Optuna's pruners on intermediate AP, for random, evolution and tpe
def _priced_row(setup, job):
    price = setup.pricer.price(list(job.tokens))
    return {'tokens': job.tokens, 'status': 'priced', 'flops': price.flops, 'params': price.params,
            'latency_us': price.latency_us}


def test_a_candidate_below_the_median_is_pruned_and_uses_a_step_but_is_never_the_best(tmp_path, dataset):
    config = tiny_config(tmp_path, dataset, strategy='random', search_steps=7, pruner='median', max_iters=30,
                         prune_interval=10)
    setup = load_search_config(config)
    strategy = make_strategy(setup, str(tmp_path / 'out'))
    assert strategy.prunes
    for i, intermediate in enumerate([0.5, 0.6, 0.4, 0.5, 0.7, 0.9, 0.1]):
        job = strategy.ask()
        row = _priced_row(setup, job)
        assert strategy.claim(job, row)
        stop = strategy.should_prune(job, 10, intermediate)
        assert stop == (i == 6), (i, stop)  # the first 5 finish before the median is used; 0.9 is above it
        strategy.tell(job, dict(row, status='pruned' if stop else 'trained', ap=0.1 if stop else intermediate + 0.1))
    assert strategy.ask() is None and strategy.progress() == 7  # the pruned candidate used the last step
    rows = strategy.rows()
    assert [r['status'] for r in rows].count('pruned') == 1
    assert [float(r['ap']) for r in rows if r['status'] == 'pruned'] == [0.1]
    assert len(strategy.rewards()) == 6 and strategy.best()[1] == pytest.approx(1.0)
    from ppdet.slim.nas.files import History  # the history a pruned search writes is read back (tools, bench)
    written = History(strategy.history_file(str(tmp_path / 'out'))).rows
    assert [r['status'] for r in written].count('pruned') == 1
    strategy.close()


def _strategy(tmp_path, dataset, **values):
    os.makedirs(str(tmp_path), exist_ok=True)
    setup = load_search_config(tiny_config(tmp_path, dataset, **values))
    return setup, make_strategy(setup, str(tmp_path / 'out'))


def _train(setup, strategy, job, ap=0.2):
    row = _priced_row(setup, job)
    assert strategy.claim(job, row)
    strategy.tell(job, dict(row, status='trained', ap=ap))


def test_largest_trains_exactly_the_most_expensive_admitted_candidates_of_its_sample(tmp_path, dataset):
    setup, strategy = _strategy(tmp_path, dataset, strategy='largest', search_steps=4, largest_sample=60, seed=3)
    by_hand = sorted((setup.pricer.price(t).flops, t) for t in sample_candidates(setup.space, 60, 3))
    admitted = [t for flops, t in by_hand if 1e6 <= flops <= 12e6]  # tiny_config's bounds
    assert len(admitted) > 4
    trained = []
    while (job := strategy.ask()) is not None:
        _train(setup, strategy, job)
        trained.append(list(job.tokens))
    assert trained == admitted[::-1][:4], 'not the most expensive admitted, most expensive first'
    strategy.close()


@pytest.mark.parametrize('name', ['tpe', 'evolution'])
def test_warm_start_trains_the_published_structure_then_the_most_expensive_admitted(tmp_path, dataset, name):
    setup, strategy = _strategy(tmp_path, dataset, strategy=name, search_steps=5, warm_start=3, largest_sample=60,
                                seed=3)
    expected = [list(setup.space.init_tokens())] + [
        t for t in largest_first(setup.pricer, setup.constraint, 60, 3) if t != setup.space.init_tokens()][:3]
    trained = []
    while (job := strategy.ask()) is not None:
        _train(setup, strategy, job)
        trained.append(list(job.tokens))
    assert len(trained) == 5 and trained[:4] == expected, 'not the published structure, then largest\'s list'
    strategy.close()


@pytest.mark.parametrize('values, says', [
    ({'strategy': 'tpe', 'warm_start': -1}, 'warm_start is -1; it must be a whole number >= 0'),
    ({'strategy': 'sanas', 'warm_start': 5}, 'strategy sanas does not take it'),
    ({'strategy': 'largest', 'warm_start': 5}, 'strategy largest does not take it'),
])
def test_a_warm_start_that_cannot_work_is_one_line(tmp_path, dataset, values, says):
    with pytest.raises(ConfigError) as e:
        load_search_config(tiny_config(tmp_path, dataset, **values))
    assert says in str(e.value) and '\n' not in str(e.value)


def test_near_limit_trains_only_candidates_close_to_the_limit(tmp_path, dataset):
    """With Constraint.near_limit 0.5 every trained candidate is within 50% below the limit, and those below are
    skipped."""
    setup = load_search_config(tiny_config(tmp_path, dataset, strategy='tpe', search_steps=3),
                               {'Constraint.near_limit': 0.5})
    search = fixed_reward_search(setup)
    search.run()
    rows = search.strategy.rows()
    trained = [r for r in rows if r['status'] == 'trained']
    assert len(trained) == 3 and all(0.5 * 12e6 <= r['flops'] <= 12e6 for r in trained)
    assert any(r['status'] == 'skipped' and 1e6 <= r['flops'] < 0.5 * 12e6 for r in rows), 'none below was skipped'


def test_a_strategy_that_cannot_go_on_stops_the_loop_with_its_one_line_and_is_closed(tmp_path, dataset):
    search = fixed_reward_search(load_search_config(tiny_config(tmp_path, dataset, strategy='random',
                                                                 search_steps=2)))
    asked, closed = search.strategy.ask, []

    def ask():
        if search.strategy.progress() == 1:
            raise SearchExhausted('nothing new is left')
        return asked()
    search.strategy.ask, search.strategy.close = ask, lambda: closed.append(True)
    with pytest.raises(SearchError, match='^nothing new is left$'):
        search.run()
    os.makedirs(str(tmp_path / 'b'))
    ran = fixed_reward_search(load_search_config(tiny_config(tmp_path / 'b', dataset, strategy='random',
                                                              search_steps=1)))
    ran.strategy.close = lambda: closed.append('after the report')
    ran.run()
    assert closed == ['after the report'] and os.path.isfile(str(tmp_path / 'b' / 'out' / 'best_structure.yml'))


def test_two_workers_claiming_the_last_step_together_train_it_once(tmp_path, dataset):
    url = 'sqlite:///{}'.format(tmp_path / 'shared.db')
    setup, a = _strategy(tmp_path / 'a', dataset, strategy='random', search_steps=2, storage=url)
    _, b = _strategy(tmp_path / 'b', dataset, strategy='random', search_steps=2, storage=url)
    _train(setup, a, a.ask())
    job_a, job_b = a.ask(), b.ask()  # both see one step left
    assert a.claim(job_a, _priced_row(setup, job_a))
    assert not b.claim(job_b, _priced_row(setup, job_b)), 'a third training for search_steps 2'
    a.tell(job_a, dict(_priced_row(setup, job_a), status='trained', ap=0.3))
    assert a.ask() is None and b.ask() is None and a.progress() == 2
    a.close(), b.close()


def test_a_worker_asked_first_that_claims_last_gives_the_last_step_back(tmp_path, dataset):
    """The interleaving 4 workers started together once hit: the later-asked trial is marked and counted before the
    earlier one is marked; the earlier one must then see it and give the step back (it used to train too)."""
    url = 'sqlite:///{}'.format(tmp_path / 'shared.db')
    setup, a = _strategy(tmp_path / 'a', dataset, strategy='random', search_steps=2, storage=url)
    _, b = _strategy(tmp_path / 'b', dataset, strategy='random', search_steps=2, storage=url)
    _train(setup, a, a.ask())
    job_a, job_b = a.ask(), b.ask()
    assert job_a.handle[0]._trial_id < job_b.handle[0]._trial_id
    assert b.claim(job_b, _priced_row(setup, job_b))
    assert not a.claim(job_a, _priced_row(setup, job_a)), 'two trainings for the last step'
    a.close(), b.close()


def test_a_step_being_told_is_not_free(tmp_path, dataset):
    """Between recording a trained candidate's row and finishing its trial, the step is still taken."""
    url = 'sqlite:///{}'.format(tmp_path / 'shared.db')
    setup, a = _strategy(tmp_path / 'a', dataset, strategy='random', search_steps=2, storage=url)
    _, b = _strategy(tmp_path / 'b', dataset, strategy='random', search_steps=2, storage=url)
    _train(setup, a, a.ask())
    job_a, job_b = a.ask(), b.ask()
    row = _priced_row(setup, job_a)
    assert a.claim(job_a, row)
    a._record(job_a.handle[0], dict(row, status='trained', ap=0.3))  # tell's first half: the row, not the state
    assert not b.claim(job_b, _priced_row(setup, job_b)), 'the step being told was claimed again'
    a.close(), b.close()


def test_a_re_proposed_trained_candidate_is_given_back_as_duplicate(tmp_path, dataset):
    setup, strategy = _strategy(tmp_path, dataset, strategy='random', search_steps=3)
    first = strategy.ask()
    _train(setup, strategy, first)
    strategy.study.enqueue_trial(dict(zip(strategy.names, first.tokens)))  # the sampler proposes it again
    job = strategy.ask()
    assert job.tokens != first.tokens
    given_back = [t for t in strategy.study.get_trials() if t.user_attrs.get('status') == 'duplicate']
    assert len(given_back) == 1 and given_back[0].state == TrialState.FAIL
    strategy.close()


def test_a_priced_out_candidate_is_pruned_before_training_and_uses_no_step(tmp_path, dataset):
    setup = load_search_config(tiny_config(tmp_path, dataset, strategy='tpe', search_steps=2))
    strategy = make_strategy(setup, str(tmp_path / 'out'))
    job = strategy.ask()
    strategy.skip(job, dict(_priced_row(setup, job), status='skipped'))
    assert strategy.progress() == 0
    trial = strategy.study.get_trials()[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs['status'] == 'skipped'
    assert [r['status'] for r in strategy.rows()] == ['skipped']
    for _ in range(2):
        job = strategy.ask()
        row = _priced_row(setup, job)
        assert strategy.claim(job, row)
        strategy.tell(job, dict(row, status='trained', ap=0.2))
    assert strategy.ask() is None and strategy.progress() == 2
    strategy.close()


def test_a_pruned_search_evaluates_its_candidates_part_way(tmp_path, dataset):
    """The real loop, real trainings: every candidate reports its AP at the interval before the end to the study."""
    config = tiny_config(tmp_path, dataset, strategy='tpe', search_steps=3, max_iters=2, prune_interval=1,
                         pruner='hyperband', tpe_startup_trials=1)
    build_search(load_search_config(config)).run()
    trials = _study(str(tmp_path / 'out')).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 3 and all(list(t.intermediate_values) == [1] for t in trials)


@pytest.mark.parametrize('values, says', [
    ({'strategy': 'random', 'pruner': 'asha'}, "pruner is 'asha'; use one of none, median"),
    ({'strategy': 'sanas', 'pruner': 'median'}, 'pruner median works with the single-objective study strategies'),
    ({'strategy': 'nsga2', 'pruner': 'hyperband'}, 'not strategy nsga2'),
    ({'strategy': 'tpe', 'pruner': 'median', 'prune_interval': 3}, 'prune_interval is 3; it must be a whole number'),
])
def test_a_pruner_that_cannot_work_is_one_line(tmp_path, dataset, values, says):
    """At config load, before anything starts (train_nas.py prints a ConfigError as its one line: test_bad_input)."""
    with pytest.raises(ConfigError) as e:
        load_search_config(tiny_config(tmp_path, dataset, **values))
    assert says in str(e.value) and '\n' not in str(e.value)
