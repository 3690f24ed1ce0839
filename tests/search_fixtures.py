"""A tiny synthetic WIDER set and a tiny search config, shared by the search tests."""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from ppdet.utils.synthetic import make_dataset  # noqa: E402


FLOPS_CONSTRAINT = 'Constraint:\n  ctype: flops\n  max_constraint: 12000000\n  min_constraint: 1000000\n'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fixed_reward_search(setup, resume_dir=None, trained=None):
    """The real search loop (``build_search``) with a reward that is a fixed function of the tokens: no network is
    trained. ``trained``, a list, receives the tokens of each candidate it was asked to train."""
    from ppdet.slim.nas.candidate import CandidateResult
    from ppdet.slim.nas.search import build_search
    from ppdet.slim.nas.vocabulary import Status

    def train(tokens, *_):
        if trained is not None:
            trained.append(list(tokens))
        return CandidateResult(Status.TRAINED, sum(tokens) / 100, 0.0)
    return build_search(setup, resume_dir, train=train)


def tiny_dataset(root):
    path = os.path.join(str(root), 'wider')
    if not os.path.isdir(path):
        make_dataset(path, train=16, val=4, size=64, seed=1, workers=1)
    return path


def tiny_config(tmp_path, dataset, **values):
    """demo.yml at 64x64 with a few iterations; ``values`` replace top-level scalar keys."""
    tmp_path = pathlib.Path(tmp_path)
    with open(os.path.join(REPO, 'demo.yml')) as f:
        text = re.sub(r'dataset_dir: \S+', 'dataset_dir: ' + dataset, f.read()).replace('96', '64')
    # a FLOPs limit: the demo's latency table is built by `make demo` for the machine, not shipped
    start, end = text.index('Constraint:'), text.index('\nBlazeFace:')
    text = text[:start] + FLOPS_CONSTRAINT + text[end:]
    values = dict(dict(max_iters=3, log_iter=1, search_steps=3, save_dir=str(tmp_path / 'out'), strategy='sanas',
                       server_port=free_port(), rerank_top_k=0), **values)  # the original's loop by default
    lines = []
    for line in text.splitlines():
        key = line.split(':', 1)[0]
        lines.append('{}: {}'.format(key, values.pop(key)) if key in values and not line.startswith(' ') else line)
    lines += ['{}: {}'.format(k, v) for k, v in values.items()]
    text = '\n'.join(lines).replace('batch_size: 8', 'batch_size: 4').replace('worker_num: 2', 'worker_num: 1')
    path = tmp_path / 'tiny.yml'
    path.write_text(text)
    return str(path)


def run_search(config, *args, timeout=600):
    return subprocess.run([sys.executable, '-u', os.path.join(REPO, 'train_nas.py'), '-c', config, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def supernet_tool(*args, timeout=300):
    """``python tools/supernet.py ARGS`` as the README gives it."""
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'supernet.py'), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _ancestors():
    """This process and those it runs under (a shell or ``timeout`` whose command line may show the marker)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open('/proc/{}/stat'.format(pid)) as f:
                pid = int(f.read().rsplit(')', 1)[1].split()[1])
        except OSError:
            break
    return pids


def processes_with(marker):
    """Pids of running processes (other than this one and its ancestors) whose command line contains ``marker``:
    a test's own processes carry its tmp path, so whatever still shows it after the test was left behind."""
    found, mine = [], _ancestors()
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open('/proc/{}/cmdline'.format(entry), 'rb') as f:
                cmdline = f.read().replace(b'\0', b' ').decode(errors='replace')
            with open('/proc/{}/stat'.format(entry)) as f:
                zombie = f.read().rsplit(')', 1)[1].split()[0] == 'Z'
        except OSError:
            continue
        if marker in cmdline and not zombie:
            found.append(int(entry))
    return found


def wait_until_gone(marker, timeout=5.0):
    """The processes still showing ``marker`` after ``timeout`` seconds (an empty list when all ended)."""
    deadline = time.time() + timeout
    while True:
        left = processes_with(marker)
        if not left or time.time() >= deadline:
            return left
        time.sleep(0.2)


def start_search(config, *args):
    """``train_nas.py -c config ...`` as a running process whose stderr (the log) a test reads line by line."""
    return subprocess.Popen([sys.executable, '-u', os.path.join(REPO, 'train_nas.py'), '-c', config, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def read_until(proc, predicate, timeout=180):
    """stderr lines of ``proc`` up to the first one ``predicate`` accepts; fails with the log's tail if none does."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if predicate(line):
            return lines
    raise AssertionError('never seen; log so far:\n' + ''.join(lines[-30:]))


def dashboard(url, tmp_path, path='/api/studies'):
    """What a real optuna-dashboard, started on loopback for ``url``, answers at ``path`` (JSON)."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), 'optuna-dashboard')
    proc = subprocess.Popen([exe, url, '--host', '127.0.0.1', '--port', str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=str(tmp_path))
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen('http://127.0.0.1:{}{}'.format(port, path), timeout=5) as r:
                    return json.load(r)
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(10)
