"""The Optuna strategies (``random``, ``evolution``, ``tpe``, ``nsga2``, ``largest``): one study, whose storage is
the record of the search, shared by every worker of every machine that runs the same command.

- A candidate is a trial with one integer parameter per token. The published structure (the space's initial
  tokens) is enqueued as the study's first trial (not for ``largest``, the by-hand baseline: its list only).
- Priced out (outside the constraint, or unpriced): the trial is PRUNED before its first iteration, its
  ``status`` attribute ``skipped`` or ``unpriced`` (optuna-dashboard shows it as pruned, not as a failure; the
  samplers are not shown it, ``PricedOutHidden``); no step is used. Already trained or in training: FAIL
  (``duplicate``), which every sampler ignores. The objective is named ``AP`` (and nsga2's second after the
  constraint's metric).
- ``search_steps`` counts COMPLETE trials. A worker trains only while the trials trained and in training leave
  room (``claim``), so the count is exact; a worker that dies stops beating, its trial is failed after the
  storage's grace period and re-queued (``storage.py``), and the next worker trains it.
- ``nsga2`` has two objectives: AP up, the constraint's metric (latency or FLOPs) down.
"""
import logging
import os
import random
import socket
import time
import warnings
import zlib

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.files import HISTORY_FIELDS, check_resume_dir, write_csv
from ppdet.slim.nas.strategies import STRATEGIES, Job, Strategy, StrategyError
from ppdet.slim.nas.strategies.evolution import RegularizedEvolutionSampler
from ppdet.slim.nas.strategies.largest import LargestFirstSampler, largest_first
from ppdet.slim.nas.strategies.storage import (Heartbeat, JobBoard, ask_quietly, default_storage_url, fail_stale,
                                               fixed_params, open_storage, shown_url)
from ppdet.slim.nas.tokens import Tokens
from ppdet.slim.nas.vocabulary import CLAIMED, HISTORY_NAME, PRICED_OUT, Status, study_param
from search_space.blazefacespace_nas import TOKEN_NAMES

__all__ = ['StudyStrategy', 'SearchExhausted', 'first_candidates', 'param_names', 'metric_names', 'used_step',
           'init_storage']

logger = logging.getLogger(__name__)
MAX_DUPLICATES = 1000  # proposals in a row that were trained already: the space under the constraint is used up
SIGNATURE_WAIT = 10.0  # seconds a joining worker waits for the study's creator to record the search it is for
CLAIM_BACKOFF = 1.0  # at most this many seconds a worker waits after giving back a step it could not claim
POLL = 1.0  # seconds between looks at the study while every step is trained or in training


class SearchExhausted(StrategyError):
    """The strategy keeps proposing candidates already trained: nothing new is left to try."""


def used_step(trial):
    """Whether a finished trial counts against ``search_steps``: trained (COMPLETE), or stopped part way by the
    pruner (PRUNED, status ``pruned``); a priced-out one (PRUNED before training) does not."""
    return trial.state == TrialState.COMPLETE or (trial.state == TrialState.PRUNED and not priced_out(trial))


def priced_out(trial):
    return trial.state == TrialState.PRUNED and trial.user_attrs.get('status') in PRICED_OUT


class _StudyWithoutPricedOut:
    """A study as a sampler is shown it: without its priced-out trials. They are PRUNED so that optuna-dashboard
    shows them as what they are, but TPE reads PRUNED trials as poor candidates, and measured that way it found
    worse structures (surrogate regret at 100 trainings 0.050 against 0.023, docs/strategies.md): samplers see
    the study as when those trials were FAIL, which every sampler ignores."""

    def __init__(self, study):
        self._study = study

    def __getattr__(self, name):
        return getattr(self._study, name)

    def get_trials(self, deepcopy=True, states=None):
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if not priced_out(t)]

    def _get_trials(self, deepcopy=True, states=None, use_cache=False):
        return [t for t in self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
                if not priced_out(t)]


class PricedOutHidden(BaseSampler):
    """``sampler``, shown the study without its priced-out trials (``_StudyWithoutPricedOut``)."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __getattr__(self, name):  # the wrapped sampler's own attributes (evolution's ``parents``)
        if name == 'sampler':  # not set yet (a copy being made): not the wrapped one's
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def infer_relative_search_space(self, study, trial):
        return self.sampler.infer_relative_search_space(_StudyWithoutPricedOut(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.sampler.sample_relative(_StudyWithoutPricedOut(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.sampler.sample_independent(_StudyWithoutPricedOut(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.sampler.before_trial(_StudyWithoutPricedOut(study), trial)

    def after_trial(self, study, trial, state, values):
        self.sampler.after_trial(_StudyWithoutPricedOut(study), trial, state, values)

    def reseed_rng(self):
        self.sampler.reseed_rng()


def metric_names(strategy, metric):
    """The study's objective names as optuna-dashboard shows them."""
    return ['AP', metric] if strategy == 'nsga2' else ['AP']


