"""Does a supernet trained once rank the demo space's candidates as well as a training of each does? Measured on the
ground truth (bench/ground_truth.jsonl: 211 candidates, each trained on the demo's proxy task with seeds 0 and 1).

    python bench/supernet_rank.py [--seeds 0,1] [--iters 1200,3000] [--workers 2]   # train, score (resumable)
    python bench/supernet_rank.py --summary [--md bench/SUPERNET.md]                 # the tables

Each (supernet seed, length) is trained with the README's command, ``python tools/supernet.py train -c demo.yml
--out DIR -o seed=S supernet_iters=N`` (demo.yml priced with the fixed table bench/ground_truth_latency.txt), into
``$BENCH_WORK/supernets/`` (a killed training goes on from its checkpoint), then every ground-truth candidate is scored
with ``python tools/supernet.py score``; one JSON line per candidate is appended to ``--out`` (tokens, supernet_seed,
iters, ap, seconds) and those already there are skipped. ``--runs`` gets one line per supernet (its training seconds,
the scorings' median seconds). Jobs run ``--workers`` at a time, each process with cores/workers math threads, as the
ground truth's trainings ran (2 side by side, 1 thread each), so seconds compare with its train_seconds.

``--summary`` writes the Spearman of each supernet's AP against seed 1's standalone AP over all candidates and the 40
within +-5% of the demo's latency limit, beside another training (seed 0), latency and FLOPs; and the cost in
standalone trainings (a supernet's seconds over the ground truth's mean train_seconds).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from common import REPO, WORK  # noqa: E402  (it puts the repository on sys.path, quiets the libraries)

import numpy as np  # noqa: E402

from bench.ground_truth import DEFAULT_TABLE  # noqa: E402
from bench.surrogate import DEFAULT_DATA, by_candidate, load_ground_truth, spearman  # noqa: E402
from bench.zero_cost import machine, read_rows  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, 'bench', 'supernet_scores.jsonl')
DEFAULT_RUNS = os.path.join(REPO, 'bench', 'supernet_runs.jsonl')
DEFAULT_MD = os.path.join(REPO, 'bench', 'SUPERNET.md')
TOOL = os.path.join(REPO, 'tools', 'supernet.py')


def tool_command(verb, config, seed, iters, *rest):
    return [sys.executable, TOOL, verb, '-c', config] + list(rest) + [
        '-o', 'seed={}'.format(seed), 'supernet_iters={}'.format(iters), 'log_iter=200',
        'Constraint.table_file={}'.format(DEFAULT_TABLE)]


class Jobs:
    def __init__(self, jobs, config, out, runs, workers, tokens_list, extra):
        self.jobs, self.config, self.out, self.runs, self.workers = list(jobs), config, out, runs, workers
        self.tokens_list, self.extra, self.lock = tokens_list, extra, threading.Lock()

    def _append(self, path, row):
        with self.lock:
            with open(path, 'a') as f:
                f.write(json.dumps(row) + '\n')

    def _run(self, job, env):
        seed, iters = job
        folder = os.path.join(WORK, 'supernets', 'seed{}_iters{}{}'.format(seed, iters, self.extra_tag))
        log = open(folder + '.log', 'a')
        subprocess.run(tool_command('train', self.config, seed, iters, '--out', folder, *self.extra_opts), env=env,
                       stdout=log, stderr=log, check=True)
        done = {tuple(r['tokens']) for r in read_rows(self.out)
                if (r['supernet_seed'], r['iters'], r.get('variant', '')) == (seed, iters, self.extra_tag)}
        todo = [t for t in self.tokens_list if t not in done]
        seconds = []
        if todo:
            args = [a for t in todo for a in ('--tokens', ','.join(map(str, t)))]
            proc = subprocess.Popen(tool_command('score', self.config, seed, iters, '--weights', folder, *args,
                                                 *self.extra_opts),
                                    env=env, stdout=subprocess.PIPE, stderr=log, text=True)
            for line in proc.stdout:
                row = json.loads(line)
                seconds.append(row['seconds'])
                self._append(self.out, {'tokens': row['tokens'], 'supernet_seed': seed, 'iters': iters,
                                        'variant': self.extra_tag, 'ap': row['ap'], 'seconds': row['seconds']})
            if proc.wait():
                raise RuntimeError('scoring failed; see {}.log'.format(folder))
        with open(os.path.join(folder, 'supernet.json')) as f:
            trained = json.load(f)['seconds']
        self._append(self.runs, {'supernet_seed': seed, 'iters': iters, 'variant': self.extra_tag,
                                 'train_seconds': trained, 'scored': len(todo),
                                 'score_seconds_median': float(np.median(seconds)) if seconds else None,
                                 'machine': machine(), 'date': datetime.date.today().isoformat()})
        print('supernet seed {} iters {}{}: trained in {:.0f} s, {} scored'.format(
            seed, iters, self.extra_tag, trained, len(todo)), flush=True)

    @property
    def extra_opts(self):
        return ['-o'] + self.extra if self.extra else []

    @property
    def extra_tag(self):
        return ''.join('_' + e.replace('=', '') for e in self.extra)

    def _work(self):
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        while True:
            with self.lock:
                job = self.jobs.pop(0) if self.jobs else None
            if job is None:
                return
            self._run(job, env)

    def run(self):
        os.makedirs(os.path.join(WORK, 'supernets'), exist_ok=True)
        threads = [threading.Thread(target=self._work) for _ in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def halves(keys, aps, info, value):
    """Spearman of ``value`` against seed 1's AP within the cheaper and within the dearer half by latency."""
    median = np.median([info[t].latency_us for t in keys])
    out = []
    for half in ([t for t in keys if info[t].latency_us < median], [t for t in keys if info[t].latency_us >= median]):
        out.append(spearman([value(t) for t in half], [aps[t][1] for t in half]))
    return out


