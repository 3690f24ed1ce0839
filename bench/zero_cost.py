"""Do zero-cost proxies (a score of the UNTRAINED network from one minibatch; ppdet/slim/nas/zero_cost.py) rank the
demo space's candidates as well as one short training does? Measured on the ground truth (bench/ground_truth.py:
211 candidates, each trained on the demo's proxy task with seeds 0 and 1).

    python bench/zero_cost.py [--seeds 0,1] [--out bench/zero_cost.jsonl]    # score every ground-truth candidate
    python bench/zero_cost.py --summary [--md bench/ZERO_COST.md]            # the tables

Scoring appends one JSON line per (candidate, seed) to ``--out`` as it finishes and skips those already there (a
kill loses one candidate; the same command resumes). Seed s: the network initialised with ``paddle.seed(s)`` as a
search step builds it (CandidateTrainer.build on the pricer's BlazeNet arguments, demo.yml priced with the fixed
table bench/ground_truth_latency.txt) and the first minibatch (batch 8, 96x96) the demo's TrainReader yields with
seed s. The tables rank by seed 0's scores (the same initial weights and first batch as the seed-0 training, the
search's seed) against seed 1's AP, so neither shares anything with what it is judged on; seed 1's scores give
only each proxy's own repeatability.

``--summary`` writes the Spearman of every proxy against seed 1's AP and the two seeds' mean, over all candidates
and over the 40 within +-5% of the demo's latency limit (where a latency-limited search decides), beside another
training (seed 0), latency and FLOPs; each proxy's Spearman with latency; bootstrap intervals of the difference to
latency alone; and how many of the best candidates survive a pre-filter that keeps the better half.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from common import REPO  # noqa: E402  (it puts the repository on sys.path, quiets the libraries)

import numpy as np  # noqa: E402

from bench.surrogate import DEFAULT_DATA, by_candidate, load_ground_truth, spearman  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, 'bench', 'zero_cost.jsonl')
DEFAULT_MD = os.path.join(REPO, 'bench', 'ZERO_COST.md')
TRAINED_PROXIES = ('synflow', 'grad_norm', 'naswot', 'jacov')  # zero_cost.PROXIES, without importing paddle
PRICED = ('params', 'flops')
RANKED_SEED = 0  # the proxies' seed the tables rank with (see the docstring)


def candidates(trainings):
    """The ground truth's distinct candidates, in file order."""
    return list(dict.fromkeys(t.tokens for t in trainings))


def done_keys(path):
    keys = set()
    for row in read_rows(path):
        keys.add((tuple(row['tokens']), row['seed']))
    return keys


