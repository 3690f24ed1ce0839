"""The opt-in improvements for real: tools/train_candidate.py, weight inheritance and final re-ranking in a search
with two workers, and a resume that re-trains nothing it already re-ranked (tiny synthetic set, FLOPs limit)."""
import csv
import glob
import json
import os
import subprocess
import sys

import pytest

import tools.train_candidate as train_candidate_tool
import train_nas
from conftest import run_tool_main
from search_fixtures import REPO, read_until, run_search, start_search, tiny_config, tiny_dataset

TOKENS = '2,1,3,8,2,1,2,1,0'


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


def train_candidate(config, *args):
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'train_candidate.py'), '-c', config, *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, dataset):
    tmp = tmp_path_factory.mktemp('candidate')
    config = tiny_config(tmp, dataset)
    runs = {seed: train_candidate(config, '--tokens', TOKENS, '--seed', str(seed)) for seed in (0, 1)}
    for out in runs.values():
        assert out.returncode == 0, out.stderr[-3000:]
    return config, {seed: json.loads(out.stdout.strip().splitlines()[-1]) for seed, out in runs.items()}, runs


def test_train_candidate_prints_one_json_line_with_its_price(trained):
    config, results, runs = trained
    result = results[0]
    assert set(result) >= {'tokens', 'seed', 'ap', 'flops', 'params', 'latency_us', 'train_seconds'}
    assert result['tokens'] == [int(t) for t in TOKENS.split(',')] and result['seed'] == 0
    assert 0.0 <= result['ap'] <= 1.0 and result['train_seconds'] > 0 and result['status'] == 'trained'
    price = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'price_arch.py'), '-c', config, '--tokens',
                            TOKENS], capture_output=True, text=True, cwd=REPO, check=True)
    priced = json.loads(price.stdout.strip().splitlines()[-1])
    assert (result['flops'], result['params']) == (priced['flops'], priced['params'])
    assert os.path.isfile(result['weights']) and 'seed0' in result['weights']
    assert 'iter: 0, lr: ' in runs[0].stderr and ', eta: ' in runs[0].stderr  # the search step's log
    assert len(runs[0].stdout.strip().splitlines()) == 1


def test_the_seed_changes_the_training(trained):
    import paddle
    _, results, _ = trained
    a, b = (paddle.load(results[s]['weights']) for s in (0, 1))
    assert results[1]['seed'] == 1 and any((a[k].numpy() != b[k].numpy()).any() for k in a)


def test_train_candidate_inherits_from_a_parent(trained):
    config, results, _ = trained
    wider = '2,1,3,9,2,1,2,1,0'
    out = train_candidate(config, '--tokens', wider, '--parent', results[0]['weights'], '--parent-tokens', TOKENS,
                          '--seed', '3')
    assert out.returncode == 0, out.stderr[-3000:]
    inherited = json.loads(out.stdout.strip().splitlines()[-1])['inherited']
    copied, sliced, fresh = [int(part.split()[0]) for part in inherited.split(', ')]
    assert copied > 0 and sliced > 0 and fresh == 0, inherited


@pytest.mark.parametrize('args, expected', [
    (['--tokens', '2,1,3'], '--tokens 2,1,3: expected 9 tokens'),
    (['--tokens', TOKENS, '--parent', 'nope.pdparams', '--parent-tokens', TOKENS], '--parent nope.pdparams: no such'),
    (['--tokens', TOKENS, '--parent', 'nope.pdparams'], '--parent and --parent-tokens go together'),
])
def test_train_candidate_bad_input_is_one_line(trained, capsys, args, expected):
    config, _, _ = trained
    code, _, err = run_tool_main(train_candidate_tool.main, ['-c', config, *args], capsys)
    assert code == 2 and 'Traceback' not in err
    assert expected in err.strip().splitlines()[-1], err[-500:]


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _rerank_rows(save_dir):
    return _rows(os.path.join(save_dir, 'rerank.csv'))


@pytest.fixture(scope='module')
def improved(tmp_path_factory, dataset):
    """Four candidates over two workers, each inheriting where it can, then the top two re-trained with one seed."""
    tmp = tmp_path_factory.mktemp('improved')
    config = tiny_config(tmp, dataset, search_steps=4, inherit_weights='true', rerank_top_k=2, rerank_seeds=1)
    out = run_search(config, '--workers', '2')
    assert out.returncode == 0, out.stderr[-3000:]
    return config, str(tmp / 'out'), out


def test_candidates_inherit_from_the_annealing_state(improved):
    _, _, out = improved
    inherited = [line for line in out.stderr.splitlines() if 'inherits the weights of [' in line]
    assert inherited, out.stderr[-3000:]  # after the first reward, candidates start from a trained structure
    assert 'inherits the weights of nothing (fresh start' in out.stderr  # the first ones: nothing trained yet


