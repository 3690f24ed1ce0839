"""The search loop: controller -> tokens -> price -> (skip | build, train, evaluate) -> reward -> history.

``search_steps`` counts rewarded candidates of the whole search (all clients). Candidates outside the constraint,
or that the latency table cannot price, are recorded and skipped without training and without using a step (the
original spent a step on each, or died on an assert); the controller remembers them, so they are not resampled.

Crash safety: the history row is written (atomically) before the reward is sent, and a restarted client sends
the rewards of its history again; the controller counts each token once. So a killed search loses at most the
candidate in flight and never trains a rewarded candidate twice. A host crash loses nothing the controller was
told (see controller.py); a full disk or unwritable save_dir stops the search with one line naming the file.

Opt-in, not in the original: ``inherit_weights`` (a candidate starts from the weights of the annealing's current
tokens, ``inherit.py``) and ``rerank_top_k``/``rerank_seeds`` (the host re-trains the best few with more seeds and
reports the best mean, ``rerank.py``; resumable through ``rerank.csv``).
"""
import glob
import logging
import os
import time

import numpy as np

from ppdet.slim.nas.candidate import CandidateTrainer, select_device
from ppdet.slim.nas.constraint import train_input_size
from ppdet.slim.nas.controller import DEFAULT_CONTROLLER_WAIT, ControllerGone, SearchController
from ppdet.slim.nas.distributed import Ranks
from ppdet.slim.nas.files import History, SaveError, claim_history, dead_histories, row_tokens
from ppdet.slim.nas.inherit import Parent, parent_weights
from ppdet.slim.nas.preflight import check_search_inputs
from ppdet.slim.nas.rerank import RerankPlan, rerank
from ppdet.slim.nas.report import plot_pareto, write_best_structure, write_paddledet_override
from ppdet.utils.stats import eta_string
from search_space.blazefacespace_nas import structure_block

__all__ = ['NasSearch', 'SearchError']

logger = logging.getLogger(__name__)
UNITS = {'flops': 'FLOPs', 'latency_us': 'us'}  # the plot shows FLOPs in millions


class SearchError(RuntimeError):
    """The search cannot go on (the constraint rejects everything it samples, or the controller is gone)."""


