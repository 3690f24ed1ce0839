"""Final re-ranking: the top ``k`` candidates by reward are trained again with ``s`` more seeds, and the winner is
the best mean, not the luckiest single training.

Not in the original, which reports the maximum of its noisy rewards. Opt-in (``rerank_top_k``, ``rerank_seeds``);
the cost is ``k * s`` candidate trainings after the search, on the host. Re-trainings start from fresh weights (the
seed sets the initial weights and the data order); the search's own reward is one of the values averaged. Each
result is written to ``rerank.csv`` in save_dir before the next starts, so a resumed search (``-r``) trains only
what is missing.
"""
import csv
import io
import logging
import os
from dataclasses import dataclass
from typing import List

import numpy as np

from ppdet.slim.nas.files import atomic_write

__all__ = ['RerankPlan', 'Ranked', 'RerankLog', 'top_candidates', 'rerank']

logger = logging.getLogger(__name__)
RERANK_FIELDS = ['tokens', 'seed', 'ap', 'train_seconds']


@dataclass
class RerankPlan:
    top_k: int = 0
    seeds: int = 2

    @classmethod
    def from_config(cls, cfg):
        return cls(int(cfg.get('rerank_top_k', 0)), int(cfg.get('rerank_seeds', 2)))

    @property
    def enabled(self):
        return self.top_k > 0 and self.seeds > 0


@dataclass
class Ranked:
    """A re-ranked candidate: its rewards (the search's first), their mean and standard deviation."""
    tokens: List[int]
    seeds: List[int]
    aps: List[float]

    @property
    def mean(self):
        return float(np.mean(self.aps))

    @property
    def spread(self):
        return float(np.std(self.aps))

    def describe(self):
        return 'mean AP {:.4f} +- {:.4f} over {} trainings (seeds {}; APs {})'.format(
            self.mean, self.spread, len(self.aps), ','.join(map(str, self.seeds)),
            ', '.join('{:.4f}'.format(a) for a in self.aps))


class RerankLog:
    """``rerank.csv``: one row per re-training, rewritten atomically on each append (as the history is). ``resume``
    False: a new search in an old save_dir, whose rows are not this search's (the first append replaces them)."""

    def __init__(self, path, resume=True):
        self.path = path
        self.rows = []
        if resume and os.path.isfile(path):
            with open(path, newline='') as f:
                self.rows = list(csv.DictReader(f))

    def ap(self, tokens, seed):
        for row in self.rows:
            if row['tokens'] == ' '.join(map(str, tokens)) and int(row['seed']) == seed:
                return float(row['ap'])
        return None

    def append(self, tokens, seed, ap, seconds):
        self.rows.append({'tokens': ' '.join(map(str, tokens)), 'seed': str(seed), 'ap': '{:.6g}'.format(ap),
                          'train_seconds': '{:.1f}'.format(seconds)})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, RERANK_FIELDS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, buffer.getvalue())


def top_candidates(rewards, k):
    """The ``k`` best distinct token vectors of ``rewards`` ((tokens, ap) pairs), best first."""
    best = {}
    for tokens, ap in rewards:
        key = tuple(int(t) for t in tokens)
        best[key] = max(ap, best.get(key, float('-inf')))
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def rerank(rewards, plan, base_seed, save_dir, train, resume=True):
    """Re-train the top candidates; ``train(tokens, seed)`` returns (ap, seconds). Returns the Ranked list, best
    mean first. With ``resume``, trainings already in ``save_dir/rerank.csv`` are read back, not repeated."""
    log = RerankLog(os.path.join(save_dir, 'rerank.csv'), resume)
    top = top_candidates(rewards, plan.top_k)
    seeds = [base_seed + i for i in range(1, plan.seeds + 1)]
    todo = sum(log.ap(list(t), s) is None for t, _ in top for s in seeds)
    logger.info('re-ranking the top %d candidates with %d more seeds each: %d trainings (%d done before)', len(top),
                plan.seeds, todo, len(top) * plan.seeds - todo)
    ranked = []
    for tokens, reward in top:
        tokens = list(tokens)
        aps = [reward]
        for seed in seeds:
            ap = log.ap(tokens, seed)
            if ap is None:
                ap, seconds = train(tokens, seed)
                log.append(tokens, seed, ap, seconds)
            aps.append(ap)
        ranked.append(Ranked(tokens, [base_seed] + seeds, aps))
        logger.info('re-ranked %s: %s', tokens, ranked[-1].describe())
    return sorted(ranked, key=lambda r: -r.mean)
