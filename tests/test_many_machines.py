"""Many machines on one fresh PostgreSQL database, started at the same instant (as a cluster's job scheduler starts
them), with the README's URL form ``postgresql://user:password@host:port/db``; and the storage's one-line errors."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from postgres_server import PASSWORD, USER, fresh_database, postgres_server
from search_fixtures import REPO, dashboard, free_port, tiny_config, tiny_dataset, wait_until_gone
from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.strategies.storage import open_storage
from search_space.blazefacespace_nas import BlazeFaceNasSpace

BARRIER_START = os.path.join(REPO, 'tests', 'helpers', 'barrier_start.py')
STUDY = 'blazeface-nas'


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def server():
    with postgres_server() as url:
        yield url


@pytest.fixture
def database(server, request):
    """An empty database of its own for each test (the name from the test's)."""
    return fresh_database(server, request.node.name[:60])


def _start_together(tmp_path, dataset, url, count, steps, max_iters):
    """``count`` workers with the same command line, each with its own save_dir, released by one barrier once all
    have imported Paddle and Optuna; their logs go to files (a pipe nobody reads would block them)."""
    barrier = tmp_path / 'barrier'
    barrier.mkdir()
    procs = []
    for i in range(count):
        machine = tmp_path / 'machine{}'.format(i)
        machine.mkdir()
        config = tiny_config(machine, dataset, strategy='random', search_steps=steps, max_iters=max_iters,
                             heartbeat_interval=1, heartbeat_grace=4)
        with open(str(machine / 'log'), 'w') as log:
            procs.append(subprocess.Popen([sys.executable, '-u', BARRIER_START, str(barrier), '-c', config, '-o',
                                           'storage={}'.format(url)], stdout=log, stderr=subprocess.STDOUT,
                                          cwd=REPO))
    deadline = time.time() + 300
    while len(list(barrier.glob('ready.*'))) < count:
        assert time.time() < deadline and all(p.poll() is None for p in procs), 'a worker never got ready'
        time.sleep(0.05)
    (barrier / 'go').touch()
    return procs


def _log(tmp_path, i):
    with open(str(tmp_path / 'machine{}'.format(i) / 'log')) as f:
        return f.read()


def _wait(procs, tmp_path, skip=()):
    for i, p in enumerate(procs):
        p.wait(timeout=600)
        if i not in skip:
            assert p.returncode == 0, _log(tmp_path, i)[-3000:]


def _check_study(url, steps):
    """Exactly ``steps`` trained candidates, none twice, in the one study, which was created once (its published
    structure enqueued once)."""
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == [STUDY]
    study = optuna.load_study(study_name=STUDY, storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    for t in study.get_trials():  # shown when the test fails
        print(t.number, t._trial_id, t.state.name, t.user_attrs.get('status'), t.user_attrs.get('client'),
              t.system_attrs.get('failed_trial'), list(t.params.values()), t.datetime_start, t.datetime_complete)
    assert len(complete) == steps
    assert len({tuple(t.params.values()) for t in complete}) == steps, 'a candidate was trained twice'
    init = list(BlazeFaceNasSpace().init_tokens())
    enqueued = [t for t in study.get_trials() if 'failed_trial' not in t.system_attrs and
                list((t.system_attrs.get('fixed_params') or {}).values()) == init]
    assert len(enqueued) == 1, 'the study was created more than once'
    return study


def test_workers_started_together_on_an_empty_database_all_join_one_study(tmp_path, dataset, database):
    steps = 6
    procs = _start_together(tmp_path, dataset, database, count=4, steps=steps, max_iters=3)
    _wait(procs, tmp_path)
    _check_study(database, steps)


def _training_trial_of(url, pid, timeout=300):
    """Wait until the worker ``pid`` has a candidate in training."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name=STUDY, storage=url)
        except KeyError:  # not created yet
            study = None
        for t in study.get_trials(states=(TrialState.RUNNING,)) if study else ():
            if t.user_attrs.get('status') == 'training' and t.user_attrs.get('client', '').endswith('_{}'.format(pid)):
                return t
        time.sleep(0.1)
    raise AssertionError('worker {} never trained'.format(pid))


def test_workers_started_together_one_killed_mid_training_still_train_exactly_n(tmp_path, dataset, database):
    steps = 5
    procs = _start_together(tmp_path, dataset, database, count=3, steps=steps, max_iters=60)
    victim = procs[1]
    _training_trial_of(database, victim.pid)  # a training of 60 iterations has begun: kill it
    os.kill(victim.pid, signal.SIGKILL)
    _wait(procs, tmp_path, skip=(1,))
    study = _check_study(database, steps)
    lost = [t for t in study.get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get('status') in (
        'training', 'trained') and t.user_attrs.get('client', '').endswith('_{}'.format(victim.pid))]
    assert len(lost) == 1, 'the killed worker had one trial in training'
    retried = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
               if t.system_attrs.get('failed_trial') == lost[0].number]
    assert len(retried) == 1 and retried[0].params == lost[0].params, 'its candidate was not trained again once'
    assert not wait_until_gone(str(tmp_path / 'machine1'), timeout=30), 'the killed worker left processes running'


def test_init_storage_creates_the_study_once_and_workers_join_it(tmp_path, dataset, database):
    config = tiny_config(tmp_path, dataset, strategy='tpe')
    command = [sys.executable, os.path.join(REPO, 'train_nas.py'), '-c', config, '--init-storage', '-o',
               'storage={}'.format(database)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert first.returncode == 0 and 'created' in first.stdout, first.stderr[-2000:]
    assert PASSWORD not in first.stdout + first.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0 and 'already there' in again.stdout, again.stderr[-2000:]
    study = optuna.load_study(study_name=STUDY, storage=database)
    assert len(study.get_trials()) == 1, 'the published structure is enqueued once'
    shown = dashboard(database, tmp_path)  # optuna-dashboard on the README's URL form
    assert [s['study_name'] for s in shown['study_summaries']] == [STUDY]


# --- the one-line errors, told apart (in-process: opening a storage is all they need)
def _open_error(url):
    with pytest.raises(ConfigError) as e:
        open_storage(url, 10, 60)
    line = str(e.value)
    assert '\n' not in line and PASSWORD not in line and 'wrong-secret-2' not in line
    return line


def test_a_storage_error_says_what_failed(server, database):
    host = server.split('@')[1].split('/')[0]
    line = _open_error(server.replace(host, '127.0.0.1:{}'.format(free_port())))
    assert 'cannot connect' in line and 'password' not in line
    line = _open_error(database.replace(PASSWORD, 'wrong-secret-2'))
    assert 'refused the login' in line and 'authentication failed' in line
    line = _open_error(database.replace('postgresql://', 'postgresql+nosuchdriver://'))
    assert 'no driver' in line and 'password' not in line
    line = _open_error('mysql://{}:{}@{}/nas'.format(USER, PASSWORD, host))
    assert 'no driver' in line and 'MySQLdb' in line


def test_a_database_error_during_setup_is_shown_as_what_it_is(server, database):
    """A login the server accepts but that may not create tables (PostgreSQL 15's public schema is its owner's):
    the error is the database's, with no password hint."""
    import psycopg
    from sqlalchemy.engine import make_url
    with psycopg.connect(make_url(server).render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw-3'")
    url = make_url(database).set(username='reader', password='reader-pw-3').render_as_string(hide_password=False)
    line = _open_error(url)
    assert "creating Optuna's tables" in line and 'permission denied' in line and 'password' not in line


@pytest.mark.parametrize('joins', [['is_server=false', 'server_ip=127.0.0.1'], ['server_ip=10.0.0.7']])
def test_joining_an_optuna_search_the_sanas_way_is_one_line_naming_storage(tmp_path, dataset, capsys, joins):
    """The original's many-clients recipe with strategy tpe would have each machine search alone, silently."""
    import train_nas
    from conftest import run_tool_main
    config = tiny_config(tmp_path, dataset, strategy='tpe')
    code, _, err = run_tool_main(train_nas.main, ['-c', config, '-o', *joins], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith('error:')]
    assert code == 2 and len(lines) == 1 and 'storage=postgresql://' in lines[0] and 'tpe' in lines[0], err
    assert not os.path.exists(str(tmp_path / 'out')), 'the search started'
