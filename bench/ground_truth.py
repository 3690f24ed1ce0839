"""Ground truth on the proxy task: many candidates of the demo's space, each trained with seeds 0 and 1 exactly as a
demo search step trains it (demo.yml: its data, model, 300 iterations, cosine schedule, the original's AP).

    python bench/ground_truth.py [--candidates 200] [--band 40] [--workers 2] [--out bench/ground_truth.jsonl]

One JSON line per training is appended to ``--out`` as it finishes (tokens, seed, ap, flops, params, latency_us
from the demo's table, train_seconds, band): a kill loses only the trainings in flight, and the same command
resumes (or extends, with larger counts) the file. The candidates are drawn with a generator of their own
(``--sample-seed``): ``--candidates`` uniformly over the space (those the table prices), plus ``--band`` more whose
latency lies within +-5% of the demo's limit (the 45th percentile of the space as the table prices it, as
``make demo`` sets it), the band where a latency-limited search decides.

Latencies come from one fixed table, ``--table`` (bench/ground_truth_latency.txt): a table built on a shared VM
moves by tens of percent between builds, and the band, the limit and every benchmark on this data must price alike
on any machine. The first run copies the demo's table of this machine there (make demo builds it); commit it with
the data. The jobs are ordered so that any prefix holds uniform and in-band candidates in proportion, each with
both seeds, so a run stopped early is still a balanced sample.

It needs dataset/demo_faces_96 (``make demo`` makes it). Each worker is a process of its own (``--serve``) with
cores/workers math threads, training one candidate at a time.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

import numpy as np  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, 'bench', 'ground_truth.jsonl')
DEFAULT_TABLE = os.path.join(REPO, 'bench', 'ground_truth_latency.txt')
SEEDS = (0, 1)
BAND = 0.05
LIMIT_QUANTILE = 0.45  # make demo's limit


def load_setup(config, table, overrides=None):
    """The config priced with ``table``, quiet (``overrides``: more ``-o`` keys, as a benchmark search sets them)."""
    from ppdet.slim.nas.config import load_search_config
    return load_search_config(config, dict(overrides or {}, **{'log_iter': 10 ** 9, 'Constraint.table_file': table}))


def snapshot_table(config, table):
    """The fixed table: made once from the config's (this machine's demo table) where it does not exist yet."""
    if os.path.isfile(table):
        return
    from ppdet.slim.nas.config import load_search_config
    source = load_search_config(config).cfg['Constraint']['table_file']
    if not os.path.isfile(source):
        sys.exit('{}: no latency table to start from; run `make demo` first (it builds {})'.format(table, source))
    shutil.copyfile(source, table)
    print('froze {} as {}: commit it with the data'.format(source, table), flush=True)


def interleave(chosen, uniform):
    """Uniform and extra in-band candidates merged in proportion, so any prefix of the work is a balanced sample."""
    first, extra = chosen[:uniform], chosen[uniform:]
    merged = sorted([(i / len(first), c) for i, c in enumerate(first)] +
                    [((i + 0.5) / len(extra), c) for i, c in enumerate(extra)], key=lambda p: p[0])
    return [c for _, c in merged]


def demo_limit(setup):
    """The demo's latency limit as ``make demo`` sets it (tools/price_arch.py --quantile 0.45)."""
    from ppdet.slim.nas.latency import sample_candidates
    values = [setup.pricer.price(t).latency_us for t in sample_candidates(setup.space, 2000, 0)]
    return float(np.quantile([v for v in values if v is not None], LIMIT_QUANTILE))


def choose(setup, candidates, band, sample_seed):
    """(tokens, in_band) pairs: ``candidates`` uniform priced ones, then more within +-5% of the demo's limit until
    ``band`` are, all distinct. The same arguments give the same list, and a larger count extends it."""
    limit = demo_limit(setup)
    rng = np.random.default_rng(sample_seed)
    ranges = setup.space.range_table()
    chosen, seen, in_band = [], set(), 0
    uniform = 0
    for _ in range(10 ** 6):
        if uniform >= candidates and in_band >= band:
            break
        tokens = tuple(int(rng.integers(r)) for r in ranges)
        latency = setup.pricer.price(list(tokens)).latency_us
        if tokens in seen or latency is None:
            continue
        near = abs(latency / limit - 1) <= BAND
        if uniform < candidates:
            uniform += 1
        elif not (near and in_band < band):
            continue
        seen.add(tokens)
        in_band += near
        chosen.append((tokens, near))
    return chosen, limit


