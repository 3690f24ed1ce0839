"""kill -9 at random moments, resume with -r: nothing rewarded is lost or trained twice, files stay valid."""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

from search_fixtures import REPO, run_search, tiny_config, tiny_dataset
from ppdet.slim.nas.files import HISTORY_FIELDS


def test_kill_and_resume_several_times(tmp_path):
    dataset = tiny_dataset(tmp_path)
    config = tiny_config(tmp_path, dataset, search_steps=4, max_iters=4)
    save_dir = str(tmp_path / 'out')
    rng = random.Random(7)
    kills = 0
    for attempt in range(4):
        args = ['-r', save_dir] if os.path.isdir(save_dir) else []
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'train_nas.py'), '-c', config, *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        time.sleep(rng.uniform(6, 14))  # paddle imports in ~5 s; then pricing, training, eval, checkpoints
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        _check_files(save_dir)
    assert kills >= 2, 'the search should have been killed mid-way at least twice'
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
