"""Checked for real: one real search per strategy on the demo's data (``train_nas.py --workers 2``, demo.yml with the
ground truth's fixed table and the demo's limit), each pick then trained with seeds 0 and 1 as the ground truth is
trained, against what the surrogate predicts for that pick and what the surrogate benchmark found for that strategy
at the same budget.

    python bench/real_search_check.py [--strategies sanas,random,evolution,tpe,nsga2] [--steps 25]
                                      [--out bench/real_search_check.jsonl]
    python bench/real_search_check.py --strategies tpe,tpe+hyperband,random,random+hyperband,evolution,\
        evolution+hyperband --out bench/pruning_check.jsonl
    python bench/real_search_check.py --strategies largest,tpe --steps 25 --seeds 0,1,2 \
        --set Constraint.near_limit=0.05 --set-for tpe --out bench/largest_check_25.jsonl   # issue 28's check

A strategy written ``NAME+PRUNER`` is that strategy with ``pruner: PRUNER`` (issue 20's pruning comparison; the
search without the pruner is the real check's own, read back rather than run again). Every search also records the
training iterations it spent (a pruned candidate's up to where it stopped, the re-ranking's included), for the pick's
quality per iteration. ``--seeds`` repeats each search with other values of the config's ``seed``; ``--set`` makes
the searches of the strategies in ``--set-for`` a variant of demo.yml.

Resumable: a finished search is read back, an interrupted one is resumed (``-r``), a pick's trainings already in
``--picks`` (bench/real_search_picks.jsonl, the ground truth's format) are not trained again. Searches and their
logs are under $BENCH_WORK (default /tmp/blazeface_bench)/real_search/<strategy>.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from common import REPO, WORK  # noqa: E402  (it puts the repository on sys.path and quiets the libraries)

from bench.ground_truth import BAND, DEFAULT_TABLE, SEEDS, Runner, demo_limit, done_keys, load_setup  # noqa: E402
from bench.strategy_quality import STRATEGIES, free_port, load_results  # noqa: E402

DEMO = os.path.join(REPO, 'demo.yml')
DEFAULT_OUT = os.path.join(HERE, 'real_search_check.jsonl')
PICKS = os.path.join(HERE, 'real_search_picks.jsonl')
BEST = re.compile(r'^# best tokens (\[[\d, ]+\]) \(AP ([\d.]+)\)')
STAMP = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+-')  # a search log line's time


def wall_seconds(log_path):
    """From the search log's first timed line to its last (a resumed search's pause included)."""
    import datetime
    with open(log_path) as f:
        stamps = [m.group(1) for m in map(STAMP.match, f) if m]
    first, last = (datetime.datetime.strptime(t, '%Y-%m-%d %H:%M:%S') for t in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def run_demo_search(save_dir, limit, overrides):
    """Run, or resume with ``-r``, ``train_nas.py -c demo.yml --workers 2`` priced with the ground truth's table and
    the demo's ``limit``, with more ``overrides`` (-o key=value), into ``save_dir`` (its log beside it), unless it
    has finished already."""
    if os.path.isfile(os.path.join(save_dir, 'best_structure.yml')):
        return
    os.makedirs(os.path.dirname(save_dir), exist_ok=True)
    values = dict(overrides, save_dir=save_dir, server_port=free_port(), **{
        'Constraint.table_file': DEFAULT_TABLE, 'Constraint.max_constraint': limit, 'Constraint.max_quantile': 'null'})
    cmd = [sys.executable, '-u', os.path.join(REPO, 'train_nas.py'), '-c', DEMO, '--workers', '2', '-o'] + [
        '{}={}'.format(k, v) for k, v in values.items()]
    if os.path.isdir(save_dir):
        cmd += ['-r', save_dir]
    print(' '.join(cmd), flush=True)
    with open(save_dir + '.log', 'a') as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)


def read_pick(save_dir):
    """The finished search's pick and its reward as reported (best_structure.yml's first line)."""
    with open(os.path.join(save_dir, 'best_structure.yml')) as f:
        tokens, reward = BEST.match(f.readline()).groups()
    return json.loads(tokens), float(reward)


def search(label, steps, limit, overrides=None, seed=0):
    """Run (or resume, or read back) the real search; (pick tokens, its reward as reported, save_dir). A search
    with ``overrides`` (--set) or another ``seed`` than 0 has a folder of its own."""
    strategy, _, pruner = label.partition('+')
    variant = ''.join('_{}{}'.format(k.split('.')[-1], v) for k, v in sorted((overrides or {}).items()))
    folder = label + variant + ('_steps{}_seed{}'.format(steps, seed) if (variant or seed or steps != 25) else '')
    save_dir = os.path.join(WORK, 'real_search', folder)
    run_demo_search(save_dir, limit, dict(overrides or {}, strategy=strategy, pruner=pruner or 'none',
                                          search_steps=steps, seed=seed))
    return read_pick(save_dir) + (save_dir,)


def spent(save_dir, max_iters):
    """(training iterations, training seconds) of the search: each candidate trained to the end or to where it was
    pruned (from the history and, for pruned ones, the study's intermediate values), and the re-ranking's."""
    import csv
    import glob

    def read(path):
        with open(path) as f:
            return list(csv.DictReader(f))

    # an Optuna study's history is one file; sanas's workers each write their own (search_history_<host>_<pid>.csv)
    history = [r for path in sorted(glob.glob(os.path.join(save_dir, 'search_history*.csv'))) for r in read(path)]
    rerank_path = os.path.join(save_dir, 'rerank.csv')
    reranks = read(rerank_path) if os.path.isfile(rerank_path) else []
    iterations = max_iters * (sum(r['status'] in ('trained', 'failed') for r in history) + len(reranks))
    if any(r['status'] == 'pruned' for r in history):
        import optuna
        from optuna.trial import TrialState
        study = optuna.load_study(study_name='blazeface-nas', storage='sqlite:///' + os.path.join(save_dir, 'study.db'))
        iterations += sum(max(t.intermediate_values) for t in study.get_trials(states=(TrialState.PRUNED,))
                          if t.intermediate_values)  # a priced-out candidate is PRUNED before any
    return iterations, sum(float(r['train_seconds'] or 0) for r in history + reranks)


def train_picks(picks, setup, limit, path):
    """Both seeds of every pick, as the ground truth trains them, into ``path``; {(tokens, seed): ap}."""
    jobs = [(list(t), s) for t in picks for s in SEEDS if (tuple(t), s) not in done_keys(path)]
    band_of = {tuple(t): abs(setup.pricer.price(list(t)).latency_us / limit - 1) <= BAND for t in picks}
    if jobs:
        Runner(jobs, path, DEMO, DEFAULT_TABLE, 2, band_of).run()
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {(tuple(r['tokens']), r['seed']): r['ap'] for r in rows}


def predicted_at(results_path, strategy, budget):
    """The surrogate benchmark's mean pick AP for ``strategy`` at ``budget``, if it was run."""
    if not os.path.isfile(results_path):
        return None
    picks = [r['pick_mean_ap'] for r in load_results(results_path) if r['strategy'] == strategy and
             r['budget'] == budget]
    return sum(picks) / len(picks) if picks else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--strategies', default=','.join(STRATEGIES))
    parser.add_argument('--steps', type=int, default=25)
    parser.add_argument('--surrogate', default=os.path.join(HERE, 'surrogate.joblib'))
    parser.add_argument('--benchmark', default=os.path.join(HERE, 'strategy_quality.jsonl'))
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--picks', default=PICKS, help="the picks' trainings (the ground truth's format)")
    parser.add_argument('--seeds', default='0', help='one search per strategy and seed (the config key seed)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='a config value for the searches of the strategies named in --set-for')
    parser.add_argument('--set-for', default='', help='the strategies --set applies to (comma-separated)')
    args = parser.parse_args()
    from ppdet.core.cli import parse_overrides
    overrides = parse_overrides(args.set, '--set')
    variant_of = set(filter(None, args.set_for.split(',')))
    from bench.surrogate import Surrogate
    setup = load_setup(DEMO, DEFAULT_TABLE)
    limit = demo_limit(setup)
    found = {(s, seed): search(s, args.steps, limit, overrides if s in variant_of else None, seed)
             for seed in map(int, args.seeds.split(',')) for s in args.strategies.split(',')}
    aps = train_picks([tokens for tokens, _, _ in found.values()], setup, limit, args.picks)
    surrogate = Surrogate.load(args.surrogate)
    with open(args.out, 'w') as f:
        for (strategy, seed), (tokens, reward, save_dir) in found.items():
            iterations, seconds = spent(save_dir, setup.settings.max_iters)
            row = {'strategy': strategy, 'seed': seed, 'overrides': overrides if strategy in variant_of else {},
                   'steps': args.steps, 'pick': tokens, 'reported_ap': reward,
                   'iterations': iterations, 'train_seconds': seconds, 'wall_seconds': wall_seconds(save_dir + '.log'),
                   'latency_us': setup.pricer.price(tokens).latency_us,
                   'ap_seeds': [aps.get((tuple(tokens), s)) for s in SEEDS],
                   'surrogate_mean_ap': float(surrogate.mean([tokens], setup.space)[0]),
                   'benchmark_mean_pick_ap': None if strategy in variant_of else predicted_at(
                       args.benchmark, strategy, args.steps)}
            f.write(json.dumps(row) + '\n')
            print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
