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


def test_a_data_worker_holds_none_of_its_parents_listening_ports(tmp_path):
    """While workers decode, the port the parent listened on is free to bind again once the parent closes it (the
    controller's port after a killed search): the workers closed their inherited copy, and only that one."""
    import socket
    from ppdet.data.reader import create_reader
    from ppdet.slim.nas.config import load_search_config
    listener, connected = socket.socket(), socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    connected.connect(listener.getsockname())  # a socket that is not listening stays open in the workers
    port = listener.getsockname()[1]
    cfg = load_search_config(tiny_config(tmp_path, tiny_dataset(tmp_path))).cfg
    batches = iter(create_reader(cfg['TrainReader'], 'train', max_iters=1000, worker_num=2))
    next(batches)
    workers = _children(os.getpid())
    assert len(workers) >= 2
    listener.close()
    again = socket.socket()
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(('127.0.0.1', port))  # EADDRINUSE while a worker still listens on it
    again.listen(1)
    open_sockets = [os.readlink('/proc/{}/fd/{}'.format(w, fd)) for w in workers
                    for fd in os.listdir('/proc/{}/fd'.format(w))]
    inode = os.fstat(connected.fileno()).st_ino
    assert 'socket:[{}]'.format(inode) in open_sockets
    again.close(), connected.close()
    del batches