class NasSearch:
    def __init__(self, setup, resume_dir=None, fp16=False, loss_scale=8.0, ranks=None, device=None):
        """``device``: where candidates train ('cpu', 'gpu', 'gpu:2'); by default from ``use_gpu``."""
        check_search_inputs(setup)  # before the controller listens or anything is built
        if setup.note:
            logger.info('%s', setup.note)
        cfg = setup.cfg
        self.setup, self.cfg = setup, cfg
        self.ranks = ranks or Ranks.from_env()
        self.save_dir = cfg.get('save_dir', 'nas_checkpoint')
        self.search_steps = int(cfg.get('search_steps', 300))
        self.max_skips = int(cfg.get('max_consecutive_skips', 10000))
        self.is_server = bool(cfg.get('is_server', True))
        self.inherit = bool(cfg.get('inherit_weights', False))
        self.rerank_plan = RerankPlan.from_config(cfg)
        self.resumed = resume_dir is not None
        self.metric = 'flops' if setup.constraint.ctype == 'flops' else 'latency_us'
        seed = int(cfg.get('seed', 0))
        np.random.seed(seed)  # the controller samples with numpy: a seed replays a search
        self.trainer = CandidateTrainer(cfg, device or select_device(cfg.get('use_gpu', False)), fp16, loss_scale,
                                        seed=seed, ranks=self.ranks)
        self.history = self.controller = None
        if self.ranks.is_main:
            self.history = claim_history(self.save_dir, self.is_server, resume_dir is not None)
            self.controller = SearchController(
                setup.space_name, setup.space, cfg.get('server_ip', ''), cfg.get('server_port', 8999),
                self.is_server, cfg.get('init_temperature'), cfg.get('reduce_rate', 0.85), self.search_steps,
                self.save_dir, resume_dir, self.history.owner, cfg.get('controller_wait', DEFAULT_CONTROLLER_WAIT))
            if resume_dir is not None:
                self.release_dead_clients()  # before any client of this run (a local worker) starts

    def release_dead_clients(self):
        """On the host: hand out again what clients that are no longer running had in flight (a local worker
        that died; on resume, every client of the earlier run that was not restarted), rather than wait for it.
        The rewards in their histories count first: one that died between writing its row and sending the reward
        lost nothing, and its candidate must not be trained again."""
        if self.is_server:
            dead = dead_histories(self.save_dir)
            rewards = [(row_tokens(row), float(row['ap']))
                       for history in dead for row in history.rewarded()]
            self.controller.release_clients([history.owner for history in dead], rewards)

    def run(self, report=True):
        """Search until the controller has ``search_steps`` rewards; returns (best tokens, best AP). ``report``
        False (a local worker of ``--workers``): no report files or structure block, the host writes them."""
        if not self.ranks.is_main:
            return self._follow()
        try:
            try:
                self.controller.connect()
                self._resend_rewards()
                self._search()
                while not self.controller.wait_for_others(float(self.cfg.get('max_client_wait', 86400))):
                    self._search()  # a candidate lost elsewhere: the host trains it
                reranked = self._rerank() if report else None  # the other ranks train the re-trainings too
            finally:
                self.ranks.broadcast(None)  # releases the other ranks
            if not report:
                self.controller.close()
                return None, None
            return self.finish(reranked)
        except ControllerGone as e:
            raise SearchError('{}; this client stops, its history is in {} (resume it with -r {})'.format(
                e, self.history.path, self.save_dir)) from None
        except SaveError as e:
            raise SearchError(str(e)) from None

    def _resend_rewards(self):
        """A restarted client may have died between writing its history and sending the reward."""
        for row in self.history.rewarded():
            if not self.controller.reward(row_tokens(row), float(row['ap']), 0):
                raise SearchError('{}: the controller refuses the reward of tokens {} (step {}): not tokens of this '
                                  'search space; restore the file or delete that row'.format(
                                      self.history.path, row['tokens'], row['step']))

    def _search(self):
        start, skips = time.time(), 0
        while not self._complete():
            tokens = self.controller.next_tokens()
            if tokens is None:
                logger.info('the controller reports the search complete')
                return
            row = self._price(tokens)
            if row['status'] != 'priced':
                skips += 1
                self.history.append(row)
                self.controller.skip(tokens)
                if skips >= self.max_skips:
                    raise SearchError('{} candidates in a row were outside the constraint or unpriced; widen '
                                      'Constraint min/max_constraint or check table_file'.format(skips))
                continue
            skips = 0
            self.ranks.broadcast((tokens, None))
            row.update(self._train(tokens, row['step']))
            self.history.append(row)
            self.controller.reward(tokens, row['ap'], len(self.history.rewarded()))
            self._log_candidate(row, time.time() - start)

    def _follow(self):
        """A non-zero rank of a multi-process candidate training: train what rank 0 broadcasts (tokens, and the
        seed of a re-ranking's training; DataParallel gives every rank rank 0's initial weights)."""
        while True:
            job = self.ranks.broadcast(None)
            if job is None:
                return None, None
            tokens, seed = job
            self.trainer.candidate(self.setup.pricer.blazenet_kwargs(tokens), None, seed)

    def _complete(self):
        done = self.controller.rewarded
        return done is not None and done >= self.search_steps

    def _progress(self):
        """Rewards so far of the whole search (the controller's count); this client's own if it cannot be asked."""
        done = self.controller.rewarded_so_far()
        return len(self.history.rewarded()) if done is None else done

    def _price(self, tokens):
        price = self.setup.pricer.price(tokens)
        admitted = self.setup.constraint.admits(price)
        status = 'priced' if admitted else ('unpriced' if admitted is None else 'skipped')
        row = {'step': len(self.history.rows) + 1, 'tokens': tokens, 'status': status, 'flops': price.flops,
               'params': price.params, 'latency_us': price.latency_us, 'client': self.controller.client.client_name}
        if status != 'priced':
            logger.info('candidate %s %s: %s %s (bounds %s..%s)%s', tokens, status, self.metric,
                        self.setup.constraint.value(price), self.setup.constraint.min_constraint,
                        self.setup.constraint.max_constraint,
                        '; missing table keys: {}'.format(', '.join(price.unpriced[:3])) if price.unpriced else '')
        return row

    def _train(self, tokens, step):
        if self.ranks.is_main:
            logger.info('----->>> search step %d/%d: tokens %s <<<------', self._progress() + 1, self.search_steps,
                        tokens)
        out_dir = os.path.join(self.save_dir, 'candidates', '{:04d}_{}'.format(step, '-'.join(map(str, tokens))))
        result = self.trainer.candidate(self.setup.pricer.blazenet_kwargs(tokens), out_dir,
                                        parent=self._parent(tokens))
        return {'status': result.status, 'ap': result.ap, 'train_seconds': result.train_seconds}

    def _parent(self, tokens):
        """With ``inherit_weights``: the saved weights of the controller's current tokens (the annealing's state,
        which ``tokens`` mutate), if a client on this machine trained them; else None (a fresh start)."""
        if not (self.inherit and self.ranks.is_main):
            return None
        current = self.controller.annealing_tokens()
        path = parent_weights(self.save_dir, current) if current and current != tokens else None
        logger.info('inherits the weights of %s', current if path else 'nothing (fresh start: {} not trained '
                    'here)'.format(current))
        return Parent(self.setup.pricer.blazenet_kwargs(current), path) if path else None

    def _log_candidate(self, row, elapsed):
        done = self._progress()
        mine = self.history.rewarded()
        best = max(mine, key=lambda r: float(r['ap']))
        per_candidate = elapsed / len(mine)
        latency = '-' if row['latency_us'] is None else '{:.0f}us'.format(row['latency_us'])
        logger.info('search step %d/%d | tokens %s | flops %.1fM | latency %s | AP %.4f (%s) | best %.4f %s | '
                    'search eta %s', done, self.search_steps, row['tokens'], row['flops'] / 1e6, latency, row['ap'],
                    row['status'], float(best['ap']), row_tokens(best),
                    eta_string(max(self.search_steps - done, 0) * per_candidate))

    def all_rewarded_rows(self):
        """This search's rewarded rows from every client history found in save_dir."""
        rows = []
        for path in sorted(glob.glob(os.path.join(self.save_dir, 'search_history*.csv'))):
            rows += History(path).rewarded()
        return rows

    def best(self):
        """Best tokens and AP: the controller's own record, else (a client) the best history row."""
        tokens, reward = self.controller.best()
        rows = self.all_rewarded_rows()
        if tokens is None and rows:
            row = max(rows, key=lambda r: float(r['ap']))
            tokens, reward = row_tokens(row), float(row['ap'])
        return tokens, reward

    def _rerank(self):
        """The host's final re-ranking (``rerank_top_k``): the winner as a ``rerank.Ranked``, or None."""
        if not (self.rerank_plan.enabled and self.is_server):
            return None

        def train(tokens, seed):
            self.ranks.broadcast((tokens, seed))
            out_dir = os.path.join(self.save_dir, 'rerank', '{}_seed{}'.format('-'.join(map(str, tokens)), seed))
            result = self.trainer.candidate(self.setup.pricer.blazenet_kwargs(tokens), out_dir, seed)
            return result.ap, result.train_seconds

        ranked = rerank(self.controller.rewards(), self.rerank_plan, self.trainer.seed, self.save_dir, train,
                        self.resumed)
        return ranked[0] if ranked else None

    def finish(self, ranked=None):
        """Write the report files, print the structure block (of ``ranked``, the re-ranked winner, if given) and
        the output paths."""
        tokens, reward = self.best()
        if ranked is not None:
            if ranked.tokens != tokens:
                logger.info('re-ranking changed the winner: %s (mean %.4f) rather than %s (best single AP %.4f)',
                            ranked.tokens, ranked.mean, tokens, reward)
            tokens, reward = ranked.tokens, ranked.mean
        self.controller.close()
        outputs = {'history': self.history.path}
        if tokens is not None:
            args = self.setup.space.blazenet_args(tokens)
            outputs['best structure'] = os.path.join(self.save_dir, 'best_structure.yml')
            write_best_structure(outputs['best structure'], tokens, args, reward, ranked)
            paddledet = os.path.join(self.save_dir, 'best_paddledet.yml')
            if write_paddledet_override(paddledet, tokens, args, reward, train_input_size(self.cfg)):
                outputs['for PaddleDetection 2.x'] = paddledet
            outputs['pareto plot'] = os.path.join(self.save_dir, 'search_pareto.png')
            plot_pareto(outputs['pareto plot'], self.all_rewarded_rows(), self.metric, UNITS[self.metric])
            if self.is_server:
                outputs['controller checkpoint'] = os.path.join(self.save_dir, 'sanas.checkpoints')
            logger.info('All steps end, the best BlazeFace-NAS structure is (tokens %s, AP %.4f):', tokens, reward)
            print(structure_block(args), flush=True)
        for name, path in outputs.items():
            print('{}: {}'.format(name, path), flush=True)
        return tokens, reward

