"""Final re-ranking: the top ``k`` candidates by reward are trained again with ``s`` more seeds, and the winner is
the best mean, not the luckiest single training.

Not in the original, which reports the maximum of its noisy rewards. Opt-in (``rerank_top_k``, ``rerank_seeds``);
the cost is ``k * s`` candidate trainings after the search, shared by every worker like any candidate (a
``strategies.storage.JobBoard``, which also makes it resumable). Re-trainings start from fresh weights (the seed
sets the initial weights and the data order); the search's own reward is one of the values averaged.
``rerank.csv`` in save_dir lists them.
"""
import logging
from dataclasses import dataclass
from typing import List

import numpy as np

from ppdet.slim.nas.files import write_csv
from ppdet.slim.nas.tokens import Tokens

__all__ = ['RerankPlan', 'Ranked', 'top_candidates', 'rerank_jobs', 'rank', 'write_rerank_csv']

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


def top_candidates(rewards, k):
    """The ``k`` best distinct token vectors of ``rewards`` ((tokens, ap) pairs), best first."""
    best = {}
    for tokens, ap in rewards:
        key = Tokens(tokens)
        best[key] = max(ap, best.get(key, float('-inf')))
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def rerank_jobs(rewards, plan, base_seed):
    """The (tokens, seed) trainings of the re-ranking: each of the top ``k`` with seeds base+1 .. base+s."""
    return [(tokens, base_seed + i) for tokens, _ in top_candidates(rewards, plan.top_k)
            for i in range(1, plan.seeds + 1)]


def rank(rewards, plan, base_seed, results):
    """The Ranked list, best mean first: the top candidates' search rewards and their re-trainings' APs
    (``results``: (tokens, seed) -> (ap, seconds); a training not in it is left out of the mean)."""
    ranked = []
    for tokens, reward in top_candidates(rewards, plan.top_k):
        seeds, aps = [base_seed], [reward]
        for seed in range(base_seed + 1, base_seed + plan.seeds + 1):
            if (tuple(tokens), seed) in results:
                seeds.append(seed)
                aps.append(results[(tuple(tokens), seed)][0])
        ranked.append(Ranked(list(tokens), seeds, aps))
        logger.info('re-ranked %s: %s', list(tokens), ranked[-1].describe())
    return sorted(ranked, key=lambda r: -r.mean)


def write_rerank_csv(path, results):
    rows = [{'tokens': Tokens(tokens).csv, 'seed': seed, 'ap': ap, 'train_seconds': seconds}
            for (tokens, seed), (ap, seconds) in sorted(results.items())]
    write_csv(path, RERANK_FIELDS, rows)