def test_rerank_trains_the_top_two_again_and_records_mean_and_spread(improved):
    _, save_dir, out = improved
    rows = _rerank_rows(save_dir)
    assert len(rows) == 2 and {r['seed'] for r in rows} == {'1'} and len({r['tokens'] for r in rows}) == 2
    with open(os.path.join(save_dir, 'best_structure.yml')) as f:
        header = f.read().splitlines()[:2]
    assert header[1].startswith('# re-ranked: mean AP ') and 'over 2 trainings (seeds 0,1;' in header[1]
    winner = header[0].split('best tokens ')[1].split(' (AP')[0]
    assert winner.strip('[]').replace(',', '') in {r['tokens'] for r in rows}
    assert 're-ranking the top 2 candidates with 1 more seeds each: 2 trainings, shared by every worker' in out.stderr


def test_the_front_the_plot_and_the_pick_show_the_reranked_mean(improved):
    _, save_dir, out = improved
    history = {r['tokens']: float(r['ap']) for path in glob.glob(os.path.join(save_dir, 'search_history*.csv'))
               for r in _rows(path) if r['status'] == 'trained'}  # each worker's
    means = {r['tokens']: (history[r['tokens']] + float(r['ap'])) / 2 for r in _rerank_rows(save_dir)}
    with open(os.path.join(save_dir, 'best_structure.yml')) as f:
        header = f.readline()
    pick, pick_ap = header.split('best tokens ')[1].split(' (AP')[0], float(header.split('(AP ')[1].split(')')[0])
    pick = pick.strip('[]').replace(',', '')
    assert pick_ap == pytest.approx(means[pick], abs=1e-4)
    for row in _rows(os.path.join(save_dir, 'pareto.csv')):  # every point at the AP the pick was made on
        assert float(row['ap']) == pytest.approx(means.get(row['tokens'], history[row['tokens']]), abs=1e-6)
    assert 'AP {:.4f}'.format(means[pick]) in out.stderr.split('All steps end')[1]


def test_resume_does_not_retrain_what_was_reranked(improved):
    config, save_dir, _ = improved
    before = _rerank_rows(save_dir)
    out = run_search(config, '-r', save_dir, '--workers', '1')
    assert out.returncode == 0, out.stderr[-3000:]
    assert 're-ranking: ' not in out.stderr and 're-ranking the top' not in out.stderr
    assert _rerank_rows(save_dir) == before


def test_a_search_killed_while_reranking_resumes_with_only_the_missing_training(tmp_path, dataset):
    config = tiny_config(tmp_path, dataset, search_steps=2, max_iters=30, rerank_top_k=2, rerank_seeds=1,
                         heartbeat_interval=1, heartbeat_grace=3)
    proc = start_search(config)
    read_until(proc, lambda line: 're-ranking: ' in line)  # the first re-training is done, the second under way
    proc.kill()
    proc.wait()
    save_dir = str(tmp_path / 'out')
    out = run_search(config, '-r', save_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count('re-ranking: ') == 1 and '----->>> search step' not in out.stderr
    assert len(_rerank_rows(save_dir)) == 2


@pytest.mark.parametrize('key, value, expected', [
    ('rerank_top_k', -1, 'rerank_top_k is -1; it must be a whole number >= 0'),
    ('rerank_seeds', 'two', "rerank_seeds is 'two'"),
    ('inherit_weights', 'maybe', "inherit_weights is 'maybe'; write true or false"),
])
def test_bad_improvement_keys_are_one_line(tmp_path, dataset, capsys, key, value, expected):
    code, _, err = run_tool_main(train_nas.main, ['-c', tiny_config(tmp_path, dataset, **{key: value})], capsys)
    assert code == 2 and expected in err.strip().splitlines()[-1], err[-500:]


def test_untrained_ap_of_token_vectors(trained):
    config, _, _ = trained
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'untrained_ap.py'), '-c', config, '--tokens',
                          TOKENS, '--tokens', '0,0,0,0,0,0,0,0,0'], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r['tokens'][0] for r in rows] == [2, 0] and all(r['trained_ap'] is None for r in rows)
    assert all(0.0 <= r['untrained_ap'] <= 1.0 for r in rows)


def test_bad_token_vectors_of_the_tools_are_one_line(trained):
    config, results, _ = trained
    out = train_candidate(config, '--tokens', TOKENS, '--parent', results[0]['weights'], '--parent-tokens', '2,1')
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert '--parent-tokens 2,1: expected 9 tokens' in out.stderr.strip().splitlines()[-1], out.stderr[-500:]
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'untrained_ap.py'), '-c', config, '--tokens',
                          '2,1,3,8,2,1,2,1,9'], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert '--tokens 2,1,3,8,2,1,2,1,9: token 8 is 9' in out.stderr.strip().splitlines()[-1], out.stderr[-500:]
