"""Where a search's tokens come from and where its rewards go: one small interface, one module per source.

- ``sanas`` (the default): the original's PaddleSlim simulated-annealing controller behind its socket server
  (``sanas.py``; the controller itself is ``ppdet/slim/nas/controller.py``);
- ``random``, ``evolution``, ``tpe``, ``nsga2``, ``largest``: an Optuna study whose storage is the record of the
  search (``study.py``; regularized evolution is ``evolution.py``; ``largest``, the most expensive admitted candidates
  of a priced sample first, the baseline a user runs by hand, is ``largest.py``).

The search loop (``search.py``) asks a strategy for a ``Job``, prices it, then either ``skip``s it (outside the
constraint or unpriced: no training, no step) or ``claim``s it, trains it and ``tell``s the reward.
"""
from dataclasses import dataclass
from typing import Any, Optional

from ppdet.slim.nas.tokens import Tokens
from ppdet.slim.nas.vocabulary import REWARDED

__all__ = ['Job', 'Strategy', 'StrategyError', 'STRATEGIES', 'PRUNERS', 'PRUNING_STRATEGIES', 'make_strategy']

STRATEGIES = ('sanas', 'random', 'evolution', 'tpe', 'nsga2', 'largest')
# early stopping of poor candidates (Optuna's pruners), for the single-objective study strategies
PRUNERS = ('none', 'median', 'successive_halving', 'hyperband')
PRUNING_STRATEGIES = ('random', 'evolution', 'tpe')


class StrategyError(RuntimeError):
    """The strategy cannot go on (its controller is gone, or what is left of the space was trained already); the
    search stops with ``Strategy.explain`` of it, one line."""


@dataclass
class Job:
    """A candidate handed to this worker: its tokens, its step (the history's row number, which names its folder),
    the strategy's handle on it (an Optuna trial), and the trained candidate whose weights it may inherit
    (``inherit_weights``), if the strategy has one."""
    tokens: Tokens
    step: int
    handle: Any = None
    parent: Optional[Tokens] = None


class Strategy:
    """The interface every strategy implements. ``rows()`` are history rows (``files.HISTORY_FIELDS``) of the whole
    search; ``board()`` the ``JobBoard`` the final re-ranking is shared on (None: this process does not take part;
    asked only when re-ranking is on)."""
    name = None
    metric = None  # the constraint's metric ('flops' or 'latency_us'): nsga2's second objective
    posts_rerank = True  # whether this process may post the re-ranking's jobs (sanas: only the host knows them)
    prunes = False  # whether ``should_prune`` is asked during trainings (``pruner``)

    def connect(self):
        """Before the first ask: reach the controller or storage, send what a restarted worker owes it."""

    def ask(self) -> Optional[Job]:
        """The next candidate for this worker, or None when the search needs nothing more from it."""
        raise NotImplementedError

    def skip(self, job, row):
        """``job`` was priced out (row status 'skipped' or 'unpriced'): recorded, never trained, no step used."""
        raise NotImplementedError

    def claim(self, job, row):
        """``job`` is priced and admitted: True if it is to be trained now (False: the budget is spent)."""
        return True

    def tell(self, job, row):
        """``job`` was trained: ``row`` holds its AP (the reward) and its price; status 'pruned': it was stopped
        early, its AP is the last intermediate one."""
        raise NotImplementedError

    def should_prune(self, job, iteration, ap):
        """``job``'s AP after ``iteration`` iterations: True to stop its training (asked only if ``prunes``)."""
        return False

    def progress(self):
        """Rewards so far of the whole search (every worker)."""
        raise NotImplementedError

    def rows(self):
        raise NotImplementedError

    def history_file(self, save_dir):
        """The path of the search's history CSV in ``save_dir`` (written from the record if need be)."""
        raise NotImplementedError

    def rewards(self):
        """(tokens, AP) of every rewarded candidate of the search."""
        return [(Tokens.parse(r['tokens']), float(r['ap'])) for r in self.rows() if r['status'] in REWARDED]

    def best(self):
        rewards = self.rewards()
        return max(rewards, key=lambda item: item[1]) if rewards else (None, None)

    def board(self):
        return None

    def outputs(self):
        """Files of the strategy's own the report lists ({what: path or URL})."""
        return {}

    def worker_overrides(self):
        """``-o`` keys a local worker (``--workers``) needs to join this search."""
        return {}

    def explain(self, error):
        """The line the search stops with on ``error`` (a StrategyError): what happened and what to do."""
        return str(error)

    def release_dead(self):
        """A local worker died: hand out again what it had in flight, if the strategy cannot tell by itself."""

    def close(self):
        """The search loop's last word to the strategy, after the report."""


def make_strategy(setup, save_dir, resume_dir=None, local_worker=False):
    """The strategy the config's ``strategy`` key names (checked by ``config.py``). ``local_worker``: this process
    was started by a ``--workers`` host on this machine (it shares the host's save_dir)."""
    if setup.settings.strategy == 'sanas':
        from ppdet.slim.nas.strategies.sanas import SanasStrategy
        return SanasStrategy(setup, save_dir, resume_dir, local_worker)
    from ppdet.slim.nas.strategies.study import StudyStrategy
    return StudyStrategy(setup, save_dir, resume_dir, local_worker)
