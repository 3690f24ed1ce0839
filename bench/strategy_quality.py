"""Which strategy, at a given budget, finds the better structure under the demo's latency limit: every strategy
run through the product's own search loop (``NasSearch``: its SANAS controller server or Optuna study, pricing,
skipping, re-ranking and report) with each training replaced by a draw of the surrogate (bench/surrogate.py:
the candidate's predicted mean AP plus seed noise).

    python bench/strategy_quality.py [--strategies sanas,random,evolution,tpe,nsga2] [--budgets 10,25,50,100,300]
                                     [--repeats 30] [--workers 2] [--out bench/strategy_quality.jsonl]
    python bench/strategy_quality.py --summary     # the table (markdown) and bench/search_quality_strategies.png
    python bench/strategy_quality.py --strategies tpe --budgets 300 --set rerank_top_k=5 --set rerank_seeds=2 \
        --out bench/strategy_quality_rerank_5x2.jsonl    # a variant of demo.yml (see RERANK_VARIANTS)

Each search is demo.yml as ``make demo`` runs it (its re-ranking of the top 2 with one more seed included) with
``search_steps`` = the budget, ``seed`` = the repeat, the latency limit = the demo's (45th percentile of the space
priced by the ground truth's fixed table, bench/ground_truth_latency.txt), in a save_dir of its own that is
deleted after. One JSON line per search is appended to ``--out`` (resumable: done searches are not run again):
the pick (the tokens the report names), its surrogate mean AP, its regret (the best surrogate mean among a large
priced sample of the space under the limit, minus the pick's), and the hypervolume of the front the report
writes (pareto.csv; latency and surrogate mean AP, as a fraction of the best front of the same sample).
"""
import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from common import REPO, loadavg, write_section  # noqa: E402  (it puts the repository on sys.path, quiets the libraries)

from bench.ground_truth import DEFAULT_TABLE, demo_limit, load_setup  # noqa: E402
from bench.surrogate import DEFAULT_DATA, DEFAULT_MODEL, KINDS, Surrogate, best_kind  # noqa: E402
from ppdet.core.cli import parse_overrides  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.strategies import STRATEGIES  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, 'strategy_quality.jsonl')
DOCUMENT = os.path.join(HERE, 'SEARCH_QUALITY.md')
REAL_CHECK = os.path.join(HERE, 'real_search_check.jsonl')  # bench/real_search_check.py's
PRUNING_CHECK = os.path.join(HERE, 'pruning_check.jsonl')  # and its pruning comparison's
# and issue 28's: the by-hand baseline against the recommended strategy, at 25 and 50 trainings
LARGEST_CHECKS = tuple(os.path.join(HERE, 'largest_check_{}.jsonl'.format(n)) for n in (25, 50))
LARGEST_COMMAND = ('python bench/real_search_check.py --strategies largest,tpe --steps {} --seeds {} --set '
                   'Constraint.near_limit=0.05 --set-for tpe --out bench/largest_check_{}.jsonl')
PRUNING_COMMAND = ('python bench/real_search_check.py --strategies tpe,tpe+hyperband,random,random+hyperband,'
                   'evolution,evolution+hyperband --out bench/pruning_check.jsonl')
PLOT = os.path.join(HERE, 'search_quality_strategies.png')
BUDGETS = (10, 25, 50, 100, 300)
# the searches' save_dirs: in memory where the machine has it (a study commits to SQLite a few times per candidate,
# and a disk's fsync would make the benchmark hours longer without changing a single pick)
SCRATCH = '/dev/shm' if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK) else None
SPACE_SAMPLE = 20000  # candidates priced and scored for the best under the limit and the best front
# the re-ranking's variants against demo.yml's (top 2, one more seed), for the recommended strategy: its figures
# before and after the re-ranking, and blazeface_improved.yml's (top 5, two more seeds); (label, --out file)
RERANK_VARIANTS = (('none (the pick is the best single reward)', 'strategy_quality_rerank_none.jsonl'),
                   ('top 5, two more seeds (blazeface_improved.yml)', 'strategy_quality_rerank_5x2.jsonl'))
