"""kill -9 at random moments, resume with -r: nothing rewarded is lost or trained twice, files stay valid."""
import csv
import json
import os
import random
import signal
import subprocess
import sys

from search_fixtures import REPO, run_search, tiny_config, tiny_dataset, wait_until_gone
from ppdet.slim.nas.files import HISTORY_FIELDS


# Moments to kill at: mid-training, mid-evaluation, right after a reward, right after pricing.
MOMENTS = ['iter: 2,', 'EvalReader epoch', 'search step', 'TrainReader epoch', '<<<------']


def _run_until_killed(config, args, moment, occurrence):
    """Run the search and SIGKILL it the ``occurrence``-th time ``moment`` appears in its log."""
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'train_nas.py'), '-c', config, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    seen = 0
    for line in proc.stderr:
        seen += moment in line
        if seen == occurrence:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stderr.close()
    return proc.returncode == -signal.SIGKILL


def test_kill_and_resume_several_times(tmp_path):
    dataset = tiny_dataset(tmp_path)
    config = tiny_config(tmp_path, dataset, search_steps=4, max_iters=4)
    save_dir = str(tmp_path / 'out')
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        args = ['-r', save_dir] if os.path.isdir(save_dir) else []
        kills += _run_until_killed(config, args, rng.choice(MOMENTS), 1)
        assert wait_until_gone(str(tmp_path), timeout=5) == [], 'a process of the killed search is still running'
        _check_files(save_dir)
    assert kills >= 3, 'the search should have been killed mid-way several times'
    final = run_search(config, '-r', save_dir) if os.path.isdir(save_dir) else run_search(config)
    assert final.returncode == 0, final.stderr[-3000:]
    rows = _check_files(save_dir)
    trained = [r for r in rows if r['status'] == 'trained']
    assert len(trained) == 4
    assert len({r['tokens'] for r in trained}) == 4, 'a rewarded candidate was trained twice'
    with open(os.path.join(save_dir, 'sanas.checkpoints')) as f:
        scene = json.load(f)
    assert scene['_iter'] == 4
    for r in trained:
        assert abs(scene['_searched'][str([int(t) for t in r['tokens'].split()])] - float(r['ap'])) < 1e-6


def _check_files(save_dir):
    """The history is valid CSV with whole rows; the checkpoint, when present, is valid JSON."""
    rows = []
    path = os.path.join(save_dir, 'search_history.csv')
    if os.path.isfile(path):
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == HISTORY_FIELDS
            rows = list(reader)
        for r in rows:
            assert None not in r and r['status'] in ('trained', 'skipped', 'unpriced', 'failed')
    checkpoint = os.path.join(save_dir, 'sanas.checkpoints')
    if os.path.isfile(checkpoint):
        with open(checkpoint) as f:
            json.load(f)
    return rows
