"""Strategies judged on the ground truth itself, no model in between (issue 28): each search is restricted to the
candidates of bench/ground_truth.jsonl under the demo's latency limit, its reward is one seed's AP, and its pick
is judged by the other seed's AP, which the search never sees.

    python bench/ground_truth_search.py [--strategies largest,random,tpe,evolution] [--budgets 6,10,25,50]
                                        [--repeats 30] [--warm-start 10] [--near-limit 0.05]
                                        [--out bench/ground_truth_search.jsonl]
    python bench/ground_truth_search.py --summary      # the table (markdown), also into bench/SEARCH_QUALITY.md

A search is the product's sampler (``make_sampler``: the same Optuna samplers, seeds and first candidates as a
study strategy's, ``warm_start`` included) asked for tokens one at a time. Each proposal is trained as the admitted
ground-truth candidate nearest to it (normalised token distance, ties by tokens) that this search has not trained,
and the sampler is told that candidate's tokens and reward, so it learns from what was trained. ``largest`` trains
the admitted candidates most expensive first: its priced sample is the ground truth. There is no re-ranking (a
second training would need a seed the judge holds). Each repeat runs twice: rewarded by seed 0 and judged by seed
1, and the other way round. One JSON line per search (resumable).
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from common import REPO, write_section  # noqa: E402  (it puts the repository on sys.path, quiets the libraries)

from bench.ground_truth import DEFAULT_TABLE, demo_limit, load_setup  # noqa: E402
from bench.surrogate import DEFAULT_DATA, load_ground_truth  # noqa: E402
from bench.zero_cost import read_rows  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, 'ground_truth_search.jsonl')
DOCUMENT = os.path.join(HERE, 'SEARCH_QUALITY.md')
STRATEGIES = ('largest', 'random', 'tpe', 'evolution')
BUDGETS = (6, 10, 25, 50)
DIRECTIONS = ((0, 1), (1, 0))  # (reward seed, judge seed)


class Pool:
    """The admitted ground-truth candidates with both seeds (from ``low`` up: ``Constraint.near_limit``): their
    tokens, latency and one AP per seed."""

    def __init__(self, trainings, limit, ranges, low=0.0):
        aps, latency = {}, {}
        for t in trainings:
            aps.setdefault(t.tokens, {})[t.seed] = t.ap
            latency[t.tokens] = t.latency_us
        self.tokens = sorted(k for k, v in aps.items() if set(v) >= {0, 1} and low <= latency[k] <= limit)
        self.latency = {k: latency[k] for k in self.tokens}
        self.aps = {k: aps[k] for k in self.tokens}
        self._array = np.array(self.tokens, dtype=float)
        self._scale = np.maximum(np.array(ranges, dtype=float) - 1, 1)

    def by_cost(self):
        """Most expensive first (ties: by tokens), as ``largest`` orders a priced sample."""
        return sorted(self.tokens, key=lambda t: (-self.latency[t], t))

    def nearest(self, tokens, taken):
        """The candidate nearest ``tokens`` not in ``taken`` (None: every one is)."""
        distance = np.abs(self._array - np.array(tokens, dtype=float)).dot(1 / self._scale)
        for i in np.lexsort((np.arange(len(self.tokens)), distance)):
            if self.tokens[i] not in taken:
                return self.tokens[i]
        return None

    def rewards(self, seed):
        """{tokens: AP of ``seed``}: all a search is given."""
        return {t: a[seed] for t, a in self.aps.items()}


def sampler_for(strategy, setup, pool, seed, warm_start):
    """The product's sampler for ``strategy`` and the candidates it trains first; ``largest``'s list is the pool."""
    from ppdet.slim.nas.strategies.largest import LargestFirstSampler
    from ppdet.slim.nas.strategies.study import first_candidates, make_sampler, param_names
    ranges = list(setup.space.range_table())
    ordered = [list(t) for t in pool.by_cost()]
    if strategy == 'largest':
        sampler = LargestFirstSampler(param_names(len(ranges)), ranges, ordered, seed)
    else:
        sampler = make_sampler(strategy, setup, ranges, seed)
    return sampler, first_candidates(strategy, setup.space.init_tokens(), ordered, warm_start)


def restricted_search(strategy, budget, seed, setup, pool, rewards, warm_start=0):
    """Train ``budget`` pool candidates as ``strategy`` proposes them, rewarded by ``rewards`` ({tokens: AP});
    returns the trained tokens in order (the pick is the best rewarded)."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial
    from ppdet.slim.nas.strategies.study import param_names
    ranges = list(setup.space.range_table())
    names = param_names(len(ranges))
    space = {n: IntDistribution(0, r - 1) for n, r in zip(names, ranges)}
    sampler, first = sampler_for(strategy, setup, pool, seed, warm_start)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        study = optuna.create_study(direction='maximize', sampler=sampler)
        for tokens in first:
            study.enqueue_trial(dict(zip(names, tokens)))
        trained = []
        while len(trained) < min(budget, len(pool.tokens)):
            trial = study.ask(space)
            proposal = tuple(trial.params[n] for n in names)
            study.tell(trial, state=TrialState.FAIL)  # the proposal itself is not trained: its nearest candidate is
            tokens = pool.nearest(proposal, set(trained))
            trained.append(tokens)
            study.add_trial(create_trial(params=dict(zip(names, tokens)), distributions=space,
                                         value=rewards[tokens]))
    return trained


