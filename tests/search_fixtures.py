"""A tiny synthetic WIDER set and a tiny search config, shared by the search tests."""
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tools'))

from make_synthetic_widerface import make_dataset  # noqa: E402


FLOPS_CONSTRAINT = 'Constraint:\n  ctype: flops\n  max_constraint: 12000000\n  min_constraint: 1000000\n'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tiny_dataset(root):
    path = os.path.join(str(root), 'wider')
    if not os.path.isdir(path):
        make_dataset(path, train=16, val=4, size=64, seed=1, workers=1)
    return path


def tiny_config(tmp_path, dataset, **values):
    """demo.yml at 64x64 with a few iterations; ``values`` replace top-level scalar keys."""
    with open(os.path.join(REPO, 'demo.yml')) as f:
        text = f.read().replace('96', '64').replace('dataset/synthetic_wider_face', dataset)
    # a FLOPs limit: the demo's latency table is built by `make demo` for the machine, not shipped
    start, end = text.index('Constraint:'), text.index('\nBlazeFace:')
    text = text[:start] + FLOPS_CONSTRAINT + text[end:]
    values = dict(dict(max_iters=3, log_iter=1, search_steps=3, save_dir=str(tmp_path / 'out'),
                       server_port=free_port()), **values)
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
