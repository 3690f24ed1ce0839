"""``strategy: sanas`` (the default): the original's search, PaddleSlim's simulated-annealing controller behind
its socket server (``controller.py``), the first client hosting it. Each client keeps its own crash-safe
``search_history*.csv``; the host's controller counts every client's rewards.

Not in the original: the host mirrors the controller's rewards into an Optuna study in ``save_dir/study.db``
(study ``sanas``), so ``optuna-dashboard`` shows a SANAS search as it shows the others, and the final re-ranking
is a board in the same file that the host and its local workers (``--workers``) share. Clients on other machines
have a save_dir of their own and take no part in the re-ranking.
"""
import glob
import logging
import os
import warnings

import optuna

from ppdet.slim.nas.controller import SearchController
from ppdet.slim.nas.files import History, claim_history, dead_histories
from ppdet.slim.nas.inherit import parent_weights
from ppdet.slim.nas.strategies import Job, Strategy
from ppdet.slim.nas.strategies.storage import JobBoard, default_storage_url, open_storage
from ppdet.slim.nas.strategies.study import metric_names, param_names
from ppdet.slim.nas.tokens import Tokens
from ppdet.slim.nas.vocabulary import CHECKPOINT_NAME

__all__ = ['SanasStrategy', 'MIRROR_STUDY']

logger = logging.getLogger(__name__)
MIRROR_STUDY = 'sanas'


