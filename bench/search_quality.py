"""How well the search tells candidates apart, measured on a proxy task that runs on a small CPU machine.

    python bench/search_quality.py [--parallel 2] [--stages reference,evaluators,search] [--work DIR]

The proxy task is the demo's (make demo): synthetic WIDER-format portraits at 96x96 without background clutter
(tools/make_synthetic_widerface.py --scenes empty,portraits --clutter none, 800 train / 300 val images), demo.yml's
model, optimizer and batch. Stages (each result is appended to WORK/results.jsonl as it finishes, so a killed run
resumes where it stopped; every line printed says what finished, its AP and the eta):

- reference: CANDIDATES candidates of the latency search space stratified by FLOPs (one per FLOPs quantile bin of
  4000 random ones), each trained REFERENCE_ITERS iterations with a cosine schedule, seeds 0 and 1. The noise
  ceiling is the Spearman of seed 0 against seed 1.
- evaluators: the same candidates under each short-budget evaluator of EVALUATORS (the original's constant learning
  rate, the old demo's step decay, a cosine schedule fitted to the budget, and weight inheritance from a trained
  parent at half and full budget), seed 0 (and seed 1 for the demo's); Spearman against the reference mean and
  whether the reference's top 3 are the evaluator's top 3.
- search: the controller's annealing (train_nas.py, demo.yml's evaluator) against uniform random sampling, SEARCH_
  TRAININGS candidate trainings each, under a FLOPs bound at the space's median, SEARCH_REPEATS repeats, plus each
  annealing run re-ranked (top 3, one more seed). What each picks is trained at the reference budget (seed 0;
  both seeds for a pick that is one of the reference candidates).

Writes bench/SEARCH_QUALITY.md (tables, command, machine, runtime). Takes about 75 minutes on 2 cores with
--parallel 2. Nothing here runs in make test.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import REPO, WORK, loadavg, write_section  # noqa: E402

from ppdet.slim.nas.files import History, row_tokens  # noqa: E402
from ppdet.slim.nas.rerank import Ranked, top_candidates  # noqa: E402

CANDIDATES = 12
REFERENCE_ITERS = 1200
SHORT_ITERS = 300
SEARCH_TRAININGS = 8
SEARCH_REPEATS = 3
START_TOKENS = [2, 1, 3, 8, 2, 1, 2, 1, 0]  # the search's first structure (published, 3x3): the parent to inherit
SCHEDULES = {  # LearningRate.schedulers of each variant, replacing demo.yml's
    'constant': '  - !PiecewiseDecay\n    gamma: 0.1\n    milestones: [240000, 300000]\n',  # the original's: never fires
    'step': '  - !PiecewiseDecay\n    gamma: 0.1\n    milestones: [{step}]\n',  # the previous demo's, at 80%
    'cosine': '  - !CosineDecay {{}}\n',
}
# name: (schedule, iterations, inherit from the start structure trained at this budget, seeds)
EVALUATORS = {
    'constant lr, 300 it (the original\'s schedule)': ('constant', SHORT_ITERS, None, (0,)),
    'step decay at 80%, 300 it (previous demo)': ('step', SHORT_ITERS, None, (0,)),
    'cosine, 300 it (demo.yml)': ('cosine', SHORT_ITERS, None, (0, 1)),
    'cosine, 150 it': ('cosine', SHORT_ITERS // 2, None, (0,)),
    'cosine, 150 it, inherits': ('cosine', SHORT_ITERS // 2, SHORT_ITERS, (0,)),
    'cosine, 300 it, inherits': ('cosine', SHORT_ITERS, SHORT_ITERS, (0,)),
}
DEMO_EVALUATOR = 'cosine, 300 it (demo.yml)'


def proxy_dataset(work):
    from ppdet.utils.synthetic import make_dataset
    path = os.path.join(work, 'proxy_faces_96')
    if not os.path.isfile(os.path.join(path, '.complete')):
        make_dataset(path, train=800, val=300, size=96, seed=0, workers=2, scenes=('empty', 'portraits'),
                     clutter='none')
        open(os.path.join(path, '.complete'), 'w').close()
    return path


def write_config(work, data, schedule, iters):
    """demo.yml on the proxy data with one schedule (FLOPs-priced: the bench must not depend on a latency table)."""
    with open(os.path.join(REPO, 'demo.yml')) as f:
        text = f.read()
    block = re.search(r'(?m)^LearningRate:\n  base_lr: [^\n]+\n  schedulers:\n((?:  [^\n]*\n)+)', text)
    if block is None:
        raise SystemExit('demo.yml: no LearningRate.schedulers block found to vary')
    text = text[:block.start(1)] + SCHEDULES[schedule].format(step=int(iters * 0.8)) + text[block.end(1):]
    text = re.sub(r'dataset_dir: \S+', 'dataset_dir: ' + data, text)
    path = os.path.join(work, 'proxy_{}_{}.yml'.format(schedule, iters))
    with open(path, 'w') as f:
        f.write(text)
    return path


FLOPS_ONLY = ['Constraint.ctype=flops', 'Constraint.max_constraint=null', 'Constraint.max_quantile=null',
              'Constraint.table_file=null']


class Runner:
    """Trainings (tools/train_candidate.py) side by side, each result appended to results.jsonl when it ends."""

    def __init__(self, work, parallel):
        self.work, self.parallel = work, parallel
        self.path = os.path.join(work, 'results.jsonl')
        self.results = {}
        if os.path.isfile(self.path):
            with open(self.path) as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        self.results[row['key']] = row
        self.seconds = []

    def ap(self, key):
        return self.results[key]['ap']

    def run(self, jobs):
        """``jobs``: (key, config, tokens, seed, iters, parent key or None); parents must come earlier or be done."""
        todo = [j for j in jobs if j[0] not in self.results]
        running = []
        total = len(todo)
        while todo or running:
            while todo and len(running) < self.parallel:
                ready = [j for j in todo if j[5] is None or j[5] in self.results]
                if not ready:
                    break
                job = ready[0]
                todo.remove(job)
                running.append((job, self._start(job), time.time()))
            time.sleep(0.5)
            for item in list(running):
                job, proc, start = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                out = proc.stdout.read().strip().splitlines()
                if proc.returncode != 0 or not out:
                    raise SystemExit('training {} failed (exit {}); see {}'.format(job[0], proc.returncode,
                                                                                 self._log(job)))
                row = dict(json.loads(out[-1]), key=job[0], wall=round(time.time() - start, 1))
                with open(self.path, 'a') as f:
                    f.write(json.dumps(row) + '\n')
                self.results[job[0]] = row
                self.seconds.append(row['wall'])
                left = len(todo) + len(running)
                eta = np.mean(self.seconds) * left / self.parallel
                print('[{}/{}] {}: AP {:.4f} in {:.0f}s | eta {:.0f} min'.format(
                    total - left, total, job[0], row['ap'], row['wall'], eta / 60), flush=True)

    def _log(self, job):
        return os.path.join(self.work, 'logs', re.sub(r'[^A-Za-z0-9_.-]+', '_', job[0]) + '.log')

    def _start(self, job):
        key, config, tokens, seed, iters, parent = job
        threads = str(max(1, (os.cpu_count() or 1) // self.parallel))
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = os.path.join(self.work, 'weights', re.sub(r'[^A-Za-z0-9_.-]+', '_', key))
        cmd = [sys.executable, os.path.join(REPO, 'tools', 'train_candidate.py'), '-c', config, '--tokens',
               ','.join(map(str, tokens)), '--seed', str(seed), '--out', out]
        if parent is not None:
            cmd += ['--parent', self.results[parent]['weights'],
                    '--parent-tokens', ','.join(map(str, self.results[parent]['tokens']))]
        cmd += ['-o', 'max_iters={}'.format(iters), 'log_iter=100', 'TrainReader.worker_num=1'] + FLOPS_ONLY
        os.makedirs(os.path.dirname(self._log(job)), exist_ok=True)
        with open(self._log(job), 'w') as log:  # the child keeps its own descriptor of the log
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, env=env)


def space_and_pricer(config):
    from ppdet.slim.nas.config import load_search_config
    setup = load_search_config(config, dict(o.split('=') for o in FLOPS_ONLY))
    return setup.space, setup.pricer


def stratified(space, pricer, count, pool=4000):
    """One candidate per FLOPs quantile bin of ``pool`` random ones (the bin's median), smallest first."""
    from ppdet.slim.nas.latency import sample_candidates
    tokens = sorted(sample_candidates(space, pool, 0), key=lambda t: pricer.price(t).flops)
    edges = np.linspace(0, len(tokens), count + 1).astype(int)
    return [tokens[(lo + hi) // 2] for lo, hi in zip(edges[:-1], edges[1:])]


def key_of(kind, tokens, seed, extra=''):
    return '{} {}{} s{}'.format(kind, '-'.join(map(str, tokens)), extra, seed)


def spearman(a, b):
    from scipy.stats import spearmanr
    return float(spearmanr(a, b)[0])


def reference_jobs(config, candidates):
    return [(key_of('ref', t, s), config, t, s, REFERENCE_ITERS, None) for s in (0, 1) for t in candidates]


def evaluator_jobs(configs, candidates):
    jobs = []
    for name, (schedule, iters, inherit, seeds) in EVALUATORS.items():
        parent = None
        if inherit:
            parent = key_of('{}-{}'.format(schedule, inherit), START_TOKENS, 0)
            jobs.append((parent, configs[schedule, inherit], START_TOKENS, 0, inherit, None))
        for seed in seeds:
            jobs += [(key_of(name, t, seed), configs[schedule, iters], t, seed, iters, parent) for t in candidates]
    return list(dict((j[0], j) for j in jobs).values())


def untrained_aps(work, config, candidates):
    """AP of each candidate untrained (tools/untrained_ap.py, the config's seed), kept in WORK/untrained.json."""
    path = os.path.join(work, 'untrained.json')
    if not os.path.isfile(path):
        cmd = [sys.executable, os.path.join(REPO, 'tools', 'untrained_ap.py'), '-c', config]
        for tokens in candidates:
            cmd += ['--tokens', ','.join(map(str, tokens))]
        cmd += ['-o'] + FLOPS_ONLY
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
        with open(path, 'w') as f:
            json.dump([json.loads(line)['untrained_ap'] for line in out.splitlines() if line.startswith('{')], f)
    with open(path) as f:
        return json.load(f)


def reference_ap(runner, tokens):
    """Mean reference AP over the seeds trained (both for the reference candidates, seed 0 for other picks)."""
    return float(np.mean([runner.ap(key_of('ref', tokens, s)) for s in (0, 1)
                          if key_of('ref', tokens, s) in runner.results]))


def search_jobs(config, space, pricer, bound):
    """Random sampling: SEARCH_TRAININGS uniform candidates under the bound, per repeat."""
    jobs = []
    for repeat in range(SEARCH_REPEATS):
        rng = np.random.default_rng([20261201, repeat])
        picked = []
        while len(picked) < SEARCH_TRAININGS:
            tokens = [int(rng.integers(r)) for r in space.range_table()]
            if pricer.price(tokens).flops <= bound and tokens not in picked:
                picked.append(tokens)
        jobs += [(key_of('random{}'.format(repeat), t, 0), config, t, 0, SHORT_ITERS, None) for t in picked]
    return jobs


def run_annealing(work, config, bound, repeat):
    """The real search (train_nas.py, both cores) for SEARCH_TRAININGS candidates; its (tokens, ap) rows."""
    save_dir = os.path.join(work, 'anneal{}'.format(repeat))
    done = os.path.join(save_dir, '.complete')
    if not os.path.isfile(done):
        start = time.time()
        subprocess.run([sys.executable, '-u', os.path.join(REPO, 'train_nas.py'), '-c', config, '--workers', '2',
                        '-o', 'save_dir=' + save_dir, 'search_steps={}'.format(SEARCH_TRAININGS),
                        'seed={}'.format(repeat), 'server_port={}'.format(18990 + repeat), 'log_iter=1000',
                        'rerank_top_k=0',  # re-ranked here, from the same runs
                        'Constraint.ctype=flops', 'Constraint.max_constraint={}'.format(bound),
                        'Constraint.max_quantile=null',
                        'Constraint.table_file=null'] + (['-r', save_dir] if os.path.isdir(save_dir) else []),
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(done, 'w') as f:
            f.write('{:.1f}\n'.format(time.time() - start))
    return [(row_tokens(r), float(r['ap'])) for path in sorted(glob.glob(os.path.join(save_dir, 'search_history*.csv')))
            for r in History(path).rows if r['status'] == 'trained']


def annealing_minutes(work):
    total = 0.0
    for name in os.listdir(work):
        stamp = os.path.join(work, name, '.complete')
        if name.startswith('anneal') and os.path.isfile(stamp):
            with open(stamp) as f:
                total += float(f.read().strip() or 0)
    return total / 60


def top3_found(evaluated, reference):
    """How many of the reference's top 3 are among the evaluator's top 3."""
    best = lambda values: set(np.argsort(values)[::-1][:3])  # noqa: E731
    return len(best(evaluated) & best(reference))


def report(runner, configs, candidates, pricer, searches, bound, args, seconds):
    ref0 = [runner.ap(key_of('ref', t, 0)) for t in candidates]
    ref1 = [runner.ap(key_of('ref', t, 1)) for t in candidates]
    ref = [reference_ap(runner, t) for t in candidates]
    lines = ['# Search quality on the proxy task', '',
             'Command: `{}`'.format(' '.join(['python', 'bench/search_quality.py'] + args)),
             'Machine: {} ({} cores, {}); load average at the end {}.'.format(
                 platform.machine(), os.cpu_count(), platform.platform(), loadavg()),
             'Runtime: {} trainings whose wall times add up to {:.0f} min, run {} side by side (about {:.0f} min '
             'elapsed), plus {:.0f} min of annealing searches (train_nas.py, --workers 2); this invocation took '
             '{:.0f} min (results of earlier, interrupted invocations are read back, not re-run).'.format(
                 len(runner.results), sum(r['wall'] for r in runner.results.values()) / 60, runner.parallel,
                 sum(r['wall'] for r in runner.results.values()) / 60 / runner.parallel,
                 annealing_minutes(runner.work), seconds / 60),
             'Date: {}.'.format(datetime.date.today()), '',
             'Proxy task: portraits at 96x96 without clutter (800 train / 300 val images), demo.yml\'s model, RMSProp '
             'at base_lr 0.01, batch 8. {} candidates stratified by FLOPs ({:.1f} to {:.1f} MFLOPs).'.format(
                 len(candidates), min(pricer.price(t).flops for t in candidates) / 1e6,
                 max(pricer.price(t).flops for t in candidates) / 1e6), '',
             '## Reference ({} iterations, cosine schedule, seeds 0 and 1)'.format(REFERENCE_ITERS), '',
             '| tokens | MFLOPs | AP seed 0 | AP seed 1 | mean |', '|---|---|---|---|---|']
    for t, a, b, m in zip(candidates, ref0, ref1, ref):
        lines.append('| {} | {:.1f} | {:.3f} | {:.3f} | {:.3f} |'.format(' '.join(map(str, t)),
                                                                        pricer.price(t).flops / 1e6, a, b, m))
    lines += ['', 'Noise ceiling (Spearman, reference seed 0 vs seed 1): **{:.3f}**; reference best minus worst mean '
              'AP {:.3f}.'.format(spearman(ref0, ref1), max(ref) - min(ref)), '',
              '## Evaluators (Spearman against the reference mean)', '',
              '| evaluator | seed | Spearman vs reference | top 3 found | best - worst AP | cost (trainings x iterations) |',
              '|---|---|---|---|---|---|']
    for name, (schedule, iters, inherit, seeds) in EVALUATORS.items():
        for seed in seeds:
            values = [runner.ap(key_of(name, t, seed)) for t in candidates]
            cost = '{} x {}{}'.format(len(candidates), iters, ' + 1 x {} (parent)'.format(inherit) if inherit else '')
            lines.append('| {} | {} | {:.3f} | {}/3 | {:.3f} | {} |'.format(
                name, seed, spearman(values, ref), top3_found(values, ref), max(values) - min(values), cost))
    demo = [[runner.ap(key_of(DEMO_EVALUATOR, t, s)) for t in candidates] for s in (0, 1)]
    mean = list(np.mean(demo, axis=0))
    lines.append('| {}, mean of seeds 0 and 1 | 0+1 | {:.3f} | {}/3 | {:.3f} | {} x {} x 2 |'.format(
        DEMO_EVALUATOR, spearman(mean, ref), top3_found(mean, ref), max(mean) - min(mean), len(candidates),
        SHORT_ITERS))
    untrained = untrained_aps(runner.work, configs['cosine', SHORT_ITERS], candidates)
    lines += ['', 'The demo\'s evaluator, seed 0 against seed 1 over these {} candidates: Spearman **{:.3f}**, best '
              'minus worst AP {:.3f} / {:.3f}; the same networks untrained (their seed-0 initial weights): AP {:.4f} '
              'to {:.4f}.'.format(len(candidates), spearman(*demo), max(demo[0]) - min(demo[0]),
                                  max(demo[1]) - min(demo[1]), min(untrained), max(untrained))]
    lines += ['', '## Annealing against random sampling', '',
              '{} candidate trainings per search (demo.yml\'s evaluator: cosine, {} iterations), FLOPs bound {:.2f} '
              'MFLOPs (the space\'s median), {} repeats. Each pick is trained at the reference budget, seeds 0 and '
              '1 when it is one of the reference candidates, else seed 0. Repeat r searches with seed r; '
              '"re-ranked" adds 3 trainings (its top 3 with seed r+1, winner by the mean of 2).'.format(
                  SEARCH_TRAININGS, SHORT_ITERS, bound / 1e6, SEARCH_REPEATS), '',
              '| method | repeat | pick | its search reward | its reference AP |', '|---|---|---|---|---|']
    summary = {}
    for method, repeat, tokens, reward in searches:
        value = reference_ap(runner, tokens)
        summary.setdefault(method, []).append(value)
        lines.append('| {} | {} | {} | {:.3f} | {:.3f} |'.format(method, repeat, ' '.join(map(str, tokens)), reward,
                                                                value))
    lines += [''] + ['- {}: mean reference AP of the picks {:.3f} (min {:.3f}, max {:.3f})'.format(
        m, np.mean(v), min(v), max(v)) for m, v in summary.items()]
    path = os.path.join(HERE, 'SEARCH_QUALITY.md')
    write_section(path, 'proxy', '\n'.join(lines))  # bench/strategy_quality.py writes the part after it
    print('\n'.join(lines))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--parallel', type=int, default=2, help='trainings side by side (default 2)')
    parser.add_argument('--stages', default='reference,evaluators,search', help='what to run (comma-separated)')
    parser.add_argument('--work', default=os.path.join(WORK, 'search_quality'), help='results and weights')
    args = parser.parse_args()
    stages = args.stages.split(',')
    start = time.time()
    os.makedirs(args.work, exist_ok=True)
    data = proxy_dataset(args.work)
    configs = {(s, i): write_config(args.work, data, s, i)
               for s in SCHEDULES for i in (SHORT_ITERS // 2, SHORT_ITERS, REFERENCE_ITERS)}
    demo_config = configs['cosine', SHORT_ITERS]
    space, pricer = space_and_pricer(demo_config)
    candidates = stratified(space, pricer, CANDIDATES)
    runner = Runner(args.work, args.parallel)
    if 'evaluators' in stages:  # the demo's two seeds first: the cheapest figure the README states
        runner.run([j for j in evaluator_jobs(configs, candidates) if j[0].startswith(DEMO_EVALUATOR)])
    runner.run(reference_jobs(configs['cosine', REFERENCE_ITERS], candidates))
    if 'evaluators' in stages:
        runner.run(evaluator_jobs(configs, candidates))
    searches = []
    from ppdet.slim.nas.latency import sample_candidates
    bound = int(np.median([pricer.price(t).flops for t in sample_candidates(space, 4000, 0)]))
    if 'search' in stages:
        jobs = search_jobs(demo_config, space, pricer, bound)
        runner.run(jobs)
        for repeat in range(SEARCH_REPEATS):
            rows = [(j[2], runner.ap(j[0])) for j in jobs if j[0].startswith('random{} '.format(repeat))]
            tokens, reward = max(rows, key=lambda r: r[1])
            searches.append(('random', repeat, tokens, reward))
        for repeat in range(SEARCH_REPEATS):
            rows = run_annealing(args.work, demo_config, bound, repeat)
            tokens, reward = max(rows, key=lambda r: r[1])
            searches.append(('annealing', repeat, tokens, reward))
            top = top_candidates(rows, 3)
            again = [(key_of('rerank{}'.format(repeat), list(t), repeat + 1), demo_config, list(t), repeat + 1,
                      SHORT_ITERS, None) for t, _ in top]  # the search trained with seed=repeat
            runner.run(again)
            ranked = [Ranked(list(t), [repeat, repeat + 1], [ap, runner.ap(j[0])]) for (t, ap), j in zip(top, again)]
            best = max(ranked, key=lambda r: r.mean)
            searches.append(('annealing, re-ranked', repeat, best.tokens, best.mean))
        runner.run([(key_of('ref', t, 0), configs['cosine', REFERENCE_ITERS], t, 0, REFERENCE_ITERS, None)
                    for _, _, t, _ in searches])
    report(runner, configs, candidates, pricer, searches, bound, sys.argv[1:], time.time() - start)


if __name__ == '__main__':
    main()
