"""The baseline a user runs by hand, as a strategy (``strategy: largest``): price a random sample of the space, and
train the admitted candidates most expensive first (by the constraint's metric: latency or FLOPs). Under a latency
limit "bigger is better" carries most of what one short training tells (issue 28: over the ground truth's 211
candidates, latency alone ranks a second training's AP at Spearman 0.637, one training at 0.628), so a search
strategy earns its place only where it beats this one on the same budget.

An Optuna sampler, so that it shares the study, its storage, its workers and the re-ranking with the others: each
trial takes the most expensive candidate of the list that no trial holds yet (trained, in training, priced out or
queued), so workers asking at once take the next ones; past the end of the list, draws are uniform.
"""
import numpy as np
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from ppdet.slim.nas.tokens import sample_candidates

__all__ = ['LargestFirstSampler', 'largest_first']

HELD = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED, TrialState.WAITING)


def largest_first(pricer, constraint, samples, seed):
    """The admitted candidates of ``samples`` random ones (``seed``), most expensive first (ties: by tokens)."""
    priced = [(constraint.value(pricer.price(t)), tuple(t)) for t in sample_candidates(pricer.space, samples, seed)]
    admitted = [(v, t) for v, t in priced if v is not None and constraint.admits_value(v)]
    return [list(t) for _, t in sorted(admitted, key=lambda item: (-item[0], item[1]))]


class LargestFirstSampler(BaseSampler):
    def __init__(self, names, ranges, ordered, seed=None):
        self._names, self._ranges, self._ordered = list(names), list(ranges), [tuple(t) for t in ordered]
        self._rng = np.random.default_rng(seed)

    def infer_relative_search_space(self, study, trial):
        return {name: IntDistribution(0, r - 1) for name, r in zip(self._names, self._ranges)}

    def sample_relative(self, study, trial, search_space):
        if not search_space:
            return {}
        held = set()
        for t in study.get_trials(deepcopy=False, states=HELD):  # a queued trial has its tokens as fixed_params
            params = t.params if len(t.params) == len(self._names) else t.system_attrs.get('fixed_params', {})
            if len(params) == len(self._names):
                held.add(tuple(int(params[n]) for n in self._names))
        tokens = next((t for t in self._ordered if t not in held), None)
        if tokens is None:  # the list is used up: uniform
            tokens = tuple(int(self._rng.integers(r)) for r in self._ranges)
        return dict(zip(self._names, tokens))

    def sample_independent(self, study, trial, param_name, param_distribution):
        """Only reached for a parameter outside the token space (none in this search): uniform."""
        return int(self._rng.integers(param_distribution.low, param_distribution.high + 1))