class SanasStrategy(Strategy):
    name = 'sanas'

    def __init__(self, setup, save_dir, resume_dir=None, local_worker=False):
        """``resume_dir``: the save_dir of the search resumed with -r (its controller checkpoint), or None."""
        settings = setup.settings
        resume = resume_dir is not None
        self.setup, self.save_dir = setup, save_dir
        self.metric = setup.constraint.metric
        self.is_server = settings.is_server
        self.shares_save_dir = self.is_server or local_worker
        self.max_client_wait = float(settings.max_client_wait)
        self.history = claim_history(save_dir, self.is_server, resume)
        self.controller = SearchController(
            setup.space_name, setup.space, settings.server_ip, settings.server_port, self.is_server,
            settings.init_temperature, settings.reduce_rate, settings.search_steps, save_dir, resume_dir,
            self.history.owner, settings.controller_wait, seed=settings.seed, client_lease=settings.client_lease)
        self.interval = settings.heartbeat_interval
        self._storage = None
        if self.is_server and not resume:
            self._forget_earlier_study()
        if resume:
            self.release_dead()  # before any client of this run (a local worker) starts

    # --- the controller
    def connect(self):
        """Reach the controller; a restarted client may have died between writing its history and sending the
        reward, so it sends its history's rewards again (the controller counts each token once)."""
        self.controller.connect()
        for row in self.history.rewarded():
            if not self.controller.reward(Tokens.parse(row['tokens']), float(row['ap']), 0):
                raise RuntimeError('{}: the controller refuses the reward of tokens {} (step {}): not tokens of this '
                                   'search space; restore the file or delete that row'.format(
                                       self.history.path, row['tokens'], row['step']))

    def release_dead(self):
        """On the host: hand out again what clients that are no longer running had in flight (a local worker
        that died; on resume, every client of the earlier run that was not restarted), rather than wait for it.
        The rewards in their histories count first: one that died between writing its row and sending the reward
        lost nothing, and its candidate must not be trained again."""
        if self.is_server:
            dead = dead_histories(self.save_dir)
            rewards = [(Tokens.parse(row['tokens']), float(row['ap'])) for h in dead for row in h.rewarded()]
            self.controller.release_clients([h.owner for h in dead], rewards)

    def ask(self):
        while True:
            tokens = self.controller.next_tokens()
            if tokens is not None:
                return Job(Tokens(tokens), len(self.history.rows) + 1, parent=self._parent(tokens))
            if not self.is_server or self.controller.wait_for_others(self.max_client_wait):
                logger.info('the controller reports the search complete')
                return None
            # a candidate lost elsewhere: the host trains it

    def _parent(self, tokens):
        """The annealing's current tokens (which ``tokens`` mutate), if trained on this machine."""
        current = self.controller.annealing_tokens()
        if current and list(current) != list(tokens) and parent_weights(self.save_dir, current):
            return Tokens(current)
        return None

    def skip(self, job, row):
        self.history.append(dict(row, step=job.step, client=self.history.owner))
        self.controller.skip(list(job.tokens))

    def tell(self, job, row):
        self.history.append(dict(row, step=job.step, client=self.history.owner))
        self.controller.reward(list(job.tokens), row['ap'], len(self.history.rewarded()))
        if self.is_server:
            self._mirror()

    def progress(self):
        done = self.controller.rewarded_so_far()
        return len(self.history.rewarded()) if done is None else done

    def rows(self):
        """Every client history found in save_dir (a remote client's lives on its own machine)."""
        rows = []
        for path in sorted(glob.glob(os.path.join(self.save_dir, 'search_history*.csv'))):
            rows += History(path).rows
        return rows

    def history_file(self, save_dir):
        return self.history.path

    def rewards(self):
        """The controller's own record on the host (remote clients' candidates included), else the histories."""
        return self.controller.rewards() if self.is_server else super().rewards()

    def best(self):
        tokens, reward = self.controller.best()
        return (tokens, reward) if tokens is not None else super().best()

    def worker_overrides(self):
        return {'is_server': False, 'server_ip': self.controller.server_ip, 'server_port': self.controller.server_port}

    # --- the study file: mirror and re-ranking board
    def storage(self):
        if self._storage is None:
            self._storage = open_storage(default_storage_url(self.save_dir), self.interval,
                                         self.setup.settings.heartbeat_grace)
        return self._storage

    def _forget_earlier_study(self):
        """A new search (no -r) in the save_dir of an earlier one: its mirror and board are not this search's."""
        if not os.path.isfile(default_storage_url(self.save_dir)[len('sqlite:///'):]):
            return
        for name in (MIRROR_STUDY, MIRROR_STUDY + '.rerank'):
            try:
                optuna.delete_study(study_name=name, storage=self.storage())
            except KeyError:
                pass

    def _mirror(self):
        """Copy the controller's rewards not yet in the ``sanas`` study (tokens, AP, price) into it."""
        study = optuna.create_study(study_name=MIRROR_STUDY, storage=self.storage(), direction='maximize',
                                    load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names('sanas', self.metric))
        names = param_names(len(self.setup.space.range_table()))
        seen = {Tokens(t.params[n] for n in names) for t in study.get_trials(deepcopy=False)}
        distributions = {n: optuna.distributions.IntDistribution(0, r - 1)
                         for n, r in zip(names, self.setup.space.range_table())}
        for tokens, reward in self.controller.rewards():
            if Tokens(tokens) in seen:
                continue
            price = self.setup.pricer.price(list(tokens))
            attrs = {'flops': price.flops, 'params': price.params, 'latency_us': price.latency_us}
            study.add_trial(optuna.trial.create_trial(params=dict(zip(names, tokens)), distributions=distributions,
                                                      value=reward, user_attrs=attrs))

    def board(self):
        if not self.shares_save_dir:
            return None
        return JobBoard(self.storage(), MIRROR_STUDY + '.rerank', self.interval)

    def outputs(self):
        if not self.is_server:
            return {}
        return {'controller checkpoint': os.path.join(self.save_dir, CHECKPOINT_NAME),
                'study {!r} (optuna-dashboard shows it)'.format(MIRROR_STUDY): default_storage_url(self.save_dir)}

    @property
    def posts_rerank(self):
        return self.is_server

    def explain(self, error):
        return '{}; this client stops, its history is in {} (resume it with -r {})'.format(
            error, self.history.path, self.save_dir)

    def close(self):
        if self.is_server:
            self._mirror()
        self.controller.close()
        if self._storage is not None:
            self._storage.remove_session()