# issue 28's variants of tpe that use what pricing knows, each on both surrogates: (label, GP file, forest file;
# the --set values each was run with are in its rows); read against largest's and tpe's rows of the main files
VARIANTS = (('tpe, warm_start 10', 'strategy_quality_tpe_warm10.jsonl', 'strategy_quality_forest_tpe_warm10.jsonl'),
            ('tpe, Constraint.near_limit 0.05', 'strategy_quality_tpe_near5.jsonl',
             'strategy_quality_forest_tpe_near5.jsonl'),
            ('tpe, both', 'strategy_quality_tpe_warm10_near5.jsonl', 'strategy_quality_forest_tpe_warm10_near5.jsonl'))
FOREST = os.path.join(HERE, 'strategy_quality_forest.jsonl')
RERANK_COMMAND = ('python bench/strategy_quality.py --strategies tpe --budgets 300 --set rerank_top_k=K '
                  '--set rerank_seeds=S --out bench/strategy_quality_rerank_{none,5x2}.jsonl')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def search_setup(strategy, budget, repeat, save_dir, limit, config, overrides=None):
    """demo.yml as make demo runs it, for one benchmark search."""
    values = {'strategy': strategy, 'search_steps': budget, 'seed': repeat, 'save_dir': save_dir,
              'server_port': free_port(), 'Constraint.max_constraint': limit,
              'Constraint.max_quantile': None}
    return load_setup(config, DEFAULT_TABLE, dict(values, **(overrides or {})))


def surrogate_search(surrogate, stream, setup):
    """The product's search (``build_search``) whose trainings are surrogate draws (no network is built): the
    strategy, pricing, skipping, re-ranking and report are the product's."""
    from ppdet.slim.nas.candidate import CandidateResult
    from ppdet.slim.nas.search import build_search
    from ppdet.slim.nas.vocabulary import Status

    def draw(tokens, out_dir, seed, parent, check):
        return CandidateResult(Status.TRAINED, surrogate.draw(tokens, seed, stream, setup.space), 0.0)
    return build_search(setup, train=draw)


class Reference:
    """The best a search could find under the limit, from a large priced sample of the space: the best surrogate
    mean, and the best front's hypervolume."""

    def __init__(self, surrogate, setup, limit, count=SPACE_SAMPLE, seed=0):
        from ppdet.slim.nas.latency import sample_candidates
        self.surrogate, self.space, self.limit = surrogate, setup.space, limit
        priced = [(t, setup.pricer.price(list(t)).latency_us) for t in sample_candidates(setup.space, count, seed)]
        admitted = [(tuple(t), lat) for t, lat in priced if lat is not None and lat <= limit]
        means = surrogate.mean([t for t, _ in admitted], setup.space)
        best = int(np.argmax(means))
        self.best_mean = float(means[best])
        self.floor = float(np.min(means))  # the hypervolume's reference AP
        self.best_hypervolume = hypervolume([(lat, m) for (_, lat), m in zip(admitted, means)], limit, self.floor)

    def score(self, pick, front):
        """(pick's surrogate mean, regret, front's hypervolume fraction); ``front``: (tokens, latency) pairs."""
        mean = float(self.surrogate.mean([pick], self.space)[0])
        means = self.surrogate.mean([t for t, _ in front], self.space) if front else []
        hv = hypervolume([(lat, m) for (_, lat), m in zip(front, means)], self.limit, self.floor)
        return mean, self.best_mean - mean, hv / self.best_hypervolume


def hypervolume(points, max_latency, min_ap):
    """Area dominated by ``points`` ((latency, ap): lower latency, higher AP better) within the box from
    (max_latency, min_ap): the sweep over latency of the best AP reached so far."""
    area, best = 0.0, min_ap
    inside = sorted((lat, ap) for lat, ap in points if lat <= max_latency and ap > min_ap)
    for (lat, ap), nxt in zip(inside, [p[0] for p in inside[1:]] + [max_latency]):
        best = max(best, ap)
        area += (nxt - lat) * (best - min_ap)
    return area


