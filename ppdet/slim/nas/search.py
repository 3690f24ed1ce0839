"""The search loop, one for every strategy: strategy -> tokens -> price -> (skip | build, train, evaluate) ->
reward -> report.

``search_steps`` counts rewarded candidates of the whole search (all workers). Candidates outside the constraint,
or that the latency table cannot price, are recorded and skipped without training and without using a step (the
original spent a step on each, or died on an assert); the strategy remembers them.

Crash safety is the strategy's: SANAS writes each history row (atomically) before the reward is sent, and a
restarted client sends its history's rewards again; an Optuna study's storage records each trial as it changes,
and a worker that dies has its trial re-queued by the heartbeat. A full disk or unwritable save_dir stops the
search with one line naming the file.

Opt-in, not in the original: ``inherit_weights`` (a candidate starts from the weights of the strategy's parent,
``inherit.py``), ``rerank_top_k``/``rerank_seeds`` (the best few are trained again with more seeds by every
worker, and the report names the best mean, ``rerank.py``), and ``evaluator: supernet`` (a step scores the candidate
with a supernet trained once before the search, or given by ``supernet_weights``; ``supernet.py``).
"""
import logging
import os
import time

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.candidate import CandidateTrainer, PruningCheck
from ppdet.slim.nas.distributed import Ranks
from ppdet.slim.nas.files import SaveError
from ppdet.slim.nas.inherit import Parent, parent_weights
from ppdet.slim.nas.preflight import check_search_inputs
from ppdet.slim.nas.report import write_report
from ppdet.slim.nas.rerank import RerankPlan, rank, rerank_jobs, write_rerank_csv
from ppdet.slim.nas.strategies import StrategyError, make_strategy
from ppdet.slim.nas.supernet import (SupernetScorer, load_supernet, train_supernet,
                                     weight_dirs)
from ppdet.slim.nas.tokens import Tokens
from ppdet.slim.nas.vocabulary import RERANK_NAME, SUPERNET_DIR, Status, candidate_dir
from ppdet.utils.stats import eta_string

__all__ = ['NasSearch', 'SearchError', 'build_search']

logger = logging.getLogger(__name__)
BOARD_POLL = 1.0  # seconds between looks at re-ranking jobs other workers are training


class SearchError(RuntimeError):
    """The search cannot go on (the constraint rejects everything it samples, or the controller is gone)."""


def build_search(setup, resume_dir=None, fp16=False, loss_scale=8.0, ranks=None, local_worker=False, train=None,
                 report=write_report):
    """The search loop and its parts, from a checked config: a ``CandidateTrainer``, the strategy the config names
    (on the main rank only), and ``train``, one training of a candidate (by default the trainer's; a benchmark or a
    test gives a function of the tokens instead). Mistakes (inputs, storage, controller, supernet weights of
    another space) are one line, raised here before any network is built.

    Candidates train on the process's device, which its entry point set (``paddle.set_device``). ``local_worker``:
    started by a ``--workers`` host on this machine (shares its save_dir). ``report``: ``write_report`` or one
    with its signature."""
    check_search_inputs(setup)  # before the controller listens or anything is built
    if setup.note and not local_worker:  # the host has said it for this machine's workers
        logger.info('%s', setup.note)
    settings = setup.settings
    ranks = ranks or Ranks.from_env()
    if settings.pruner != 'none' and ranks.world_size > 1:
        raise ConfigError('pruner {} stops a candidate on rank 0 only; with a multi-process launch set pruner: '
                          'none'.format(settings.pruner))
    trainer = CandidateTrainer(setup.cfg, fp16, loss_scale, seed=settings.seed, ranks=ranks)
    search = NasSearch(setup, trainer, ranks, train, report)
    if settings.evaluator == 'supernet' and search.supernet_dirs:
        search.prepare_supernet()  # weights of another space are one line before a controller or study starts
    if ranks.is_main:  # storage and controller problems are one line before any network is built
        search.strategy = make_strategy(setup, search.save_dir, resume_dir, local_worker)
    return search