def done_keys(path):
    keys = set()
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    keys.add((tuple(row['tokens']), row['seed']))
    return keys


def serve(config, table):
    """A worker: read ``tokens;seed`` lines, train each as a demo step does, write one JSON result line each."""
    from ppdet.slim.nas.candidate import CandidateTrainer
    from ppdet.utils.logs import setup_logging
    setup_logging()
    setup = load_setup(config, table)
    trainer = CandidateTrainer(setup.cfg, seed=0)
    for line in sys.stdin:
        tokens, seed = json.loads(line)
        price = setup.pricer.price(tokens)
        with tempfile.TemporaryDirectory(prefix='ground_truth_') as weights:  # the weights are not kept
            result = trainer.candidate(setup.pricer.blazenet_kwargs(tokens), weights, seed)
        print(json.dumps({'tokens': tokens, 'seed': seed, 'ap': result.ap, 'status': result.status,
                          'flops': price.flops, 'params': price.params, 'latency_us': price.latency_us,
                          'train_seconds': round(result.train_seconds, 2)}), flush=True)


class Runner:
    """Hands jobs to worker processes, appends each result to the file as it comes, prints progress and eta."""

    def __init__(self, jobs, out, config, table, workers, band_of):
        self.jobs, self.out, self.config, self.workers, self.band_of = list(jobs), out, config, workers, band_of
        self.table = table
        self.lock, self.done, self.start, self.total = threading.Lock(), 0, time.time(), len(self.jobs)

    def _next(self):
        with self.lock:
            return self.jobs.pop(0) if self.jobs else None

    def _record(self, line):
        row = json.loads(line)
        row['band'] = self.band_of[tuple(row['tokens'])]
        with self.lock:
            with open(self.out, 'a') as f:
                f.write(json.dumps(row) + '\n')
                f.flush()
                os.fsync(f.fileno())
            self.done += 1
            pace = (time.time() - self.start) / self.done
            print('[{}/{}] {} seed {}: AP {:.4f} in {:.0f}s | eta {:.0f} min'.format(
                self.done, self.total, row['tokens'], row['seed'], row['ap'], row['train_seconds'],
                pace * (self.total - self.done) / 60), flush=True)

    def _work(self):
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        proc = subprocess.Popen([sys.executable, __file__, '--serve', '--config', self.config, '--table', self.table],
                                env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            while True:
                job = self._next()
                if job is None:
                    return
                proc.stdin.write(json.dumps(job) + '\n')
                proc.stdin.flush()
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError('a worker died (code {})'.format(proc.wait()))
                self._record(line)
        finally:
            proc.stdin.close()
            proc.wait()

    def run(self):
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=os.path.join(REPO, 'demo.yml'))
    parser.add_argument('--candidates', type=int, default=200)
    parser.add_argument('--band', type=int, default=40)
    parser.add_argument('--sample-seed', type=int, default=20)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--table', default=DEFAULT_TABLE, help='the fixed latency table (made once, see above)')
    parser.add_argument('--serve', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.config, args.table)
    snapshot_table(args.config, args.table)
    setup = load_setup(args.config, args.table)
    chosen, limit = choose(setup, args.candidates, args.band, args.sample_seed)
    chosen = interleave(chosen, args.candidates)
    done = done_keys(args.out)
    jobs = [(list(t), s) for t, _ in chosen for s in SEEDS if (t, s) not in done]
    print('{} candidates ({} within +-5% of the demo limit {:.0f} us), {} trainings to do, {} done before'.format(
        len(chosen), sum(b for _, b in chosen), limit, len(jobs), len(done)), flush=True)
    Runner(jobs, args.out, args.config, args.table, args.workers, dict(chosen)).run()


if __name__ == '__main__':
    main()
