"""Data-loader workers end with the process that iterates them, however it dies; nothing is left in /dev/shm."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from search_fixtures import REPO, tiny_config, tiny_dataset, wait_until_gone

# Iterates the tiny config's TrainReader with 2 workers, slowly, printing its pid once batches flow.
PARENT = textwrap.dedent('''
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from ppdet.slim.nas.config import load_search_config
    from ppdet.data.reader import create_reader
    cfg = load_search_config({config!r}).cfg
    for i, batch in enumerate(create_reader(cfg['TrainReader'], 'train', max_iters=100000, worker_num=2)):
        if i == 2:
            print(os.getpid(), flush=True)
        time.sleep(0.05)
''')


def _children(pid):
    with open('/proc/{0}/task/{0}/children'.format(pid)) as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.parametrize('signum', [signal.SIGKILL, signal.SIGTERM])
def test_workers_end_with_their_parent(tmp_path, signum):
    config = tiny_config(tmp_path, tiny_dataset(tmp_path))
    parent = subprocess.Popen([sys.executable, '-c', PARENT.format(repo=REPO, config=config), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert int(parent.stdout.readline()) == parent.pid
    workers = _children(parent.pid)
    assert len(workers) == 2
    assert any(name.startswith('paddle_{}_'.format(w)) for w in workers for name in os.listdir('/dev/shm'))
    parent.send_signal(signum)
    parent.wait()
    assert wait_until_gone(str(tmp_path), timeout=30) == [], 'data workers outlived their parent'
    left = [n for n in os.listdir('/dev/shm') if any(n.startswith('paddle_{}_'.format(w)) for w in workers)]
    assert left == [], 'shared-memory batch files left behind'
