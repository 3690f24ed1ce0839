"""One-shot search for real, at equal cost: a supernet trained once, a search on its scores, the top candidates
trained from scratch (``evaluator: supernet``), the whole cost in standalone trainings, against the strategy table's
searches of 50 trainings and the largest-under-the-limit baseline.

    python bench/supernet_search.py [--seeds 0,1,2] [--iters 1200] [--steps 300] [--strategy tpe] [--top-k 5]
    python bench/supernet_search.py --seeds 0+1,1+2,0+2      # each search on the mean of two supernets' scores
    python bench/supernet_search.py --summary

Per supernet seed: the supernet of ``python tools/supernet.py train -c demo.yml --out DIR -o seed=S
supernet_iters=N`` (bench/supernet_rank.py's, reused when it is there), then ``train_nas.py -c demo.yml --workers 2
-o evaluator=supernet supernet_weights=DIR strategy=tpe search_steps=STEPS rerank_top_k=K rerank_seeds=2`` (demo.yml
priced with the ground truth's fixed table and the demo's limit, seed 0), so the pick (the report's re-ranked winner)
is trained with seeds 0 and 1 exactly as the ground truth's candidates are. One JSON line per search is appended to
``--out``: the pick, its two standalone APs, its regret on both surrogates (bench/surrogate.joblib, the GP, and
bench/surrogate_forest.joblib: the best surrogate mean among 20000 priced candidates under the limit minus the
pick's, as bench/strategy_quality.py scores a search), the best-scored candidate's regret (what the supernet alone
would have picked), and the cost: supernet training, scorings and re-ranking trainings in seconds and in
standalone trainings (the ground truth's mean train_seconds, measured the same way: 2 processes side by side, one
math thread each). Resumable: a finished search is read back, an interrupted one resumed with ``-r``.
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from common import REPO, WORK  # noqa: E402  (it puts the repository on sys.path, quiets the libraries)

import numpy as np  # noqa: E402

from bench.ground_truth import DEFAULT_TABLE, demo_limit, load_setup  # noqa: E402
from bench.real_search_check import DEMO, read_pick, run_demo_search  # noqa: E402
from bench.strategy_quality import Reference, load_results, summarize  # noqa: E402
from bench.supernet_rank import tool_command  # noqa: E402
from bench.surrogate import DEFAULT_DATA, DEFAULT_MODEL, Surrogate, load_ground_truth  # noqa: E402
from bench.zero_cost import machine, read_rows  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, 'supernet_search.jsonl')
FOREST = os.path.join(HERE, 'surrogate_forest.joblib')
SURROGATES = (('gp', DEFAULT_MODEL, os.path.join(HERE, 'strategy_quality.jsonl')),
              ('forest', FOREST, os.path.join(HERE, 'strategy_quality_forest.jsonl')))


def supernet_dir(seed, iters):
    """The supernet of bench/supernet_rank.py (trained with the README's command if it is not there yet)."""
    folder = os.path.join(WORK, 'supernets', 'seed{}_iters{}'.format(seed, iters))
    if not os.path.isfile(os.path.join(folder, 'supernet.json')):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        with open(folder + '.log', 'a') as log:
            subprocess.run(tool_command('train', DEMO, seed, iters, '--out', folder), cwd=REPO, stdout=log,
                           stderr=log, check=True)
    return folder


def search(weights, label, args, limit):
    save_dir = os.path.join(WORK, 'supernet_search', label)
    run_demo_search(save_dir, limit, {'evaluator': 'supernet', 'supernet_weights': json.dumps(weights),
                                      'strategy': args.strategy, 'search_steps': args.steps,
                                      'rerank_top_k': args.top_k, 'rerank_seeds': 2, 'seed': 0})
    return save_dir


def _csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def outcome(save_dir, weights, references, mean_train):
    pick = tuple(read_pick(save_dir)[0])
    rerank = _csv(os.path.join(save_dir, 'rerank.csv'))
    pick_aps = {int(r['seed']): float(r['ap']) for r in rerank if tuple(map(int, r['tokens'].split())) == pick}
    scored = [r for r in _csv(os.path.join(save_dir, 'search_history.csv')) if r['status'] == 'trained']
    top = tuple(map(int, max(scored, key=lambda r: float(r['ap']))['tokens'].split()))
    supernet_seconds = 0.0
    for folder in weights:
        with open(os.path.join(folder, 'supernet.json')) as f:
            supernet_seconds += json.load(f)['seconds']
    seconds = {'supernet': supernet_seconds, 'scorings': sum(float(r['train_seconds']) for r in scored),
               'rerank': sum(float(r['train_seconds']) for r in rerank)}
    row = {'pick': list(pick), 'pick_ap_seed0': pick_aps.get(0), 'pick_ap_seed1': pick_aps.get(1),
           'top_scored': list(top), 'scorings': len(scored), 'rerank_trainings': len(rerank),
           'seconds': {k: round(v, 1) for k, v in seconds.items()},
           'cost_trainings': {k: round(v / mean_train, 2) for k, v in seconds.items()}}
    row['cost_trainings']['whole'] = round(sum(seconds.values()) / mean_train, 2)
    for kind, reference in references.items():
        row['regret_' + kind] = reference.score(pick, [])[1]
        row['top_scored_regret_' + kind] = reference.score(top, [])[1]
    return row


def run(args):
    setup = load_setup(DEMO, DEFAULT_TABLE)
    limit = demo_limit(setup)
    mean_train = float(np.mean([t.train_seconds for t in load_ground_truth(DEFAULT_DATA)]))
    references = {kind: Reference(Surrogate.load(path), setup, limit) for kind, path, _ in SURROGATES}
    done = {(r['supernet_seed'], r['iters'], r['steps'], r['strategy'], r['top_k']) for r in read_rows(args.out)}
    for spec in args.seeds.split(','):  # a seed, or seeds joined by + (their supernets' scores averaged)
        seed = int(spec) if spec.isdigit() else spec
        key = (seed, args.iters, args.steps, args.strategy, args.top_k)
        if key in done:
            continue
        weights = [supernet_dir(int(s), args.iters) for s in spec.split('+')]
        label = 'seed{}_iters{}_{}{}_top{}'.format(spec, args.iters, args.strategy, args.steps, args.top_k)
        row = dict(zip(('supernet_seed', 'iters', 'steps', 'strategy', 'top_k'), key))
        row.update(outcome(search(weights, label, args, limit), weights, references, mean_train))
        row.update(machine=machine(), date=datetime.date.today().isoformat())
        with open(args.out, 'a') as f:
            f.write(json.dumps(row) + '\n')
        print(json.dumps(row), flush=True)


def costs(row):
    """The search's cost in standalone trainings: its supernet's and its scorings' seconds over the mean seconds of
    its own re-ranking trainings (the same machine and set-up: 2 workers side by side, 1 math thread each; candidates
    near the limit, as a latency-limited search trains), plus those trainings themselves."""
    unit = row['seconds']['rerank'] / row['rerank_trainings']
    supernet, scorings = row['seconds']['supernet'] / unit, row['seconds']['scorings'] / unit
    return {'unit_seconds': unit, 'supernet': supernet, 'scorings': scorings, 'rerank': row['rerank_trainings'],
            'whole': supernet + scorings + row['rerank_trainings'], 'no_rerank': supernet + scorings}


def summary_lines(out):
    rows = read_rows(out)
    if not rows:
        return []
    lines = ['', '## One-shot search at equal cost (generated by `python bench/supernet_search.py --summary`)', '',
             'Each row: the searches of one setting, one per supernet seed (1200-iteration supernets of '
             'bench/supernet_rank.py, and seed 2 trained the same way). Cost in standalone trainings: the supernet\'s '
             'training and the scorings in seconds over the mean seconds of the search\'s own re-ranking trainings '
             '(same machine, 2 workers side by side, 1 math thread each), plus those trainings. Regret on the GP and '
             'the forest surrogate (best surrogate mean under the limit minus the pick\'s); the pick\'s AP trained '
             'with seeds 0 and 1. The second line of each setting is the same searches\' best-scored candidate taken '
             'as it is (no re-ranking: its cost leaves the re-ranking out).', '',
             '| setting | searches | cost: whole (supernet + scorings + re-ranking) | regret GP | regret forest | '
             'pick AP seeds 0 / 1 |', '|---|---|---|---|---|---|']
    groups = {}
    for r in rows:
        size = len(str(r['supernet_seed']).split('+'))
        groups.setdefault((size, r['iters'], r['strategy'], r['steps'], r['top_k']), []).append(r)
    for (size, iters, strategy, steps, top_k), group in sorted(groups.items()):
        cost = {k: np.mean([costs(r)[k] for r in group]) for k in ('whole', 'supernet', 'scorings', 'rerank',
                                                                  'no_rerank', 'unit_seconds')}
        name = '{} {} it., {} {} scorings'.format('supernet' if size == 1 else 'mean of {} supernets'.format(size),
                                                 iters, strategy, steps)
        lines.append('| {}, top {} x 2 trainings | {} | {:.1f} ({:.1f} + {:.1f} + {:.0f}) | {:.3f} +- {:.3f} | '
                     '{:.3f} +- {:.3f} | {:.3f} / {:.3f} |'.format(
                         name, top_k, len(group), cost['whole'], cost['supernet'], cost['scorings'], cost['rerank'],
                         *_mean_sd([r['regret_gp'] for r in group]), *_mean_sd([r['regret_forest'] for r in group]),
                         np.mean([r['pick_ap_seed0'] for r in group]), np.mean([r['pick_ap_seed1'] for r in group])))
        lines.append('| {}, best score, no re-ranking | {} | {:.1f} ({:.1f} + {:.1f}) | {:.3f} +- {:.3f} | '
                     '{:.3f} +- {:.3f} | - |'.format(
                         name, len(group), cost['no_rerank'], cost['supernet'], cost['scorings'],
                         *_mean_sd([r['top_scored_regret_gp'] for r in group]),
                         *_mean_sd([r['top_scored_regret_forest'] for r in group])))
    units = [costs(r)['unit_seconds'] for r in rows]
    lines += ['', 'One standalone training took {:.1f} s on average in these searches ({:.1f} to {:.1f}).'.format(
        np.mean(units), min(units), max(units))]
    lines += ['', 'The same budget without a supernet (bench/strategy_quality.py, 30 repeats, mean regret +- sd):', '',
              '| strategy | GP, 25 | GP, 50 | GP, 100 | forest, 25 | forest, 50 | forest, 100 |',
              '|---|---|---|---|---|---|---|']
    tables = {kind: summarize(load_results(path)) for kind, _, path in SURROGATES if os.path.isfile(path)}
    for strategy in ('largest', 'tpe', 'random'):
        cells = ['{:.3f} +- {:.3f}'.format(t[(strategy, b)]['regret_mean'], t[(strategy, b)]['regret_sd'])
                 if (strategy, b) in t else '-' for t in (tables.get('gp', {}), tables.get('forest', {}))
                 for b in (25, 50, 100)]
        lines.append('| {} | {} |'.format(strategy, ' | '.join(cells)))
    runtime = sum(sum(r['seconds'].values()) - r['seconds']['supernet'] for r in rows) / 60
    lines += ['', '- command: `python bench/supernet_search.py --seeds 0,1,2` (300 scorings) and `--steps 150`, then '
              '`python bench/supernet_search.py --summary`',
              '- machine: {}'.format('; '.join(sorted({r['machine'] for r in rows}))),
              '- runtime: {:.0f} min of scoring and re-ranking (worker-seconds), besides the supernets\' '
              'training'.format(runtime)]
    return lines


def _mean_sd(values):
    return float(np.mean(values)), float(np.std(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--iters', type=int, default=1200)
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--strategy', default='tpe')
    parser.add_argument('--top-k', type=int, default=5)
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--summary', action='store_true')
    args = parser.parse_args()
    if args.summary:
        print('\n'.join(summary_lines(args.out)))
        return
    run(args)


if __name__ == '__main__':
    main()