def read_front(save_dir):
    """(tokens, latency) of the report's pareto.csv."""
    import csv
    from ppdet.slim.nas.tokens import Tokens
    path = os.path.join(save_dir, 'pareto.csv')
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [(tuple(Tokens.parse(r['tokens'])), float(r['latency_us'])) for r in csv.DictReader(f)]


def run_one(strategy, budget, repeat, surrogate, reference, config, overrides=None):
    """One search on surrogate rewards; its result line."""
    start = time.time()
    save_dir = tempfile.mkdtemp(prefix='strategy_quality_', dir=SCRATCH)
    try:
        setup = search_setup(strategy, budget, repeat, save_dir, reference.limit, config, overrides)
        search = surrogate_search(surrogate, repeat, setup)
        with contextlib.redirect_stdout(io.StringIO()):  # the structure block and output paths
            tokens, _ = search.run()
        pick = tuple(int(t) for t in tokens)
        trained = [r for r in search.strategy.rows() if r['status'] == 'trained']
        latency = setup.pricer.price(list(pick)).latency_us
        mean, regret, hv = reference.score(pick, read_front(save_dir))
        return {'strategy': strategy, 'budget': budget, 'repeat': repeat, 'pick': list(pick),
                'pick_latency_us': latency, 'pick_mean_ap': mean, 'regret': regret, 'hypervolume': hv,
                'trainings': len(trained), 'asked': len(search.strategy.rows()), 'seconds': time.time() - start,
                'overrides': overrides or {}}
    finally:
        shutil.rmtree(save_dir, ignore_errors=True)


_WORKER = {}


def _init_worker(surrogate_path, config, overrides):
    logging.disable(logging.INFO)  # a search's per-candidate lines, thousands of searches over
    setup = load_setup(config, DEFAULT_TABLE)
    limit = demo_limit(setup)
    surrogate = Surrogate.load(surrogate_path)
    if surrogate.space_name != setup.space_name:
        raise SystemExit('error: {} models {}, the demo searches {}; refit it with python bench/surrogate.py'.format(
            surrogate_path, surrogate.space_name, setup.space_name))
    _WORKER.update(reference=Reference(surrogate, setup, limit), surrogate=surrogate, config=config,
                   overrides=overrides)


def _run_job(job):
    w = _WORKER
    return run_one(*job, w['surrogate'], w['reference'], w['config'], w['overrides'])


def done_keys(path):
    if not os.path.isfile(path):
        return set()
    with open(path) as f:
        return {(r['strategy'], r['budget'], r['repeat']) for r in map(json.loads, filter(str.strip, f))}


def run(jobs, out, workers, surrogate_path, config, overrides=None):
    """Run ``jobs`` ((strategy, budget, repeat)) not yet in ``out`` on ``workers`` processes, appending each."""
    jobs = [j for j in jobs if j not in done_keys(out)]
    start = time.time()
    print('{} searches to run'.format(len(jobs)), flush=True)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(surrogate_path, config, overrides)) as pool:
        for i, result in enumerate(pool.map(_run_job, jobs), 1):
            with open(out, 'a') as f:
                f.write(json.dumps(result) + '\n')
            pace = (time.time() - start) / i
            print('[{}/{}] {} budget {} repeat {}: regret {:.4f} hv {:.3f} ({:.0f}s) | eta {:.0f} min'.format(
                i, len(jobs), result['strategy'], result['budget'], result['repeat'], result['regret'],
                result['hypervolume'], result['seconds'], pace * (len(jobs) - i) / 60), flush=True)


