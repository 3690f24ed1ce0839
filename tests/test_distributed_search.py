"""Several clients, one controller: real processes and sockets on loopback."""
import csv
import glob
import json
import os
import subprocess
import sys

import pytest

from search_fixtures import REPO, read_until, start_search, tiny_config, tiny_dataset


def _rows(save_dir):
    rows = []
    for path in glob.glob(os.path.join(save_dir, 'search_history*.csv')):
        with open(path, newline='') as f:
            rows += [dict(r, file=os.path.basename(path)) for r in csv.DictReader(f)]
    return rows


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


def test_one_server_two_clients(tmp_path, dataset):
    host = tiny_config(tmp_path, dataset, search_steps=5, max_iters=6)
    with open(host) as f:
        text = f.read()
    client = str(tmp_path / 'client.yml')
    with open(client, 'w') as f:
        f.write(text.replace('is_server: true', 'is_server: false').replace('server_ip: ""', 'server_ip: 127.0.0.1'))
    clients = [start_search(client) for _ in range(2)]
    early = [''.join(read_until(p, lambda line: 'is not up yet' in line, timeout=120))  # both are waiting
             for p in clients]
    server = start_search(host)
    outs = [p.communicate(timeout=600) for p in [server] + clients]
    outs[1:] = [(out, first + err) for first, (out, err) in zip(early, outs[1:])]
    for p, (_, err) in zip([server] + clients, outs):
        assert p.returncode == 0, err[-3000:]
    save_dir = str(tmp_path / 'out')
    trained = [r for r in _rows(save_dir) if r['status'] == 'trained']
    tokens = [r['tokens'] for r in trained]
    assert len(tokens) == len(set(tokens)) == 5, 'every rewarded candidate once, search_steps in all'
    assert len({r['file'] for r in trained}) >= 2, 'the work should be shared between processes'
    with open(os.path.join(save_dir, 'sanas.checkpoints')) as f:
        scene = json.load(f)
    assert scene['_iter'] == 5
    for r in trained:
        key = str([int(t) for t in r['tokens'].split()])
        assert scene['_searched'][key] == pytest.approx(float(r['ap']), abs=1e-6)
    for _, err in outs[1:]:
        assert 'search complete' in err


def test_client_without_controller_stops_clearly(tmp_path, dataset):
    config = tiny_config(tmp_path, dataset)
    with open(config) as f:
        text = f.read().replace('is_server: true', 'is_server: false').replace('server_ip: ""', 'server_ip: 127.0.0.1')
    with open(config, 'w') as f:
        f.write(text + '\n')
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'train_nas.py'), '-c', config, '-o',
                           'controller_wait=2'], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert 'not reachable' in last and 'history' in last
