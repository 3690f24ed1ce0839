"""Regularized evolution (Real et al., "Regularized Evolution for Image Classifier Architecture Search", AAAI 2019)
as an Optuna sampler, so it shares the study, its storage and its workers with the other strategies.

The population is the ``population_size`` most recently trained candidates of the study (so the oldest dies
when a child is trained); a child is the best of ``tournament_size`` members drawn at random, with one token
changed as SANAS mutates (a random position, a random other value). Until the population is full, candidates
are drawn uniformly. Priced-out candidates (outside the constraint) are PRUNED trials and never join it.
"""
import numpy as np
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

__all__ = ['RegularizedEvolutionSampler']

MAX_DRAWS = 100  # children drawn before one not trained (nor in training) is found; else the last one is used


class RegularizedEvolutionSampler(BaseSampler):
    def __init__(self, names, ranges, population_size=20, tournament_size=5, seed=None):
        self._names, self._ranges = list(names), list(ranges)
        self.population_size, self.tournament_size = population_size, tournament_size
        self._rng = np.random.default_rng(seed)
        self.parents = {}  # trial number -> the parent's tokens (this process's children): inherit_weights uses it

    def infer_relative_search_space(self, study, trial):
        return {name: IntDistribution(0, r - 1) for name, r in zip(self._names, self._ranges)}

    def sample_relative(self, study, trial, search_space):
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        trained = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
        taken = {self._tokens(t) for t in trials if len(t.params) == len(self._names)}
        population = trained[-self.population_size:]
        for _ in range(MAX_DRAWS):
            if len(population) < self.population_size:
                parent, child = None, [int(self._rng.integers(r)) for r in self._ranges]
            else:
                parent = self._tournament(population)
                child = self._mutate(self._tokens(parent))
            if tuple(child) not in taken:
                break
        if parent is not None:
            self.parents[trial.number] = list(self._tokens(parent))
        return dict(zip(self._names, child))

    def _tournament(self, population):
        size = min(self.tournament_size, len(population))
        picks = self._rng.choice(len(population), size=size, replace=False)
        return max((population[i] for i in picks), key=lambda t: t.values[0])

    def _mutate(self, tokens):
        child = list(tokens)
        free = [i for i, r in enumerate(self._ranges) if r > 1]
        index = free[int(self._rng.integers(len(free)))]
        others = [v for v in range(self._ranges[index]) if v != child[index]]
        child[index] = others[int(self._rng.integers(len(others)))]
        return child

    def _tokens(self, trial):
        return tuple(int(trial.params[name]) for name in self._names)

    def sample_independent(self, study, trial, param_name, param_distribution):
        """Only reached for a parameter outside the token space (none in this search): uniform."""
        return int(self._rng.integers(param_distribution.low, param_distribution.high + 1))