def load_results(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(results):
    """{(strategy, budget): figures} over the repeats."""
    table = {}
    for r in results:
        table.setdefault((r['strategy'], r['budget']), []).append(r)
    out = {}
    for key, rows in table.items():
        regret = np.array([r['regret'] for r in rows])
        out[key] = {'repeats': len(rows), 'pick_mean_ap': float(np.mean([r['pick_mean_ap'] for r in rows])),
                    'regret_mean': float(regret.mean()), 'regret_sd': float(regret.std()),
                    'regret_q25': float(np.quantile(regret, 0.25)), 'regret_q75': float(np.quantile(regret, 0.75)),
                    'hypervolume_mean': float(np.mean([r['hypervolume'] for r in rows])),
                    'hypervolume_sd': float(np.std([r['hypervolume'] for r in rows])),
                    'seconds_mean': float(np.mean([r['seconds'] for r in rows]))}
    return out


def markdown_table(summary):
    strategies = [s for s in STRATEGIES if any(k[0] == s for k in summary)]
    budgets = sorted({k[1] for k in summary})
    lines = ['| strategy | ' + ' | '.join('{} trainings'.format(b) for b in budgets) + ' |',
             '|---|' + '---|' * len(budgets)]
    for s in strategies:
        cells = []
        for b in budgets:
            f = summary.get((s, b))
            cells.append('-' if f is None else '{:.4f} ± {:.4f} (AP {:.3f}, HV {:.2f}; n={})'.format(
                f['regret_mean'], f['regret_sd'], f['pick_mean_ap'], f['hypervolume_mean'], f['repeats']))
        lines.append('| {} | {} |'.format(s, ' | '.join(cells)))
    return '\n'.join(lines)


def ground_truth_text(trainings, report, limit, data_path):
    """The ground truth's section: what was trained, how long it took, and the noise of one training."""
    cands = {t.tokens for t in trainings}
    band = {t.tokens for t in trainings if t.band}
    a, b = report['all'], report['band']
    return ['### Ground truth', '',
            'Command: `python bench/ground_truth.py --workers 2` (resumable; larger `--candidates`/`--band` extend '
            'it). Data: `{}`, one JSON line per training; latencies from the fixed table '
            '`bench/ground_truth_latency.txt`; the demo\'s limit from that table: {:.0f} us.'.format(
                os.path.relpath(data_path, REPO), limit),
            'Trainings: {} ({} candidates, {} with both seeds; {} within +-5% of the limit), {:.1f} h of training '
            'time in all (2 side by side). Each is a demo search step: demo.yml\'s data, model and evaluator, 300 '
            'iterations, cosine schedule.'.format(len(trainings), len(cands), a['candidates'], len(band),
                                                  sum(t.train_seconds for t in trainings) / 3600), '',
            '| candidates | seed 0 vs seed 1 (Spearman) | one training\'s noise (sd of AP) | best - worst mean AP |',
            '|---|---|---|---|',
            '| all ({}) | {:.3f} | {:.4f} | {:.3f} |'.format(a['candidates'], a['seed_spearman'], a['noise_sd'],
                                                           a['best_minus_worst']),
            '| within +-5% of the limit ({}) | {:.3f} | {:.4f} | {} |'.format(
                b['candidates'], b['seed_spearman'], b['noise_sd'],
                '-' if b['best_minus_worst'] is None else '{:.3f}'.format(b['best_minus_worst'])), '']


def surrogate_text(report, used):
    """The surrogate's section: held-out Spearman of each model kind against the seed-to-seed ceiling."""
    lines = ['### Surrogate', '',
             'Command: `python bench/surrogate.py` (refits `bench/surrogate.joblib` with the kind that ranks best: '
             '{}). Held-out: 5 folds grouped by candidate; "vs one seed" is comparable with the ceiling (one training '
             'against another), "vs mean" is against the mean of both seeds.'.format(used), '',
             '| model | all: vs one seed | all: vs mean | band: vs one seed | band: vs mean |', '|---|---|---|---|---|',
             '| ceiling: seed 0 vs seed 1 | {:.3f} | | {:.3f} | |'.format(report['all']['seed_spearman'],
                                                                       report['band']['seed_spearman'])]
    for kind in KINDS:
        a, b = report['all'][kind], report['band'][kind]
        lines.append('| {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |'.format(kind, a['vs_one_seed'], a['vs_mean'],
                                                                        b['vs_one_seed'], b['vs_mean']))
    return lines + ['']


def rerank_text(main_summary):
    """The re-ranking's variants (RERANK_VARIANTS) against demo.yml's own, where they were run."""
    results = [(label, load_results(os.path.join(HERE, name))) for label, name in RERANK_VARIANTS
               if os.path.isfile(os.path.join(HERE, name))]
    if not results:
        return []
    runs = [(label, summarize(rows)) for label, rows in results]
    keys = sorted({k for _, summary in runs for k in summary})
    runs.insert(1, ('top 2, one more seed (demo.yml, the table above)', {k: main_summary.get(k) for k in keys}))
    hours = sum(r['seconds'] for _, rows in results for r in rows) / 3600
    lines = ['### Re-ranking', '', 'Command: `{}` (K=0 for none, K=5 S=2); {:.1f} h of search time. A variant\'s '
             'searches are the table\'s up to the re-ranking (same seeds, same rewards), so a difference is the '
             're-ranking\'s. Cell: mean regret ± sd over the repeats (surrogate mean AP of the pick; n).'.format(
                 RERANK_COMMAND, hours), '',
             '| re-ranking | ' + ' | '.join('{} at {}'.format(*k) for k in keys) + ' |', '|---|' + '---|' * len(keys)]
    for label, summary in runs:
        cells = ['-' if summary.get(k) is None else '{:.4f} ± {:.4f} (AP {:.3f}; n={})'.format(
            summary[k]['regret_mean'], summary[k]['regret_sd'], summary[k]['pick_mean_ap'], summary[k]['repeats'])
            for k in keys]
        lines.append('| {} | {} |'.format(label, ' | '.join(cells)))
    return lines + ['']


def paired_difference(results, baseline, budget):
    """(mean, standard error, count) of ``results``' regret minus ``baseline``'s, search by search: the same budget
    and repeat (whose seed and surrogate noise stream they share)."""
    theirs = {r['repeat']: r['regret'] for r in baseline if r['budget'] == budget}
    d = np.array([r['regret'] - theirs[r['repeat']] for r in results
                  if r['budget'] == budget and r['repeat'] in theirs])
    return (float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d)) if len(d) > 1 else None