class NasSearch:
    """The one search loop, given its parts (``build_search`` makes them): it asks the strategy for candidates,
    prices them, trains (``train``) or scores the admitted ones, tells the rewards, re-ranks, reports, and closes
    the strategy."""

    def __init__(self, setup, trainer, ranks, train=None, report=write_report):
        settings = setup.settings
        self.setup, self.cfg, self.trainer, self.ranks = setup, setup.cfg, trainer, ranks
        self.strategy = None  # build_search's, on the main rank
        self.train = train or self._train_with_trainer
        self.write_report = report
        self.save_dir = settings.save_dir
        self.search_steps = settings.search_steps
        self.max_skips = settings.max_consecutive_skips
        self.inherit = settings.inherit_weights
        self.rerank_plan = RerankPlan.from_settings(settings)
        self.prune_interval = settings.pruning_interval
        self.scorer = None  # evaluator: supernet, once prepare_supernet has loaded or trained it
        self.supernet_dirs = weight_dirs(setup.cfg.get('supernet_weights'))

    def prepare_supernet(self):
        """With ``evaluator: supernet``: load ``supernet_weights`` (one directory or several, whose scores are
        averaged), else train the supernet (every rank) in save_dir/supernet, going on from its checkpoint; returns
        the directories (empty with ``evaluator: train``)."""
        if self.setup.settings.evaluator != 'supernet' or self.scorer is not None:
            return self.supernet_dirs
        settings = self.setup.supernet
        if self.supernet_dirs:
            supernets = [load_supernet(self.cfg, self.setup.pricer, d) for d in self.supernet_dirs]
        else:
            self.supernet_dirs = [os.path.join(self.save_dir, SUPERNET_DIR)]
            supernets = [train_supernet(self.trainer, self.setup.pricer, self.supernet_dirs[0], settings,
                                        constraint=self.setup.constraint)]
        self.scorer = SupernetScorer(self.trainer, supernets, settings.calib_batches)
        return self.supernet_dirs

    def run(self, report=True):
        """Search until ``search_steps`` candidates are rewarded, then re-rank; returns (best tokens, best AP).
        ``report`` False (a local worker of ``--workers``): no report files or structure block, the host writes
        them."""
        self.prepare_supernet()
        if not self.ranks.is_main:
            return self._follow()
        try:
            try:
                self.strategy.connect()
                self._search()
                ranked = self._rerank(report)
            finally:
                self.ranks.broadcast(None)  # releases the other ranks
            best = self.write_report(self.save_dir, self.setup, self.strategy, ranked) if report else (None, None)
        except StrategyError as e:
            raise SearchError(self.strategy.explain(e)) from None
        except SaveError as e:
            raise SearchError(str(e)) from None
        self.strategy.close()
        return best

    def _search(self):
        start, done_before, skips = time.time(), self.strategy.progress(), 0
        while True:
            job = self.strategy.ask()
            if job is None:
                return
            row = self._price(job.tokens)
            if row['status'] != Status.PRICED:
                skips += 1
                self.strategy.skip(job, row)
                if skips >= self.max_skips:
                    raise SearchError('{} candidates in a row were outside the constraint or unpriced; widen '
                                      'Constraint min/max_constraint or check table_file'.format(skips))
                continue
            if not self.strategy.claim(job, row):
                continue
            skips = 0
            if self.scorer is None:  # a scoring is rank 0's alone
                self.ranks.broadcast((list(job.tokens), None))
            row.update(self._train(job))
            self.strategy.tell(job, row)
            self._log_candidate(row, time.time() - start, done_before)

    def _follow(self):
        """A non-zero rank of a multi-process candidate training: train what rank 0 broadcasts (tokens, and the
        seed of a re-ranking's training; DataParallel gives every rank rank 0's initial weights)."""
        while True:
            job = self.ranks.broadcast(None)
            if job is None:
                return None, None
            tokens, seed = job
            self.train_candidate(tokens, None, seed)

    def _price(self, tokens):
        price, constraint = self.setup.pricer.price(list(tokens)), self.setup.constraint
        admitted = constraint.admits(price)
        status = Status.PRICED if admitted else (Status.UNPRICED if admitted is None else Status.SKIPPED)
        row = {'tokens': tokens, 'status': status, 'flops': price.flops, 'params': price.params,
               'latency_us': price.latency_us}
        if status != Status.PRICED:
            logger.info('candidate %s %s: %s %s (bounds %s..%s)%s', list(tokens), status, constraint.metric,
                        constraint.value(price), constraint.lower_bound, constraint.max_constraint,
                        '; missing table keys: {}'.format(', '.join(price.unpriced[:3])) if price.unpriced else '')
        return row

    def _train(self, job):
        logger.info('----->>> search step %d/%d: tokens %s <<<------', self.strategy.progress() + 1,
                    self.search_steps, list(job.tokens))
        if self.scorer is not None:
            score = self.scorer.score(job.tokens)
            return {'status': Status.TRAINED, 'ap': score.ap, 'train_seconds': score.seconds}
        out_dir = candidate_dir(self.save_dir, job.step, job.tokens)
        result = self.train_candidate(job.tokens, out_dir, parent=self._parent(job), check=self._pruning_check(job))
        return {'status': result.status, 'ap': result.ap, 'train_seconds': result.train_seconds}

    def train_candidate(self, tokens, out_dir, seed=None, parent=None, check=None):
        """One training of ``tokens`` (a search step, a re-ranking job, a follower rank's share) with ``seed`` (the
        config's by default): a ``CandidateResult``."""
        return self.train(tokens, out_dir, self.trainer.seed if seed is None else seed, parent, check)

    def _train_with_trainer(self, tokens, out_dir, seed, parent, check):
        return self.trainer.candidate(self.setup.pricer.blazenet_kwargs(list(tokens)), out_dir, seed, parent, check)

    def _pruning_check(self, job):
        """With ``pruner``: the strategy decides every ``prune_interval`` iterations whether ``job`` trains on."""
        if not self.strategy.prunes:
            return None
        return PruningCheck(self.prune_interval, lambda iteration, ap: self.strategy.should_prune(job, iteration, ap))

    def _parent(self, job):
        """With ``inherit_weights``: the saved weights of the strategy's parent of ``job`` if trained on this
        machine (SANAS: the annealing's current tokens; evolution: the tournament's winner; the others: the
        trained candidate with the fewest tokens different), else None (a fresh start)."""
        if not self.inherit:
            return None
        path = parent_weights(self.save_dir, job.parent) if job.parent else None
        logger.info('inherits the weights of %s', list(job.parent) if path else 'nothing (fresh start: {})'.format(
            'no parent trained here' if job.parent is None else '{} not trained here'.format(list(job.parent))))
        return Parent(self.setup.pricer.blazenet_kwargs(list(job.parent)), path) if path else None

    def _log_candidate(self, row, elapsed, done_before):
        """One line per candidate. The eta is the whole search's pace in this run (every worker's rewards since
        it started, not the rows of an earlier run resumed with -r)."""
        done = self.strategy.progress()
        best_tokens, best_ap = self.strategy.best()
        pace = elapsed / max(done - done_before, 1)
        latency = '-' if row['latency_us'] is None else '{:.0f}us'.format(row['latency_us'])
        status = Status.SCORED if self.scorer is not None and row['status'] == Status.TRAINED else row['status']
        logger.info('search step %d/%d | tokens %s | flops %.1fM | latency %s | AP %.4f (%s) | best %.4f %s | '
                    'search eta %s', done, self.search_steps, list(row['tokens']), row['flops'] / 1e6, latency,
                    row['ap'], status, best_ap, list(best_tokens),
                    eta_string(max(self.search_steps - done, 0) * pace))

    # --- the final re-ranking, shared by every worker
    def _rerank(self, report):
        """Train the re-ranking's jobs this worker can take; the reporting process then waits for the others' and
        returns the re-ranked candidates (``rerank.Ranked``, best mean first), else an empty list."""
        board = self.strategy.board() if self.rerank_plan.enabled else None
        if board is None:
            return []
        if report and self.strategy.posts_rerank:
            jobs = rerank_jobs(self.strategy.rewards(), self.rerank_plan, self.trainer.seed)
            if board.post(jobs):
                logger.info('re-ranking the top %d candidates with %d %s each: %d trainings, shared by every worker',
                            self.rerank_plan.top_k, self.rerank_plan.seeds,
                            'more seeds' if self.rerank_plan.counts_reward else 'trainings from scratch', len(jobs))
        elif not board.wait_posted():
            return []
        self._take_jobs(board)
        if not report:
            return []
        while board.pending():  # others' jobs; one whose worker died comes back, and is taken here
            time.sleep(BOARD_POLL)
            self._take_jobs(board)
        results = board.results()
        write_rerank_csv(os.path.join(self.save_dir, RERANK_NAME), results)
        return rank(self.strategy.rewards(), self.rerank_plan, self.trainer.seed, results)

    def _take_jobs(self, board):
        while True:
            job = board.take()
            if job is None:
                return
            _, tokens, seed, _ = job
            self.ranks.broadcast((tokens, seed))
            out_dir = os.path.join(self.save_dir, 'rerank', '{}_seed{}'.format(Tokens(tokens).folder, seed))
            result = self.train_candidate(tokens, out_dir, seed)
            board.done(job, result.ap, result.train_seconds)
            logger.info('re-ranking: %s seed %d: AP %.4f', tokens, seed, result.ap)
