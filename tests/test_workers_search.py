"""``--workers 2`` for real: a host and a local worker process on loopback, the tiny synthetic set, a FLOPs
constraint; a worker killed mid-training, the driver stopped with SIGTERM and resumed with a different N."""
import csv
import glob
import json
import os
import signal
import socket

import pytest

import train_nas
from conftest import run_tool_main
from search_fixtures import (processes_with, read_until, run_search, start_search, tiny_config, tiny_dataset,
                            wait_until_gone)
from search_space.blazefacespace_nas import STRUCTURE_START

STEPS = 4


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


def _config(tmp_path, dataset, **values):
    return tiny_config(tmp_path, dataset, **dict(dict(search_steps=STEPS, max_iters=100, max_client_wait=120),
                                                 **values))


def _worker_pid(driver_pid, worker_id):
    """The child worker process ``worker_id`` of the driver (not its own data workers, which share its cmdline)."""
    for pid in processes_with('--worker-id {}'.format(worker_id)):
        try:
            with open('/proc/{}/stat'.format(pid)) as f:
                if int(f.read().rsplit(')', 1)[1].split()[1]) == driver_pid:
                    return pid
        except OSError:
            continue
    raise AssertionError('worker {} of {} is not running'.format(worker_id, driver_pid))


def _trained(save_dir):
    rows = []
    for path in glob.glob(os.path.join(save_dir, 'search_history*.csv')):
        with open(path, newline='') as f:
            rows += [dict(r, file=os.path.basename(path)) for r in csv.DictReader(f) if r['status'] == 'trained']
    return rows


def _check_one_search(save_dir):
    """Exactly STEPS rewarded, none twice, the controller agreeing with the histories."""
    trained = _trained(save_dir)
    tokens = [r['tokens'] for r in trained]
    assert len(tokens) == len(set(tokens)) == STEPS, tokens
    with open(os.path.join(save_dir, 'sanas.checkpoints')) as f:
        scene = json.load(f)
    assert scene['_iter'] == STEPS and scene['_in_flight'] == {}
    for r in trained:
        assert scene['_searched'][str([int(t) for t in r['tokens'].split()])] == pytest.approx(float(r['ap']), abs=1e-6)
    return trained


def test_two_workers_one_search(tmp_path, dataset):
    out = run_search(_config(tmp_path, dataset), '--workers', '2')
    assert out.returncode == 0, out.stderr[-3000:]
    trained = _check_one_search(str(tmp_path / 'out'))
    assert len({r['file'] for r in trained}) == 2, 'both workers trained candidates'
    assert out.stdout.count(STRUCTURE_START) == 1, 'the structure block is printed once, by the host'
    log = out.stderr.splitlines()
    steps = [line for line in log if '| AP ' in line]
    assert len(steps) == STEPS, 'one line per finished candidate'
    assert any('worker 0: ' in s for s in steps) and any('worker 1: ' in s for s in steps)
    assert '2 workers: worker 0 is this process' in out.stderr


def test_a_killed_worker_is_reported_once_restarted_and_its_candidate_trained_once(tmp_path, dataset):
    driver = start_search(_config(tmp_path, dataset), '--workers', '2')
    try:
        lines = read_until(driver, lambda line: 'worker 1: ' in line and 'iter: 2,' in line)
        handed = [line.split('tokens ')[1].split(' <<<')[0] for line in lines
                  if 'worker 1: ' in line and '<<<------' in line]
        os.kill(_worker_pid(driver.pid, 1), signal.SIGKILL)
        _, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    err = ''.join(lines) + err
    assert driver.returncode == 0, err[-3000:]
    assert err.count('worker 1 was killed by SIGKILL') == 1, 'reported once'
    trained = _check_one_search(str(tmp_path / 'out'))
    lost = handed[-1].strip('[]').replace(',', '')
    assert [r['tokens'] for r in trained].count(lost) == 1, 'the killed candidate was handed out again, once'


def test_sigterm_stops_every_worker_and_resume_with_another_n_completes(tmp_path, dataset):
    config = _config(tmp_path, dataset)
    driver = start_search(config, '--workers', '2')
    try:
        read_until(driver, lambda line: 'worker 1: ' in line and 'iter: 2,' in line)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 1
    last = err.strip().splitlines()[-1]
    assert 'stopped by SIGTERM' in last and '-r ' in last, last
    assert wait_until_gone(str(tmp_path), timeout=5) == [], 'a process of the stopped search is still running'
    save_dir = str(tmp_path / 'out')
    resumed = run_search(config, '--workers', '1', '-r', save_dir)  # fewer workers than before
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_one_search(save_dir)
    assert resumed.stdout.count(STRUCTURE_START) == 1


@pytest.mark.parametrize('args, expected', [
    (['--workers', '0'], "--workers '0': give a number of workers >= 1"),
    (['--workers', 'x'], "--workers 'x': give a number of workers >= 1"),
    (['--gpus', '0'], '--gpus 0: use_gpu is false'),
    (['--workers', '2', '-o', 'is_server=false'], "this config joins another host's search"),
])
def test_bad_workers_input_is_one_line(tmp_path, dataset, capsys, args, expected):
    code, _, err = run_tool_main(train_nas.main, ['-c', _config(tmp_path, dataset), *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: '), err[-2000:]
    assert expected in lines[0]


def test_port_in_use_is_one_line_before_any_worker_starts(tmp_path, dataset):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = run_search(_config(tmp_path, dataset, server_port=port), '--workers', '2')
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith('error: server_port {} on 127.0.0.1 is already in '
                                                          'use'.format(port))
    assert 'worker 1' not in out.stderr and not glob.glob(str(tmp_path / 'out' / 'search_history_*'))