def variants_text(main_results):
    """Issue 28's variants (VARIANTS) against largest and plain tpe, on the GP surrogate and the forest, where run:
    mean regrets, and each variant's paired difference with largest."""
    forest = load_results(FOREST) if os.path.isfile(FOREST) else []
    largest = [[r for r in rs if r['strategy'] == 'largest'] for rs in (main_results, forest)]
    rows = [(s, [[r for r in rs if r['strategy'] == s] for rs in (main_results, forest)]) for s in ('largest', 'tpe')]
    ran = []
    for label, *names in VARIANTS:
        files = [os.path.join(HERE, name) for name in names]
        results = [load_results(f) if os.path.isfile(f) else [] for f in files]
        if any(results):
            rows.append((label, results))
        ran += ['`{}`: {}'.format(os.path.basename(f), ', '.join(sorted({' '.join(
            '{}={}'.format(k, v) for k, v in sorted(r['overrides'].items())) for r in rs}))) for f, rs in
            zip(files, results) if rs]
    if len(rows) == 2:
        return []
    budgets = sorted({r['budget'] for _, pair in rows[2:] for rs in pair for r in rs})

    def mean(rs, budget):
        regrets = [r['regret'] for r in rs if r['budget'] == budget]
        return '{:.4f} ({})'.format(np.mean(regrets), len(regrets)) if regrets else '-'

    def versus(rs, base, budget):
        d = paired_difference(rs, base, budget)
        return '-' if d is None else '{:+.4f} ± {:.4f}'.format(*d[:2])
    header = ['| strategy | ' + ' | '.join('{} trainings'.format(b) for b in budgets) + ' |',
              '|---|' + '---|' * len(budgets)]
    lines = ['### Using what pricing knows (issue 28)', '',
             'Commands: `python bench/strategy_quality.py --strategies tpe --budgets 6,10,25,50,100 --set VALUES --out '
             'bench/FILE` for each variant, and the same with `--surrogate bench/surrogate_forest.joblib` into its '
             'forest file; {:.1f} h of search time, 2 workers on the 2-core VM, beside other benchmarks. The values '
             'each file was run with: {}. Cell: mean regret (repeats), GP surrogate / forest surrogate; lower is '
             'better.'.format(sum(r['seconds'] for _, pair in rows[2:] for rs in pair for r in rs) / 3600,
                              '; '.join(ran)), ''] + header
    for label, pair in rows:
        lines.append('| {} | {} |'.format(label, ' | '.join(
            '{} / {}'.format(*(mean(rs, b) for rs in pair)) for b in budgets)))
    lines += ['', 'Each variant minus `largest`, search by search (same budget and repeat), mean ± standard error, '
              'GP / forest; negative: the variant\'s pick is better.', ''] + header
    for label, pair in rows[1:]:
        lines.append('| {} | {} |'.format(label, ' | '.join(
            '{} / {}'.format(*(versus(rs, base, b) for rs, base in zip(pair, largest))) for b in budgets)))
    return lines + ['']