def param_names(count):
    return [study_param(i, name) for i, name in enumerate(TOKEN_NAMES[:count])]


def make_sampler(name, setup, ranges, seed):
    settings = setup.settings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)  # multivariate, constant_liar
        if name == 'random':
            return optuna.samplers.RandomSampler(seed=seed)
        if name == 'tpe':
            return optuna.samplers.TPESampler(n_startup_trials=settings.tpe_startup_trials, multivariate=True,
                                              constant_liar=True, seed=seed)
        if name == 'nsga2':
            return optuna.samplers.NSGAIISampler(population_size=settings.population_size, seed=seed)
        if name == 'largest':
            # the list from the config's seed, the same on every worker (``seed`` differs for those that join)
            ordered = largest_first(setup.pricer, setup.constraint, settings.largest_sample, settings.seed)
            return LargestFirstSampler(param_names(len(ranges)), ranges, ordered, seed)
        return RegularizedEvolutionSampler(param_names(len(ranges)), ranges, settings.population_size,
                                           settings.tournament_size, seed)


def first_candidates(name, init_tokens, ordered, warm_start):
    """What a study trains before its sampler proposes: the published structure (not for ``largest``, the by-hand
    baseline, which trains its list only), then the first ``warm_start`` of ``ordered`` (``largest``'s list: the
    most expensive admitted candidates first), so that a model of the rewards starts where price says the best
    are."""
    if name == 'largest':
        return []
    first = [list(init_tokens)]
    return first + [list(t) for t in ordered if list(t) != first[0]][:warm_start]