def run_one(strategy, budget, repeat, direction, setup, pool, warm_start, near_limit=None):
    start = time.time()
    reward_seed, judge_seed = direction
    rewards = pool.rewards(reward_seed)
    trained = restricted_search(strategy, budget, repeat, setup, pool, rewards, warm_start)
    pick = max(trained, key=lambda t: (rewards[t], t))
    judged = pool.aps[pick][judge_seed]
    return {'strategy': strategy, 'budget': budget, 'repeat': repeat, 'reward_seed': reward_seed,
            'judge_seed': judge_seed, 'warm_start': warm_start, 'near_limit': near_limit, 'pick': list(pick),
            'pick_latency_us': pool.latency[pick], 'judged_ap': judged,
            'trainings': len(trained), 'seconds': time.time() - start}


def done_keys(path):
    return {(r['strategy'], r['budget'], r['repeat'], r['reward_seed'], r['warm_start'], r['near_limit'])
            for r in read_rows(path)}


def summarize(rows):
    """{(label, budget): (mean judged AP, sd, n)} over repeats and both directions."""
    table = {}
    for r in rows:
        label = r['strategy'] + (' warm_start {}'.format(r['warm_start']) if r['warm_start'] else '') + (
            ' near_limit {}'.format(r['near_limit']) if r['near_limit'] else '')
        table.setdefault((label, r['budget']), []).append(r['judged_ap'])
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in table.items()}


def markdown(summary):
    labels = sorted({k[0] for k in summary}, key=lambda s: (s != 'largest', s))
    budgets = sorted({k[1] for k in summary})
    lines = ['| strategy | ' + ' | '.join('{} trainings'.format(b) for b in budgets) + ' |',
             '|---|' + '---|' * len(budgets)]
    for label in labels:
        cells = ['-' if (label, b) not in summary else '{:.4f} ± {:.4f} (n={})'.format(*summary[(label, b)])
                 for b in budgets]
        lines.append('| {} | {} |'.format(label, ' | '.join(cells)))
    return lines


def write_summary(path, setup, pool, near_count):
    rows = read_rows(path)
    best = np.mean([max(a[s] for a in pool.aps.values()) for s in (0, 1)])
    text = ('Command: `python bench/ground_truth_search.py`, then `--strategies tpe,evolution,random --warm-start 10`, '
            '`--strategies tpe,random --budgets 6,10 --near-limit 0.05` (the {} candidates within 5% below the limit: '
            'budgets past that are not run), then `--summary`; {:.1f} min of search time on the 2-core VM. Each search '
            'is restricted to the {} candidates of the ground truth under the demo limit ({:.0f} us), rewarded by one '
            'seed\'s AP and judged by the other\'s (both ways round, so n = 2 x repeats). A proposal is trained as the '
            'nearest admitted candidate not trained yet. Cell: mean judged AP of the pick ± sd; the best judged AP in '
            'the pool is {:.4f} on average over the two judges, and every candidate\'s mean is {:.4f}. `largest` is '
            'deterministic here (its list is the pool), so its spread is only the two directions\'.')
    lines = ['## Strategies on the ground truth itself (no model; issue 28)', '', text.format(
        near_count, sum(r['seconds'] for r in rows) / 60, len(pool.tokens), demo_limit(setup), best,
        np.mean([np.mean(list(a.values())) for a in pool.aps.values()])), '']
    lines += markdown(summarize(rows)) + ['']
    write_section(DOCUMENT, 'ground_truth_search', '\n'.join(lines))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--strategies', default=','.join(STRATEGIES))
    parser.add_argument('--budgets', default=','.join(map(str, BUDGETS)))
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--warm-start', type=int, default=0, help='warm_start for the study strategies')
    parser.add_argument('--near-limit', type=float, help='Constraint.near_limit: the searches see only the pool '
                        'within that fraction below the limit')
    parser.add_argument('--data', default=DEFAULT_DATA)
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--summary', action='store_true')
    args = parser.parse_args()
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per in-memory study, thousands of them
    setup = load_setup(os.path.join(REPO, 'demo.yml'), DEFAULT_TABLE)
    trainings, limit, ranges = load_ground_truth(args.data), demo_limit(setup), list(setup.space.range_table())
    pool = Pool(trainings, limit, ranges)
    if args.summary:
        print(write_summary(args.out, setup, pool, len(Pool(trainings, limit, ranges, 0.95 * limit).tokens)))
        return
    done = done_keys(args.out)
    searched = pool if args.near_limit is None else Pool(trainings, limit, ranges, (1 - args.near_limit) * limit)
    for strategy in args.strategies.split(','):
        warm = 0 if strategy == 'largest' else args.warm_start
        for budget in map(int, args.budgets.split(',')):
            for repeat in range(args.repeats):
                for direction in DIRECTIONS:
                    if (strategy, budget, repeat, direction[0], warm, args.near_limit) in done:
                        continue
                    row = run_one(strategy, budget, repeat, direction, setup, searched, warm, args.near_limit)
                    with open(args.out, 'a') as f:
                        f.write(json.dumps(row) + '\n')
            print('{} budget {}: done'.format(strategy, budget), flush=True)


if __name__ == '__main__':
    main()