def real_check_text(path, title, command, what):
    """A section of real searches (bench/real_search_check.py's ``--out``), if they were run: each search's pick,
    its AP trained again with seeds 0 and 1, the training iterations the search spent, and the surrogate's view."""
    lines = ['### ' + title, '']
    if not os.path.isfile(path):
        return lines + ['Not run yet: `{}` ({}).'.format(command, what), '']
    rows = load_results(path)
    lines += ['Command: `{}`: {}, each `train_nas.py -c demo.yml --workers 2` with {} search steps and the demo\'s '
              're-ranking; each pick trained again with seeds 0 and 1 as the ground truth is. Iterations: the '
              'training iterations the search spent (a pruned candidate\'s up to where it stopped, the re-ranking\'s '
              'included); training: their time in minutes, summed over the two workers; wall: the search\'s minutes '
              'on the wall clock ({:.0f} in all, the picks\' trainings not included).'.format(
                  command, what, rows[0]['steps'], sum(r['wall_seconds'] for r in rows) / 60), '',
              '| search | pick | latency (us) | iterations | training | wall | AP as reported | AP seeds 0, 1 (mean) '
              '| surrogate: pick AP | benchmark: mean pick AP at this budget |', '|---' * 10 + '|']
    for r in rows:
        seeds = [a for a in r['ap_seeds'] if a is not None]
        label = ' '.join([r['strategy']] + ['{}={}'.format(k, v) for k, v in sorted(r.get('overrides', {}).items())] +
                         (['seed {}'.format(r['seed'])] if r.get('seed') else []))
        lines.append('| {} | {} | {:.0f} | {} | {:.1f} | {:.1f} | {:.3f} | {} ({:.3f}) | {:.3f} | {} |'.format(
            label, ' '.join(map(str, r['pick'])), r['latency_us'], r['iterations'], r['train_seconds'] / 60,
            r['wall_seconds'] / 60, r['reported_ap'],
            ', '.join('{:.3f}'.format(a) for a in seeds), sum(seeds) / len(seeds), r['surrogate_mean_ap'],
            '-' if r['benchmark_mean_pick_ap'] is None else '{:.3f}'.format(r['benchmark_mean_pick_ap'])))
    return lines + ['']


