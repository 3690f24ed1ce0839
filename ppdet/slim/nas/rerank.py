"""Final re-ranking: the top ``k`` candidates by reward are trained again with ``s`` more seeds, and the winner is
the best mean, not the luckiest single training.

Not in the original, which reports the maximum of its noisy rewards. Opt-in (``rerank_top_k``, ``rerank_seeds``);
the cost is ``k * s`` candidate trainings after the search, shared by every worker like any candidate (a
``strategies.storage.JobBoard``, which also makes it resumable). Re-trainings start from fresh weights (the seed
sets the initial weights and the data order); the search's own reward is one of the values averaged when it is a
training (``evaluator: train``). With ``evaluator: supernet`` the rewards are supernet scores: the top ``k`` by score
are each trained ``s`` times from scratch (seeds base .. base+s-1), the winner is the best mean of those trainings,
and the score is reported beside it; the re-ranking is then on by default (``SUPERNET_RERANK``).
``rerank.csv`` in save_dir lists them.
"""
import logging
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ppdet.slim.nas.files import write_csv
from ppdet.slim.nas.tokens import Tokens

__all__ = ['RerankPlan', 'Ranked', 'top_candidates', 'rerank_jobs', 'rank', 'write_rerank_csv']

logger = logging.getLogger(__name__)
RERANK_FIELDS = ['tokens', 'seed', 'ap', 'train_seconds']


SUPERNET_RERANK = 5  # rerank_top_k's default with evaluator: supernet (a score is not a training)


@dataclass
class RerankPlan:
    top_k: int
    seeds: int
    counts_reward: bool = True  # the search's reward is a training of the base seed (evaluator: train)

    @classmethod
    def from_settings(cls, settings):
        scored = settings.evaluator == 'supernet'
        top_k = settings.rerank_top_k if settings.rerank_top_k is not None else SUPERNET_RERANK if scored else 0
        return cls(top_k, settings.rerank_seeds, not scored)

    def seeds_of(self, base_seed):
        """The re-trainings' seeds: base+1 .. base+s after a search that trained base, else base .. base+s-1."""
        first = base_seed + 1 if self.counts_reward else base_seed
        return list(range(first, first + self.seeds))

    @property
    def enabled(self):
        return self.top_k > 0 and self.seeds > 0


@dataclass
class Ranked:
    """A re-ranked candidate: its trainings' APs (the search's reward first when it was one), their mean and
    standard deviation; ``score``: its supernet score when the search scored rather than trained."""
    tokens: List[int]
    seeds: List[int]
    aps: List[float]
    score: Optional[float] = None

    @property
    def mean(self):
        return float(np.mean(self.aps))

    @property
    def spread(self):
        return float(np.std(self.aps))

    def describe(self):
        text = 'mean AP {:.4f} +- {:.4f} over {} trainings (seeds {}; APs {})'.format(
            self.mean, self.spread, len(self.aps), ','.join(map(str, self.seeds)),
            ', '.join('{:.4f}'.format(a) for a in self.aps))
        return text if self.score is None else '{}; supernet AP {:.4f}'.format(text, self.score)


def top_candidates(rewards, k):
    """The ``k`` best distinct token vectors of ``rewards`` ((tokens, ap) pairs), best first."""
    best = {}
    for tokens, ap in rewards:
        key = Tokens(tokens)
        best[key] = max(ap, best.get(key, float('-inf')))
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def rerank_jobs(rewards, plan, base_seed):
    """The (tokens, seed) trainings of the re-ranking: each of the top ``k`` with seeds base+1 .. base+s."""
    return [(tokens, seed) for tokens, _ in top_candidates(rewards, plan.top_k) for seed in plan.seeds_of(base_seed)]


def rank(rewards, plan, base_seed, results):
    """The Ranked list, best mean first: the top candidates' search rewards (when they are trainings) and their
    re-trainings' APs (``results``: (tokens, seed) -> (ap, seconds); a training not in it is left out of the mean,
    a candidate with none is left out)."""
    ranked = []
    for tokens, reward in top_candidates(rewards, plan.top_k):
        seeds, aps = ([base_seed], [reward]) if plan.counts_reward else ([], [])
        for seed in plan.seeds_of(base_seed):
            if (tuple(tokens), seed) in results:
                seeds.append(seed)
                aps.append(results[(tuple(tokens), seed)][0])
        if not aps:
            continue
        ranked.append(Ranked(list(tokens), seeds, aps, None if plan.counts_reward else reward))
        logger.info('re-ranked %s: %s', list(tokens), ranked[-1].describe())
    return sorted(ranked, key=lambda r: -r.mean)


def write_rerank_csv(path, results):
    rows = [{'tokens': Tokens(tokens).csv, 'seed': seed, 'ap': ap, 'train_seconds': seconds}
            for (tokens, seed), (ap, seconds) in sorted(results.items())]
    write_csv(path, RERANK_FIELDS, rows)
