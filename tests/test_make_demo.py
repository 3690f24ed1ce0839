"""``make demo``, as the README's quick start runs it, twice in a row (on the tiny data): each run is a fresh search,
the previous output moved aside; ``STRATEGY=`` picks the strategy."""
import csv
import os
import shutil
import subprocess

import optuna
from optuna.trial import TrialState

from search_fixtures import REPO, tiny_dataset

# a fixed whole-network table of the demo's 96x96 space (bench/ground_truth.py's): make demo's table step finds every
# unit in it and measures nothing, so the test does not time this machine
DEMO_TABLE = os.path.join(REPO, 'bench', 'ground_truth_latency.txt')


def _make_demo(tmp_path, data, table, out):
    opts = ' '.join(['save_dir={}'.format(out), 'Constraint.table_file={}'.format(table),
                     'TrainReader.dataset.dataset_dir={}'.format(data), 'EvalReader.dataset.dataset_dir={}'.format(data),
                     'max_iters=2', 'search_steps=2', 'rerank_top_k=0', 'TrainReader.batch_size=4',
                     'TrainReader.worker_num=1'])
    return subprocess.run(['make', '--no-print-directory', '-C', REPO, 'demo', 'DEMO_DATA={}'.format(data),
                           'DEMO_TABLE={}'.format(table), 'DEMO_OUT={}'.format(out), 'STRATEGY=random',
                           'DEMO_OPTS={}'.format(opts)], capture_output=True, text=True, timeout=600)


def _history(out):
    with open(os.path.join(out, 'search_history.csv'), newline='') as f:
        return list(csv.DictReader(f))


def test_make_demo_twice_in_a_row_each_a_fresh_search(tmp_path):
    data, table, out = tiny_dataset(tmp_path), str(tmp_path / 'table.txt'), str(tmp_path / 'demo_output')
    shutil.copy(DEMO_TABLE, table)
    first = _make_demo(tmp_path, data, table, out)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert 'strategy=random' in first.stdout and 'max_quantile' in first.stderr
    history = _history(out)
    second = _make_demo(tmp_path, data, table, out)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert 'previous demo' in second.stdout
    assert _history(out + '.previous') == history, 'the first run\'s output was not kept aside'
    study = optuna.load_study(study_name='blazeface-nas', storage='sqlite:///' + os.path.join(out, 'study.db'))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2, 'the second run resumed instead of starting anew'
    assert study.user_attrs['strategy'] == 'random'