def write_document(results_path, data_path, doc, note=None):
    """bench/SEARCH_QUALITY.md's part on budgets: ground truth, surrogate, and the strategies' table and plot if
    they were run."""
    from bench.surrogate import fit_report, load_ground_truth
    setup = load_setup(os.path.join(REPO, 'demo.yml'), DEFAULT_TABLE)
    trainings = load_ground_truth(data_path)
    report = fit_report(trainings, setup.space)
    lines = ['## At the budgets users run: strategies on a surrogate of the proxy task', '',
             'Machine: {} ({} cores, {}); load average at the end {}. Date: {}.'.format(
                 platform.machine(), os.cpu_count(), platform.platform(), loadavg(), datetime.date.today()), '']
    lines += ['**Status:** {}'.format(note), ''] if note else []
    lines += ground_truth_text(trainings, report, demo_limit(setup), data_path)
    lines += surrogate_text(report, best_kind(report))
    lines += ['### Strategies by budget', '']
    if os.path.isfile(results_path):
        results = load_results(results_path)
        summary = summarize(results)
        plot(summary, PLOT)
        lines += ['Command: `python bench/strategy_quality.py --workers 2` then `--summary`; {} searches, {:.1f} h '
                  'of search time in all.'.format(len(results), sum(r['seconds'] for r in results) / 3600),
                  'Cell: mean regret +- sd (surrogate mean AP of the pick; hypervolume of the reported front as a '
                  'fraction of the best front; repeats).', '', markdown_table(summary), '',
                  '![regret against budget](search_quality_strategies.png)', '']
        lines += rerank_text(summary)
        lines += variants_text(results)
    else:
        lines += ['Not run yet: `python bench/strategy_quality.py --workers 2` needs the fitted surrogate.']
    lines += [''] + real_check_text(REAL_CHECK, 'Checked for real', 'python bench/real_search_check.py',
                                    'one real search per strategy')
    lines += real_check_text(PRUNING_CHECK, 'Stopping poor candidates early (pruner)', PRUNING_COMMAND,
                             'each single-objective strategy without and with `pruner: hyperband`')
    for path, steps, seeds in zip(LARGEST_CHECKS, (25, 50), ('0,1', '0')):
        lines += real_check_text(path, 'The by-hand baseline against tpe near the limit, for real, {} trainings'.format(
            steps), LARGEST_COMMAND.format(steps, seeds, steps), 'largest and tpe with Constraint.near_limit 0.05')
    write_section(doc, 'budgets', '\n'.join(lines))
    return '\n'.join(lines)


def plot(summary, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for s in STRATEGIES:
        keys = sorted(k for k in summary if k[0] == s)
        if not keys:
            continue
        x = [k[1] for k in keys]
        ax.plot(x, [summary[k]['regret_mean'] for k in keys], '-o', ms=4, label=s)
        ax.fill_between(x, [summary[k]['regret_q25'] for k in keys], [summary[k]['regret_q75'] for k in keys],
                        alpha=0.15)
    ax.set_xscale('log')
    ax.set_xlabel('budget (candidate trainings)')
    ax.set_ylabel('regret: best surrogate AP under the limit - pick\'s')
    ax.set_title('Strategies on the surrogate (mean, band: 25-75%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--strategies', default=','.join(STRATEGIES))
    parser.add_argument('--budgets', default=','.join(map(str, BUDGETS)))
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--surrogate', default=DEFAULT_MODEL)
    parser.add_argument('--config', default=os.path.join(REPO, 'demo.yml'))
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--data', default=DEFAULT_DATA, help='the ground truth (for --summary)')
    parser.add_argument('--summary', action='store_true',
                        help='write the ground truth, surrogate and strategies part of bench/SEARCH_QUALITY.md')
    parser.add_argument('--note', help='a status line for the section (with --summary)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='a config value for every search (a variant of demo.yml; give it its own --out)')
    args = parser.parse_args()
    if args.summary:
        print(write_document(args.out, args.data, DOCUMENT, args.note))
        return
    strategies = args.strategies.split(',')
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        sys.exit('error: --strategies {}: not one of {}'.format(unknown[0], ', '.join(STRATEGIES)))
    if not os.path.isfile(args.surrogate):  # before the workers start: their failure would be a traceback
        sys.exit('error: {}: no surrogate; fit it with python bench/surrogate.py --out {}'.format(
            args.surrogate, args.surrogate))
    try:
        overrides = parse_overrides(args.set, '--set')
    except ConfigError as e:
        sys.exit('error: {}'.format(e))
    if overrides and os.path.abspath(args.out) == DEFAULT_OUT:
        sys.exit('error: --set makes a variant of demo.yml; give its results a file of their own with --out')
    jobs = [(s, int(b), r) for r in range(args.repeats) for b in args.budgets.split(',') for s in strategies]
    run(jobs, args.out, args.workers, args.surrogate, args.config, overrides)


if __name__ == '__main__':
    main()
