"""Searches on supernet scores (``evaluator: supernet``), end to end on tiny data: every strategy, two local workers,
and a search killed while its supernet trains going on with ``-r``."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from search_fixtures import REPO, run_search, supernet_tool, tiny_config, tiny_dataset
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.search import build_search
from ppdet.slim.nas.strategies import STRATEGIES


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, dataset):
    """A supernet trained with the README's command, for the searches that reuse one (supernet_weights)."""
    config = tiny_config(tmp_path_factory.mktemp('config'), dataset, supernet_iters=6)
    out = str(tmp_path_factory.mktemp('supernet') / 'weights')
    done = supernet_tool('train', '-c', config, '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_every_strategy_searches_on_supernet_scores_and_reranks_by_trainings(tmp_path, dataset, trained, strategy):
    """sanas trains its own supernet in the search (save_dir/supernet); the others reuse ``trained``."""
    own = strategy == 'sanas'
    weights = {'sanas': {}, 'random': {'supernet_weights': json.dumps([trained, trained])}}  # a list: averaged
    config = tiny_config(tmp_path, dataset, strategy=strategy, search_steps=3, max_iters=2, population_size=2,
                         tpe_startup_trials=1, evaluator='supernet', rerank_top_k=2, rerank_seeds=1,
                         supernet_iters=4, supernet_calib_batches=2,
                         **weights.get(strategy, {'supernet_weights': trained}))
    build_search(load_search_config(config)).run()  # in-process: real scorings and trainings, no start-up
    save_dir = str(tmp_path / 'out')
    assert os.path.isfile(os.path.join(save_dir, 'supernet', 'supernet.pdparams')) == own
    rows = [r for r in _rows(os.path.join(save_dir, 'search_history.csv')) if r['status'] == 'trained']
    assert len(rows) == 3 and len({r['tokens'] for r in rows}) == 3
    assert not os.path.isdir(os.path.join(save_dir, 'candidates'))  # a step scores, it trains nothing
    rerank = _rows(os.path.join(save_dir, 'rerank.csv'))
    assert len(rerank) == 2 and {r['seed'] for r in rerank} == {'0'}  # each of the top 2 trained from scratch
    top = sorted(rows, key=lambda r: -float(r['ap']))[:2]
    assert {r['tokens'] for r in rerank} == {r['tokens'] for r in top}
    with open(os.path.join(save_dir, 'best_structure.yml')) as f:
        best = f.read()
    assert 'supernet AP' in best and 'over 1 trainings' in best
    front = _rows(os.path.join(save_dir, 'pareto.csv'))  # the front is the scores'
    scores = {r['tokens']: float(r['ap']) for r in rows}
    assert front and all(float(r['ap']) == pytest.approx(scores[r['tokens']]) for r in front)


def test_two_local_workers_score_with_the_supernet_the_host_trained_once(tmp_path, dataset):
    config = tiny_config(tmp_path, dataset, strategy='random', search_steps=4, max_iters=2, evaluator='supernet',
                         rerank_top_k=1, rerank_seeds=1, supernet_iters=4, supernet_calib_batches=1)
    out = run_search(config, '--workers', '2')
    assert out.returncode == 0, out.stderr[-3000:]
    # trained by the host alone, before the workers start (they are given it as supernet_weights)
    assert out.stderr.count('supernet: 4 iterations from 0') == 1 and 'worker 1: supernet' not in out.stderr
    save_dir = str(tmp_path / 'out')
    scored = [r for path in os.listdir(save_dir) if path.startswith('search_history')
              for r in _rows(os.path.join(save_dir, path)) if r['status'] == 'trained']
    assert len(scored) == 4 and len({r['tokens'] for r in scored}) == 4


def test_a_search_killed_while_its_supernet_trains_goes_on_from_the_checkpoint_with_r(tmp_path, dataset):
    config = tiny_config(tmp_path, dataset, strategy='tpe', search_steps=2, max_iters=2, evaluator='supernet',
                         rerank_top_k=1, rerank_seeds=1, supernet_iters=20, supernet_snapshot_iters=2,
                         supernet_calib_batches=1)
    save_dir = tmp_path / 'out'
    checkpoint = save_dir / 'supernet' / 'checkpoint.json'
    proc = subprocess.Popen([sys.executable, '-u', os.path.join(REPO, 'train_nas.py'), '-c', config], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not checkpoint.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.is_file()
    out = run_search(config, '-r', str(save_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'going on from the checkpoint of iteration' in out.stderr
    assert (save_dir / 'supernet' / 'supernet.pdparams').is_file() and (save_dir / 'best_structure.yml').is_file()
