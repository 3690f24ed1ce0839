"""Optuna's RDB storage as a search's record: opening it, keeping a trial alive, and a board of fixed jobs.

Why RDB (SQLite for one machine, PostgreSQL for many) and not Optuna's journal file: only ``RDBStorage`` has
heartbeats, so a worker killed mid-training has its trial failed (``fail_stale_trials``) and re-queued
(``RetryHeartbeatStaleTrialCallback``) by whichever worker looks next; SQLite and PostgreSQL then behave the same
and ``optuna-dashboard <storage>`` reads either. The default is ``sqlite:///<save_dir>/study.db``.
"""
import logging
import os
import random
import threading
import time
import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.vocabulary import STUDY_FILE, board_param

__all__ = ['default_storage_url', 'shown_url', 'open_storage', 'storage_failure', 'Heartbeat',
           'ask_quietly', 'fail_stale', 'fixed_params', 'JobBoard', 'MAX_RETRY']

logger = logging.getLogger(__name__)
MAX_RETRY = 3  # a candidate whose workers died this many times is given up (the rest of the search goes on)
SQLITE_BUSY_SECONDS = 60  # several local workers write one SQLite file: wait for its lock rather than fail


def default_storage_url(save_dir):
    return 'sqlite:///{}'.format(os.path.abspath(os.path.join(save_dir, STUDY_FILE)))


def shown_url(url):
    """The storage URL as logs and errors show it: never its password."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 (not a URL at all: shown as the user wrote it, less anything after '@')
        return url.split('@')[-1]


# what PostgreSQL says to the losers of a concurrent CREATE TABLE (a unique index of its catalog, a table already
# there, or one of them picked as a deadlock's victim)
CONCURRENT_CREATION = ('already exists', 'duplicate key', 'deadlock detected')
# what libpq says when the server answered and refused (the rest of its OperationalErrors: nothing answered)
LOGIN_REFUSED = ('authentication failed', 'pg_hba.conf', 'role "', 'database "', 'permission denied',
                 'no password supplied', 'access denied')
SETUP_ATTEMPTS = 8  # opens tried while other workers create the same tables (optuna/optuna#1092)
_HINTS = {
    'driver': 'no driver for this URL is installed (or it is not an SQLAlchemy URL); PostgreSQL URLs start with '
              'postgresql:// and use psycopg, which requirements.txt installs',
    'connect': 'cannot connect; check the host, port and that the server runs',
    'login': 'the server refused the login; check the user, password and database name',
    'setup': "a database error while creating Optuna's tables; see the database's log",
    'file': 'cannot open the file; check that its folder is writable',
}


def _engine_kwargs(url):
    if url.startswith('sqlite'):
        return {'connect_args': {'timeout': SQLITE_BUSY_SECONDS}}
    return {'pool_pre_ping': True, 'connect_args': {'connect_timeout': 10}}


def _reason(error):
    cause = getattr(error, 'orig', None) or error.__cause__ or error
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def storage_failure(error):
    """What went wrong opening a storage, from SQLAlchemy's and the driver's error: ``'driver'`` (no module for
    the URL's database, or not a URL), ``'connect'`` (no server there), ``'login'`` (the server refused the user,
    password or database), ``'race'`` (another worker was creating the same tables at that moment) or ``'setup'``
    (any other database error while creating Optuna's tables)."""
    from sqlalchemy import exc
    text = _reason(error).lower()
    if isinstance(error, (ImportError, exc.ArgumentError)):
        return 'driver'
    if isinstance(error, exc.DBAPIError) and any(s in text for s in CONCURRENT_CREATION):
        return 'race'
    if isinstance(error, exc.OperationalError):
        if any(s in text for s in LOGIN_REFUSED):
            return 'login'
        return 'connect'
    return 'setup'


def open_storage(url, heartbeat_interval, grace_period, key='storage'):
    """An RDBStorage with heartbeats and retries. Workers started at the same instant on an empty database all
    create Optuna's tables at once and PostgreSQL lets one win: the others try again after a short random wait.
    A storage that cannot be opened is one line naming ``key`` and what failed (the password never shown)."""
    if url.startswith('sqlite'):
        directory = os.path.dirname(url[len('sqlite:///'):])
        if directory:
            os.makedirs(directory, exist_ok=True)
    backoff = random.Random()  # its own generator: each worker waits a different time
    for attempt in range(SETUP_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=int(heartbeat_interval),
                                  grace_period=int(grace_period), heartbeat_stale_trial_callback=(
                                      RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)))
        except Exception as e:  # noqa: BLE001 (sqlalchemy's and the driver's errors: connection, login, URL, module)
            failure = storage_failure(e)
            if failure == 'race' and attempt + 1 < SETUP_ATTEMPTS:
                logger.debug('storage %s: tables being created by another worker (%s); trying again',
                             shown_url(url), _reason(e))
                time.sleep(backoff.uniform(0.2, 1.0) * (attempt + 1))
                continue
            hint = _HINTS['file' if url.startswith('sqlite') and failure in ('connect', 'login') else
                          'setup' if failure == 'race' else failure]
            raise ConfigError('{} {}: {} ({}); or leave {} unset for a file in save_dir'.format(
                key, shown_url(url), hint, _reason(e), key)) from None