def make_pruner(settings):
    """Optuna's pruner the ``pruner`` key names; steps are training iterations, looked at every
    ``prune_interval``."""
    name, interval = settings.pruner, settings.pruning_interval
    if name == 'median':  # below the median of earlier candidates at the same iteration, after 5 finished
        return optuna.pruners.MedianPruner(n_startup_trials=5)
    if name == 'successive_halving':
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=interval, reduction_factor=3)
    if name == 'hyperband':
        return optuna.pruners.HyperbandPruner(min_resource=interval, max_resource=settings.max_iters,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def search_signature(setup):
    """What a study must agree on with a worker that joins it: the space and the constraint."""
    c = setup.constraint
    return {'search_space': setup.space_name, 'range_table': list(setup.space.range_table()), 'ctype': c.ctype,
            'min_constraint': c.min_constraint, 'max_constraint': c.max_constraint, 'near_limit': c.near_limit,
            'table_file': os.path.basename(c.table_file) if c.ctype == 'latency' and c.table_file else None}


class StudyStrategy(Strategy):
    def __init__(self, setup, save_dir, resume_dir=None, local_worker=False):
        """``resume_dir``: -r's save_dir (the study in the storage is what resumes)."""
        settings = setup.settings
        if resume_dir is not None:
            check_resume_dir(resume_dir)
        self.name = settings.strategy
        self.metric = setup.constraint.metric
        self.steps = settings.search_steps
        self.ranges = list(setup.space.range_table())
        self.names = param_names(len(self.ranges))
        self.client = '{}_{}'.format(socket.gethostname(), os.getpid())
        self.given_storage = settings.storage
        self.url = self.given_storage or default_storage_url(save_dir)
        self.interval = settings.heartbeat_interval
        self.storage = open_storage(self.url, self.interval, settings.heartbeat_grace)
        self.study_name = settings.study_name
        self.created = created = self._open(setup, resume_dir is not None)
        seed = settings.seed
        if not created and (local_worker or self.given_storage):
            # one process alone replays a search from its seed; each worker that joins draws a stream of its own
            seed = int(np.random.SeedSequence([seed, zlib.crc32(self.client.encode())]).generate_state(1)[0])
        self.sampler = PricedOutHidden(make_sampler(self.name, setup, self.ranges, seed))
        self.study.sampler = self.sampler
        self.study.pruner = make_pruner(settings)
        self.prunes = settings.pruner != 'none'
        self._duplicates = 0
        self._backoff = random.Random()  # its own generator: workers that gave back wait different moments

    def _open(self, setup, resume):
        """Create the study (True: this process did, and enqueued the published structure) or join it; a study of
        another space or constraint, or an earlier search's study in save_dir without -r, is one line."""
        directions = ['maximize', 'minimize'] if self.name == 'nsga2' else ['maximize']
        where = 'storage {} study {!r}'.format(shown_url(self.url), self.study_name)
        try:
            self.study = optuna.create_study(study_name=self.study_name, storage=self.storage, directions=directions)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            if not (resume or self.given_storage):
                raise ConfigError('save_dir holds the study of an earlier search ({}): resume it with -r, or set '
                                  'save_dir elsewhere'.format(shown_url(self.url))) from None
            self.study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            created = False
        signature = search_signature(setup)
        if created:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(metric_names(self.name, self.metric))
            self.study.set_user_attr('search', signature)
            self.study.set_user_attr('strategy', self.name)
            settings = setup.settings
            count = settings.warm_start
            ordered = largest_first(setup.pricer, setup.constraint, settings.largest_sample,
                                    settings.seed) if count else []
            for tokens in first_candidates(self.name, setup.space.init_tokens(), ordered, count):
                self.study.enqueue_trial(dict(zip(self.names, tokens)))
            return True
        theirs = self._creators_signature()
        if [d.name for d in self.study.directions] != [d.upper() for d in directions]:
            raise ConfigError('{}: made by strategy {} ({} objective(s)); strategy {} cannot join it: use that '
                              'strategy, or another study_name'.format(where, self.study.user_attrs.get('strategy'),
                                                                       len(self.study.directions), self.name))
        if theirs is not None and theirs != signature:
            differs = [k for k in signature if theirs.get(k) != signature[k]]
            raise ConfigError('{}: made for another search ({}: {} there, {} here); use the same search_space and '
                              'Constraint, or another study_name'.format(
                                  where, differs[0], theirs.get(differs[0]), signature[differs[0]]))
        return False

    def _creators_signature(self):
        """The search the study was made for. A worker that started at the same instant as its creator may look
        between the creation and the attribute: it waits a little for it (None if the creator died meanwhile)."""
        deadline = time.time() + SIGNATURE_WAIT
        while True:
            theirs = self.study.user_attrs.get('search')
            if theirs is not None or time.time() >= deadline:
                return theirs
            time.sleep(0.2)
            self.study = optuna.load_study(study_name=self.study_name, storage=self.storage)

    def worker_overrides(self):
        return {'storage': self.url, 'study_name': self.study_name}

    # --- the study's trials
    def _trials(self, *states):
        fail_stale(self.study)
        return self.study.get_trials(deepcopy=False, states=states or None)

    def _tokens(self, trial):
        fixed = trial.system_attrs.get('fixed_params') or trial.params
        return Tokens(fixed[name] for name in self.names)

    def _in_training(self, trials):
        """Claimed trials not finished yet: in training, or trained and being told (``tell`` records the row, then
        finishes the trial: counted as neither in between, its step looked free to a worker claiming then; seen as 7
        trainings for search_steps 6 with 4 workers started together on a loaded machine)."""
        return [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get('status') in CLAIMED]

    def progress(self):
        return sum(used_step(t) for t in self._trials(TrialState.COMPLETE, TrialState.PRUNED))

    def ask(self):
        waiting = None
        while True:
            trials = self._trials()
            done = sum(used_step(t) for t in trials)
            if done >= self.steps:
                return None
            training = len(self._in_training(trials))
            if done + training >= self.steps:  # every step is trained or in training; one may yet be lost
                if training != waiting:
                    logger.info('waiting for %d candidate(s) in training on other workers (one whose worker died is '
                                'trained again after heartbeat_grace)', training)
                    waiting = training
                time.sleep(POLL)
                continue
            trial = ask_quietly(self.study)
            tokens = Tokens(trial.suggest_int(name, 0, r - 1) for name, r in zip(self.names, self.ranges))
            taken = {self._tokens(t) for t in trials if used_step(t)} | {
                self._tokens(t) for t in self._in_training(trials)}
            if tokens in taken:
                self._give_back(trial, Status.DUPLICATE)
                continue
            self._duplicates = 0
            trial.set_user_attr('client', self.client)
            return Job(tokens, trial.number + 1, (trial, Heartbeat(self.storage, trial._trial_id, self.interval)),
                       self._parent(trial, tokens, trials))

    def _give_back(self, trial, status):
        """A proposal that is not trained: FAIL, so samplers ignore it and no step is used."""
        trial.set_user_attr('status', status)
        self.study.tell(trial, state=TrialState.FAIL)
        if status == Status.DUPLICATE:
            self._duplicates += 1
            if self._duplicates >= MAX_DUPLICATES:
                raise SearchExhausted('{} proposals in a row were trained already: the space under the constraint '
                                      'looks used up; lower search_steps or widen the Constraint'.format(
                                          self._duplicates))

    def _parent(self, trial, tokens, trials):
        """Whose weights the candidate may inherit: the evolution's parent; else the trained candidate with the
        fewest tokens different (random, tpe and nsga2 have no parent of their own)."""
        parent = getattr(self.sampler, 'parents', {}).pop(trial.number, None)
        if parent is not None:
            return Tokens(parent)
        trained = [self._tokens(t) for t in trials if t.state == TrialState.COMPLETE]
        if not trained:
            return None
        return min(trained, key=lambda t: sum(a != b for a, b in zip(t, tokens)))

    def skip(self, job, row):
        trial, heartbeat = job.handle
        heartbeat.stop()
        self._record(trial, row)
        self.study.tell(trial, state=TrialState.PRUNED)

    def claim(self, job, row):
        """Mark the trial as in training, then train only if the trials trained and every other one in training
        leave a step; else give it back (a re-queued candidate goes back to the queue) and wait a random moment.

        Every other one, not only those asked earlier: each worker marks before it counts, so of two workers
        claiming the last step at once at least one sees the other's mark and gives back. (Counting only earlier
        trials let a later-asked worker count before an earlier one marked, and both trained: 7 trainings for
        search_steps 6, seen with 4 workers started together.) Two that see each other both give back; the random
        wait makes the next round unlikely to collide again."""
        trial, heartbeat = job.handle
        self._record(trial, dict(row, status=Status.TRAINING))
        trials = self._trials()
        others = [t for t in self._in_training(trials) if t._trial_id != trial._trial_id]
        if sum(used_step(t) for t in trials) + len(others) < self.steps:
            return True
        heartbeat.stop()
        if fixed_params(self.storage, trial) is not None:
            self.study.enqueue_trial(dict(zip(self.names, job.tokens)))
        self._give_back(trial, Status.SURPLUS)
        time.sleep(self._backoff.uniform(0, CLAIM_BACKOFF))
        return False

    def tell(self, job, row):
        trial, heartbeat = job.handle
        heartbeat.stop()
        self._record(trial, row)
        values = [row['ap'], row[self.metric]] if self.name == 'nsga2' else row['ap']
        try:
            if row['status'] == Status.PRUNED:
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, values)
        except (RuntimeError, ValueError) as e:  # failed meanwhile (its heartbeat lapsed): its retry trains it
            logger.warning('the reward of %s came after the study gave its trial %d up (%s); it is not counted, '
                           'its re-queued trial trains it again', job.tokens, trial.number, e)

    def should_prune(self, job, iteration, ap):
        trial, _ = job.handle
        trial.report(ap, iteration)
        return trial.should_prune()

    @staticmethod
    def _record(trial, row):
        for key in ('status', 'flops', 'params', 'latency_us', 'ap', 'train_seconds'):
            if row.get(key) is not None:
                trial.set_user_attr(key, row[key])

    # --- what the search reports
    def rows(self):
        rows = []
        for t in self._trials(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            status = t.user_attrs.get('status')
            # duplicates, surplus and lost trainings are not candidates of the history; a priced-out FAIL trial is
            # from a study written before priced-out trials were PRUNED, and still read
            if t.state == TrialState.FAIL and status not in PRICED_OUT:
                continue
            row = {k: t.user_attrs.get(k) for k in HISTORY_FIELDS}
            row.update(step=t.number + 1, tokens=self._tokens(t).csv, status=status or Status.TRAINED)
            if t.state == TrialState.COMPLETE:
                row['ap'] = t.values[0]
            rows.append(row)
        return rows

    def history_file(self, save_dir):
        """``search_history.csv``: the study's candidates as SANAS's history lists them (the study is the record)."""
        path = os.path.join(save_dir, HISTORY_NAME)
        write_csv(path, HISTORY_FIELDS, self.rows())
        return path

    def outputs(self):
        return {'study {!r} (optuna-dashboard shows it)'.format(self.study_name): shown_url(self.url)}

    def board(self):
        return JobBoard(self.storage, self.study_name + '.rerank', self.interval)

    def close(self):
        self.storage.remove_session()


def init_storage(setup):
    """``train_nas.py --init-storage``: create the tables and the study in ``storage`` once, before the workers
    start (Optuna's own advice for many workers, optuna/optuna#1092; the workers also cope without it). Returns
    the line to print."""
    settings = setup.settings
    if settings.strategy == 'sanas' or not settings.storage:
        raise ConfigError('--init-storage prepares the database of a search on many machines: set strategy to one '
                          'of {} and storage=postgresql://user:password@host/db'.format(', '.join(STRATEGIES[1:])))
    strategy = StudyStrategy(setup, settings.save_dir)
    try:
        return 'storage {}: study {!r} {}; start the workers with the same command without --init-storage'.format(
            shown_url(strategy.url), strategy.study_name, 'created' if strategy.created else 'was already there')
    finally:
        strategy.close()