def read_rows(path):
    rows = []
    if os.path.isfile(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows


def machine():
    return '{} ({}, {} cores)'.format(platform.platform(), platform.machine(), os.cpu_count())


def score_all(tokens_list, seeds, out, config):
    """Score every (candidate, seed) not in ``out`` yet, appending a line each."""
    from bench.ground_truth import DEFAULT_TABLE, load_setup
    from ppdet.slim.nas import zero_cost
    from ppdet.slim.nas.candidate import CandidateTrainer
    setup = load_setup(config, DEFAULT_TABLE)
    trainer = CandidateTrainer(setup.cfg, seed=0)
    done = done_keys(out)
    jobs = [(t, s) for s in seeds for t in tokens_list if (t, s) not in done]
    print('{} scorings to do, {} done before'.format(len(jobs), len(done)), flush=True)
    batches, start, host = {}, time.time(), machine()
    for i, (tokens, seed) in enumerate(jobs, 1):
        tick = time.time()
        if seed not in batches:
            batches[seed] = zero_cost.minibatch(setup.cfg, seed)
        row = dict(tokens=list(tokens), seed=seed, **zero_cost.scores(trainer, setup.pricer, tokens, batches[seed],
                                                                       seed))
        row.update(seconds=round(time.time() - tick, 3), machine=host)
        with open(out, 'a') as f:
            f.write(json.dumps(row) + '\n')
        if i % 20 == 0 or i == len(jobs):
            print('[{}/{}] {:.0f}s'.format(i, len(jobs), time.time() - start), flush=True)


# ---- summary ----

def bootstrap_difference(x, y, base, combine=False, n=2000, seed=0):
    """95% interval of spearman(x, y) - spearman(base, y) over candidates resampled with replacement (paired);
    ``combine``: of spearman(with_latency(x, base), y) instead, the rank sum made within each resample."""
    rng = np.random.default_rng(seed)
    x, y, base = map(np.asarray, (x, y, base))
    diffs = []
    for _ in range(n):
        i = rng.integers(len(y), size=len(y))
        score = with_latency(x[i], base[i]) if combine else x[i]
        diffs.append(spearman(score, y[i]) - spearman(base[i], y[i]))
    return np.nanpercentile(diffs, [2.5, 97.5])


def partial_spearman(x, y, z):
    """Spearman of x and y with z's rank linearly removed from both ranks: what x knows of y beyond z."""
    from scipy.stats import rankdata
    rx, ry, rz = rankdata(x), rankdata(y), rankdata(z)
    residual = lambda r: r - np.polyval(np.polyfit(rz, r, 1), rz)  # noqa: E731
    return float(np.corrcoef(residual(rx), residual(ry))[0, 1])


def with_latency(x, latency):
    """A ranker that adds the proxy's rank to latency's (equal weights): the simplest use of both."""
    from scipy.stats import rankdata
    return rankdata(x) + rankdata(latency)


def top_kept(score, target, best=0.1, keep=0.5):
    """Of the ``best`` share of candidates by ``target``, how many the ``keep`` share best by ``score`` contains."""
    n = len(target)
    top = set(np.argsort(-np.asarray(target))[:max(1, int(round(best * n)))])
    kept = set(np.argsort(-np.asarray(score))[:int(round(keep * n))])
    return len(top & kept), len(top)


def summarise(data, out, md, command):
    trainings = load_ground_truth(data)
    aps = by_candidate(trainings)
    info = {t.tokens: t for t in trainings}
    rows = {(tuple(r['tokens']), r['seed']): r for r in read_rows(out)}
    tokens_all = [t for t in candidates(trainings) if 0 in aps[t] and 1 in aps[t]]
    missing = [t for t in tokens_all if (t, RANKED_SEED) not in rows]
    if missing:
        sys.exit('{}: {} candidates not scored with seed {}; run python bench/zero_cost.py first'.format(
            out, len(missing), RANKED_SEED))
    for t in tokens_all:  # the pricer must price as the ground truth did
        r = rows[(t, RANKED_SEED)]
        assert (r['params'], r['flops']) == (info[t].params, info[t].flops), t
    scopes = {'all': tokens_all, 'band': [t for t in tokens_all if info[t].band]}
    rankers = {'another training (seed 0 AP)': lambda t: aps[t][0], 'latency_us': lambda t: info[t].latency_us}
    for name in TRAINED_PROXIES + PRICED:
        rankers[name] = (lambda n: lambda t: rows[(t, RANKED_SEED)][n])(name)
    nan = [name for name in TRAINED_PROXIES for t in tokens_all if not np.isfinite(rankers[name](t))]
    seed1 = {s: [aps[t][1] for t in ts] for s, ts in scopes.items()}
    mean = {s: [(aps[t][0] + aps[t][1]) / 2 for t in ts] for s, ts in scopes.items()}
    latency = {s: [info[t].latency_us for t in ts] for s, ts in scopes.items()}

    lines = ['# Zero-cost proxies on the demo\'s proxy task', '',
             'Do zero-cost proxies (a score of the untrained network from one minibatch: '
             '`ppdet/slim/nas/zero_cost.py`) rank this space\'s candidates as well as one short training does? '
             'Ground truth: `bench/ground_truth.jsonl`, {} candidates of the demo space each trained with seeds 0 '
             'and 1 on demo.yml\'s proxy task (300 iterations at 96x96), {} of them within +-5% of the demo\'s '
             'latency limit ("band", where a latency-limited search decides).'.format(
                 len(scopes['all']), len(scopes['band'])), '',
             'Proxies are computed with seed 0 (initial weights `paddle.seed(0)`, the first batch of 8 the demo\'s '
             'TrainReader yields with seed 0), the search\'s seed; they are judged against seed 1\'s AP, which '
             'shares neither weights nor data order with them, and against the two seeds\' mean AP. Spearman rank '
             'correlation; higher proxy = predicted better. Anchor: Abdelfattah et al., ICLR 2021, synflow 0.82 on '
             'NAS-Bench-201.', '',
             '| ranker | vs seed 1 AP, all | vs seed 1 AP, band | vs mean AP, all | vs mean AP, band | '
             'with latency, all | with latency, band |', '|---|---|---|---|---|---|---|']
    stats = {}
    for name, f in rankers.items():
        vals = {s: [f(t) for t in ts] for s, ts in scopes.items()}
        stats[name] = vals
        cells = [spearman(vals[s], seed1[s]) for s in scopes]
        if name.startswith('another training'):  # the mean contains seed 0's AP itself
            cells += [None, None]
        else:
            cells += [spearman(vals[s], mean[s]) for s in scopes]
        cells += [spearman(vals[s], latency[s]) for s in scopes]
        lines.append('| {} | {} |'.format(name, ' | '.join('n/a' if c is None else '{:.3f}'.format(c) for c in cells)))
    lines += ['', 'n/a: the two-seed mean contains seed 0\'s AP, so that training is not an independent ranker of '
              'it. "with latency": the proxy\'s own Spearman with latency_us; a proxy near latency\'s numbers there '
              'mostly re-measures the network\'s size. In the band latency is held within +-5%, so the band '
              'columns are what a proxy knows beyond latency.', '']

    lines += ['## Does a proxy beat latency alone?', '',
              'Spearman against seed 1\'s AP minus latency_us\'s, with a 95% bootstrap interval (2000 resamples of '
              'the candidates, paired):', '', '| proxy | all: difference [95%] | band: difference [95%] |',
              '|---|---|---|']
    above = {s: [] for s in scopes}
    for name in ('another training (seed 0 AP)',) + TRAINED_PROXIES + PRICED:
        cells = []
        for s in scopes:
            d = spearman(stats[name][s], seed1[s]) - spearman(latency[s], seed1[s])
            lo, hi = bootstrap_difference(stats[name][s], seed1[s], latency[s])
            cells.append('{:+.3f} [{:+.3f}, {:+.3f}]'.format(d, lo, hi))
            if lo > 0 and name in TRAINED_PROXIES:
                above[s].append(name)
        lines.append('| {} | {} |'.format(name, ' | '.join(cells)))
    lines += ['', 'Zero-cost proxies whose interval lies above zero (beat latency alone): all candidates: {}; '
              'band: {}.'.format(', '.join(above['all']) or 'none', ', '.join(above['band']) or 'none'), '']

    lines += ['## Beyond latency', '',
              'Partial Spearman with seed 1\'s AP given latency_us (both ranks with latency\'s rank linearly '
              'removed), and the Spearman of a ranker that sums the proxy\'s rank and latency\'s, minus latency '
              'alone\'s, with a 95% bootstrap interval as above:', '',
              '| ranker | partial given latency, all | band | rank sum with latency minus latency, all [95%] | '
              'band [95%] |', '|---|---|---|---|---|']
    for name in ('another training (seed 0 AP)',) + TRAINED_PROXIES + PRICED:
        cells = ['{:.3f}'.format(partial_spearman(stats[name][s], seed1[s], latency[s])) for s in scopes]
        for s in scopes:
            combined = with_latency(stats[name][s], latency[s])
            d = spearman(combined, seed1[s]) - spearman(latency[s], seed1[s])
            lo, hi = bootstrap_difference(stats[name][s], seed1[s], latency[s], combine=True)
            cells.append('{:+.3f} [{:+.3f}, {:+.3f}]'.format(d, lo, hi))
        lines.append('| {} | {} |'.format(name, ' | '.join(cells)))
    lines += ['']

    lines += ['## As a pre-filter', '',
              'Keep the better half by the ranker: how many of the best 10% by two-seed mean AP survive (chance: '
              'half of them).', '', '| ranker | all | band |', '|---|---|---|']
    for name in rankers:
        cells = ['{} of {}'.format(*top_kept(stats[name][s], mean[s])) for s in scopes]
        lines.append('| {} | {} |'.format(name, ' | '.join(cells)))
    lines += ['', '(For the seed-0 training the target contains its own AP, which flatters it.)', '']

    other = [r for r in rows.values() if r['seed'] != RANKED_SEED]
    if other:
        lines += ['## Repeatability of the proxies', '',
                  'Spearman between a proxy computed with seed 0 and with seed 1 (other initial weights, another '
                  'first batch), against one training\'s seed-to-seed 0.628 / 0.477:', '',
                  '| proxy | all | band |', '|---|---|---|']
        for name in TRAINED_PROXIES:
            cells = []
            for s, ts in scopes.items():
                both = [t for t in ts if (t, 1) in rows]
                cells.append('{:.3f} (n={})'.format(spearman([rows[(t, 0)][name] for t in both],
                                                             [rows[(t, 1)][name] for t in both]), len(both)))
            lines.append('| {} | {} |'.format(name, ' | '.join(cells)))
        lines += ['']

    all_rows = list(rows.values())
    seconds = sum(r['seconds'] for r in all_rows)
    per = [r['seconds'] for r in all_rows]
    hosts = sorted({r.get('machine', '?') for r in all_rows})
    lines += ['## How it was run', '',
              '```', command, 'python bench/zero_cost.py --summary', '```', '',
              '- scored on: {}'.format('; '.join(hosts)),
              '- summary written: {} on {}'.format(datetime.date.today(), machine()),
              '- runtime: {:.0f} s of scoring for {} (candidate, seed) rows (median {:.2f} s, max {:.2f} s each: '
              'four networks built, four proxies on one batch), on a machine shared with another benchmark; no '
              'timing claim beyond this'.format(seconds, len(all_rows), float(np.median(per)), max(per)),
              '- not finite: {}'.format(', '.join(sorted(set(nan))) if nan else 'none'), '']
    text = '\n'.join(lines)
    with open(md, 'w') as f:
        f.write(text)
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=os.path.join(REPO, 'demo.yml'))
    parser.add_argument('--data', default=DEFAULT_DATA)
    parser.add_argument('--seeds', default='0,1', help='proxy seeds to score with (the tables rank with seed 0)')
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--summary', action='store_true', help='write --md from --out instead of scoring')
    parser.add_argument('--md', default=DEFAULT_MD)
    args = parser.parse_args()
    if args.summary:
        command = 'python bench/zero_cost.py --seeds {}'.format(args.seeds)
        return summarise(args.data, args.out, args.md, command)
    seeds = [int(s) for s in args.seeds.split(',')]
    score_all(candidates(load_ground_truth(args.data)), seeds, args.out, args.config)


if __name__ == '__main__':
    main()
