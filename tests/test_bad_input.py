"""A search meets a full disk, a port where no controller listens, and files cut short or edited by hand:
each is one line naming the path, the port or the file and line, and nothing written before is damaged."""
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from ppdet.slim.nas.files import History
from search_fixtures import REPO, run_search, tiny_config, tiny_dataset, wait_until_gone


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


def _last_line(proc):
    return proc.stderr.strip().splitlines()[-1]


def test_client_at_a_port_where_something_else_answers(tmp_path, dataset):
    with socket.socket() as other:
        other.bind(('127.0.0.1', 0))
        other.listen(4)
        port = other.getsockname()[1]

        def serve():
            while True:
                try:
                    conn, _ = other.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(1024)
                    conn.sendall(b'HTTP/1.0 400 Bad Request\r\n\r\n')
        threading.Thread(target=serve, daemon=True).start()
        config = tiny_config(tmp_path, dataset, is_server='false', server_ip='127.0.0.1', server_port=port)
        out = run_search(config, timeout=120)  # (the client's wait for a late controller would outlast it)
    assert out.returncode == 2
    assert _last_line(out).startswith('error: server_ip 127.0.0.1 server_port {}: something answers there, but '
                                      'not a BlazeFace-NAS controller'.format(port))


ROW = {'step': 1, 'tokens': '2 1 3 8 2 1 2 1 0', 'status': 'trained', 'ap': 0.25, 'client': 'host'}


def _broken_history(save_dir):
    History(os.path.join(save_dir, 'search_history.csv')).append(ROW)
    with open(os.path.join(save_dir, 'search_history.csv'), 'a') as f:
        f.write('2,2 1 3,trai')  # a row cut short
    return os.path.join(save_dir, 'search_history.csv'), 'line 3: expected 9 fields'


def _broken_checkpoint(save_dir):
    path = os.path.join(save_dir, 'sanas.checkpoints')
    cut = json.dumps({'_tokens': [2, 1, 3, 8, 2, 1, 2, 1, 0], '_iter': 1}, indent=1)[:30]
    with open(path, 'w') as f:
        f.write(cut)
    return path, 'line {}: not a valid checkpoint'.format(cut.count('\n') + 1)


@pytest.mark.parametrize('damage', [_broken_history, _broken_checkpoint])
def test_resume_from_damaged_files_is_one_error_naming_file_and_line(tmp_path, dataset, damage):
    config = tiny_config(tmp_path, dataset)
    save_dir = str(tmp_path / 'out')
    os.makedirs(save_dir)
    path, where = damage(save_dir)
    out = run_search(config, '-r', save_dir, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert _last_line(out).startswith('error: {} {}'.format(path, where))
    assert 'iter: 0' not in out.stderr, 'nothing trains'


def _fill(directory):
    """Write zeros into ``directory`` until its file system is full."""
    with open(os.path.join(directory, 'filler'), 'wb') as f:
        try:
            while True:
                f.write(b'\0' * (1 << 20))
                f.flush()
        except OSError:
            pass


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MB file system of its own (tmpfs; needs root), else a directory made read-only mid-search."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', str(mount)],
                                                   capture_output=True).returncode == 0
    if os.geteuid() == 0 and not mounted:
        pytest.skip('root without a tmpfs mount: no way to make a directory unwritable here')
    yield mount, (_fill if mounted else lambda d: os.chmod(d, 0o500))
    if mounted:
        wait_until_gone(str(tmp_path))
        subprocess.run(['umount', '-l', str(mount)], check=True)
    else:
        for root, dirs, _ in os.walk(str(mount)):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o700)


def test_full_disk_mid_search_stops_with_one_line_and_intact_files(tmp_path, dataset, small_disk):
    mount, make_unwritable = small_disk
    save_dir = mount / 'out'
    config = tiny_config(tmp_path, dataset, save_dir=str(save_dir), search_steps=4, max_iters=30)
    proc = subprocess.Popen([sys.executable, '-u', os.path.join(REPO, 'train_nas.py'), '-c', config],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    for line in proc.stderr:
        if 'search step 1/4 |' in line:  # the first candidate is rewarded and written down
            make_unwritable(str(save_dir) if make_unwritable is not _fill else str(mount))
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert 'cannot write {}'.format(save_dir) in last and 'the files written before are intact' in last, last
    rows = History(str(save_dir / 'search_history.csv')).rows
    assert [r['status'] for r in rows].count('trained') >= 1
    with open(str(save_dir / 'sanas.checkpoints')) as f:
        assert json.load(f)['_iter'] >= 1
    assert not [n for n in os.listdir(str(save_dir)) if '.tmp.' in n], 'no partial file left'