def bootstrap(x, y, n=1000, seed=0):
    """95% interval of the Spearman of x and y over the candidates resampled with replacement."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x), np.asarray(y)
    values = [spearman(x[i], y[i]) for i in (rng.integers(len(x), size=len(x)) for _ in range(n))]
    return tuple(np.nanpercentile(values, [2.5, 97.5]))


def training_seconds(trainings):
    """The seconds of one standalone training of a candidate near the limit on this machine: the mean of the
    re-ranking trainings of bench/supernet_search.py's searches (run here, in the same set-up), else the ground
    truth's (measured earlier on another host of the same kind, where its candidates near the limit took 54 s a
    training against 26 s for the re-rankings here: not a unit to mix with this machine's seconds)."""
    rows = read_rows(os.path.join(REPO, 'bench', 'supernet_search.jsonl'))
    if rows:
        seconds = sum(r['seconds']['rerank'] for r in rows) / sum(r['rerank_trainings'] for r in rows)
        return seconds, 'the mean of the {} re-ranking trainings in bench/supernet_search.py\'s searches'.format(
            sum(r['rerank_trainings'] for r in rows))
    return float(np.mean([t.train_seconds for t in trainings])), 'the ground truth\'s mean train_seconds'


def summarise(data, out, runs, md, command):
    trainings = load_ground_truth(data)
    aps = by_candidate(trainings)
    info = {t.tokens: t for t in trainings}
    band = {t.tokens for t in trainings if t.band}
    both = [t for t, a in aps.items() if 0 in a and 1 in a]
    scores = {}
    for r in read_rows(out):
        scores.setdefault((r['supernet_seed'], r['iters'], r.get('variant', '')), {})[tuple(r['tokens'])] = r['ap']

    def row(name, value, keys):
        cells = []
        for subset in (both, [t for t in both if t in band]):
            subset = [t for t in subset if t in keys]
            x, y = [value(t) for t in subset], [aps[t][1] for t in subset]
            low, high = bootstrap(x, y)
            cells.append('{:.3f} [{:.2f}, {:.2f}] ({})'.format(spearman(x, y), low, high, len(subset)))
        return '| {} | {} | {} |'.format(name, *cells)
    lines = ['# Does a supernet rank the candidates? (generated by `{}`)'.format(command), '',
             'Spearman against seed 1\'s standalone AP (bench/ground_truth.jsonl), over all candidates trained with '
             'both seeds and over those within +-5% of the demo\'s latency limit; in square brackets a 95% '
             'bootstrap interval (1000 resamples of the candidates), in round ones the candidates scored.', '',
             '| ranker | all | within +-5% of the limit |', '|---|---|---|',
             row('another training (seed 0)', lambda t: aps[t][0], set(both)),
             row('latency alone', lambda t: info[t].latency_us, set(both)),
             row('FLOPs alone', lambda t: info[t].flops, set(both))]
    for (seed, iters, variant), s in sorted(scores.items()):
        lines.append(row('supernet seed {}, {} iterations{}'.format(seed, iters, variant.replace('_', ' ')),
                         lambda t, s=s: s[t], set(s)))
    by_length = {}
    for (seed, iters, variant), s in scores.items():
        by_length.setdefault((iters, variant), []).append(s)
    for (iters, variant), group in sorted(by_length.items()):
        if len(group) > 1:
            common = set.intersection(*(set(s) for s in group))
            lines.append(row('mean of {} supernets, {} iterations{}'.format(len(group), iters, variant.replace(
                '_', ' ')), lambda t, g=group: np.mean([s[t] for s in g]), common))
    lines += ['', 'Why the targets were missed: the supernets differ from seed to seed (each row: the mean supernet AP of '
              'the candidates, the Spearman within the cheaper and the dearer half by latency against seed 1\'s AP; '
              'another training: {:.3f} and {:.3f}). A cheaper half that ranks well below the dearer one is the small '
              'sub-networks\' ranking collapsing as the supernet trains longer.'.format(*halves(both, aps, info, lambda t: aps[t][0])),
              '', '| supernet | mean AP | cheaper half | dearer half |', '|---|---|---|---|']
    for (seed, iters, variant), sc in sorted(scores.items()):
        keys = [t for t in both if t in sc]
        lines.append('| seed {}, {} iterations{} | {:.3f} | {:.3f} | {:.3f} |'.format(
            seed, iters, variant.replace('_', ' '), float(np.mean([sc[t] for t in keys])),
            *halves(keys, aps, info, lambda t, sc=sc: sc[t])))
    mean_train, unit_from = training_seconds(trainings)
    lines += ['', 'Cost, in standalone trainings ({:.1f} s each: {}; 2 processes side by side with 1 math thread '
              'each, as the supernets trained and scored):'.format(mean_train, unit_from), '',
              '| supernet | training s | = trainings | one scoring s | = trainings |', '|---|---|---|---|---|']
    for r in read_rows(runs):
        score = r['score_seconds_median']
        lines.append('| seed {}, {} iterations{} | {:.0f} | {:.1f} | {} | {} |'.format(
            r['supernet_seed'], r['iters'], r.get('variant', '').replace('_', ' '), r['train_seconds'],
            r['train_seconds'] / mean_train, '-' if score is None else '{:.2f}'.format(score),
            '-' if score is None else '{:.3f}'.format(score / mean_train)))
    runs_rows = read_rows(runs)
    scorings = [r['seconds'] for r in read_rows(out)]
    lines += ['', '- command: `python bench/supernet_rank.py --seeds 0,1 --iters 1200,3000` (and `--iters 1200 --extra '
              'supernet_sample=admitted`, `--extra supernet_distill=1.0` for the variants), then `{}`'.format(command),
              '- machine: {}'.format('; '.join(sorted({r['machine'] for r in runs_rows})) or machine()),
              '- runtime: {:.0f} min of supernet training and {:.0f} min of scoring ({} scorings, median {:.2f} s), '
              'two jobs side by side'.format(sum(r['train_seconds'] for r in runs_rows) / 60, sum(scorings) / 60,
                                             len(scorings), float(np.median(scorings)) if scorings else 0.0)]
    text = '\n'.join(lines + supernet_search_lines()) + '\n'
    with open(md, 'w') as f:
        f.write(text)
    print(text)