class Heartbeat:
    """Records a running trial's heartbeat every ``interval`` s in a thread, until stopped: a worker killed with
    ``kill -9`` stops beating, and after the storage's grace period another worker fails and re-queues its trial."""

    def __init__(self, storage, trial_id, interval):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)
        self._thread = threading.Thread(target=self._beat, name='heartbeat', daemon=True)
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as e:  # noqa: BLE001 (a storage hiccup: the next beat tries again)
                logger.warning('heartbeat of trial %d not recorded: %s', self._trial_id, e)

    def stop(self):
        self._stop.set()
        self._thread.join()


def fail_stale(study):
    """Fail (and so re-queue) the trials of workers whose heartbeat stopped: called before every look at a study."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


def fixed_params(storage, trial):
    """The parameters a trial was enqueued with (a re-queued candidate, a board's job), or None."""
    return storage.get_trial_system_attrs(trial._trial_id).get('fixed_params')


def ask_quietly(study):
    """``study.ask()`` without Optuna's note that heartbeats are meant for ``optimize`` (this loop beats itself)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Heartbeat of storage')
        return study.ask()


def board_params(tokens, seed):
    params = {board_param(i): int(t) for i, t in enumerate(tokens)}
    params['seed'] = int(seed)
    return params


def board_tokens(params):
    """The tokens of a re-ranking job's ``board_params``."""
    return tuple(params[board_param(i)] for i in range(len(params) - 1))


class JobBoard:
    """Fixed trainings (tokens, seed) any worker of a search may take: the final re-ranking, shared by every
    worker like any candidate. An Optuna study of WAITING trials: ``ask`` hands each to one worker (atomically, by
    the storage), a worker that dies has its job re-queued by the heartbeat, and the results are the study's.

    The first worker to create the board posts its jobs and then marks it ``posted``; the others take jobs once
    it is posted. ``-r`` finds the board as it was: posted jobs are not posted again.
    """

    def __init__(self, storage, name, heartbeat_interval):
        self.storage, self.name, self.interval = storage, name, heartbeat_interval
        self.study = None

    def open(self):
        """Load the board if it exists (True), else False; ``post`` creates it."""
        try:
            self.study = optuna.load_study(study_name=self.name, storage=self.storage)
        except KeyError:
            return False
        return True

    def post(self, jobs):
        """Create the board with ``jobs`` ((tokens, seed) pairs); False if another worker created it first."""
        try:
            self.study = optuna.create_study(study_name=self.name, storage=self.storage, direction='maximize')
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=self.name, storage=self.storage)
            return False
        for tokens, seed in jobs:
            self.study.enqueue_trial(board_params(tokens, seed))
        self.study.set_user_attr('posted', len(jobs))
        return True

    def posted(self):
        return self.study is not None and 'posted' in self.study.user_attrs

    def _trials(self, *states):
        fail_stale(self.study)
        return self.study.get_trials(deepcopy=False, states=states)

    def take(self):
        """A job for this worker ((trial, tokens, seed, heartbeat)), or None when none is waiting."""
        while self._trials(TrialState.WAITING):
            trial = ask_quietly(self.study)
            fixed = fixed_params(self.storage, trial)
            if fixed is None:  # another worker took the last waiting one first: this is an empty trial
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            tokens = list(board_tokens(fixed))
            return trial, tokens, fixed['seed'], Heartbeat(self.storage, trial._trial_id, self.interval)
        return None

    def done(self, job, ap, seconds):
        """Record a finished job. One whose heartbeat came late (a loaded machine) may have been failed as stale and
        handed out again meanwhile: its result is then dropped with a warning, the job's copy counts (False)."""
        trial, tokens, seed, heartbeat = job
        heartbeat.stop()
        try:
            trial.set_user_attr('train_seconds', float(seconds))
            self.study.tell(trial, float(ap))
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.warning('re-ranking job %s seed %s was handed out again while it trained here (its heartbeat came '
                           'late); the other training of it counts', tokens, seed)
            return False
        return True

    def pending(self):
        """Jobs not finished yet (waiting or being trained)."""
        return len(self._trials(TrialState.WAITING, TrialState.RUNNING))

    def results(self):
        """((tokens, seed) -> (ap, seconds)) of the finished jobs."""
        out = {}
        for t in self._trials(TrialState.COMPLETE):
            fixed = t.system_attrs.get('fixed_params', t.params)
            tokens = board_tokens(fixed)
            out[(tokens, fixed['seed'])] = (t.value, t.user_attrs.get('train_seconds', 0.0))
        return out

    def wait_posted(self, poll=1.0, timeout=None):
        """Wait until the board exists and is posted (the host posts after the search); False at ``timeout``."""
        deadline = None if timeout is None else time.time() + timeout
        while not ((self.study is not None or self.open()) and self.posted()):
            if deadline is not None and time.time() >= deadline:
                return False
            time.sleep(poll)
        return True