def supernet_search_lines():
    """bench/supernet_search.py's table, when its searches have run."""
    from bench.supernet_search import summary_lines
    return summary_lines(os.path.join(REPO, 'bench', 'supernet_search.jsonl'))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=os.path.join(REPO, 'demo.yml'))
    parser.add_argument('--seeds', default='0,1')
    parser.add_argument('--iters', default='1200,3000')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--extra', nargs='*', default=[], help='more -o keys for both commands (a variant)')
    parser.add_argument('--data', default=DEFAULT_DATA)
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--runs', default=DEFAULT_RUNS)
    parser.add_argument('--summary', action='store_true')
    parser.add_argument('--md', default=DEFAULT_MD)
    args = parser.parse_args()
    if args.summary:
        summarise(args.data, args.out, args.runs, args.md, 'python bench/supernet_rank.py --summary')
        return
    tokens_list = list(dict.fromkeys(t.tokens for t in load_ground_truth(args.data)))
    jobs = [(int(s), int(i)) for i in args.iters.split(',') for s in args.seeds.split(',')]
    start = time.time()
    Jobs(jobs, args.config, args.out, args.runs, args.workers, tokens_list, args.extra).run()
    print('done in {:.0f} min'.format((time.time() - start) / 60))


if __name__ == '__main__':
    main()
