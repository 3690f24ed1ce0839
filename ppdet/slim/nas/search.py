"""The search loop: controller -> tokens -> price -> (skip | build, train, evaluate) -> reward -> history.

``search_steps`` counts rewarded candidates. Candidates outside the constraint, or that the latency table cannot
price, are recorded and skipped without training and without using a step (the original spent a step on each,
or died on an assert). The history is written before the reward is sent, and a candidate the history already
rewarded is answered from it, so a resumed search never trains a candidate twice.
"""
import logging
import os
import time

import numpy as np

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.candidate import CandidateTrainer, select_device
from ppdet.slim.nas.controller import SearchController
from ppdet.slim.nas.files import History
from ppdet.slim.nas.report import plot_pareto, write_best_structure
from ppdet.utils.stats import eta_string
from search_space.blazefacespace_nas import structure_block

__all__ = ['NasSearch', 'SearchError']

logger = logging.getLogger(__name__)
UNITS = {'flops': 'FLOPs', 'latency_us': 'us'}


class SearchError(RuntimeError):
    """The search cannot go on (for example, the constraint rejects every candidate it samples)."""


class NasSearch:
    def __init__(self, setup, resume_dir=None, fp16=False, loss_scale=8.0):
        cfg = setup.cfg
        self.setup = setup
        self.cfg = cfg
        self.save_dir = cfg.get('save_dir', 'nas_checkpoint')
        self.search_steps = int(cfg.get('search_steps', 300))
        if self.search_steps <= 0:
            raise ConfigError('search_steps is {}; it must be a positive number of candidates'.format(
                self.search_steps))
        self.max_skips = int(cfg.get('max_consecutive_skips', 10000))
        self.history = History(os.path.join(self.save_dir, 'search_history.csv'))
        self.controller = SearchController(
            setup.space_name, setup.space, cfg.get('server_ip', ''), cfg.get('server_port', 8999),
            cfg.get('is_server', True), cfg.get('init_temperature'), cfg.get('reduce_rate', 0.85),
            self.search_steps, self.save_dir, resume_dir)
        self.trainer = CandidateTrainer(cfg, select_device(cfg.get('use_gpu', False)), fp16, loss_scale,
                                        seed=int(cfg.get('seed', 0)))
        self.metric = 'flops' if setup.constraint.ctype == 'flops' else 'latency_us'
        np.random.seed(int(cfg.get('seed', 0)))  # the controller samples with numpy: a seed replays a search

    def run(self):
        start, step_seconds = time.time(), []
        skips = 0
        while len(self.history.rewarded()) < self.search_steps:
            tokens = self.controller.next_tokens()
            done = self._recorded_reward(tokens)
            if done is not None:
                logger.info('tokens %s were rewarded before the restart (AP %s): reusing it', tokens, done)
                self.controller.reward(tokens, done, len(self.history.rewarded()))
                continue
            row = self._price(tokens)
            if row['status'] != 'priced':
                skips += 1
                self.history.append(row)
                if skips >= self.max_skips:
                    raise SearchError('{} candidates in a row were outside the constraint or unpriced; widen '
                                      'Constraint min/max_constraint or check table_file'.format(skips))
                continue
            skips = 0
            row.update(self._train(tokens, row['step']))
            step_seconds.append(time.time() - start - sum(step_seconds))
            self.history.append(row)
            self.controller.reward(tokens, row['ap'], len(self.history.rewarded()))
            self._log_candidate(row, step_seconds)
        return self.finish()

    def _recorded_reward(self, tokens):
        for row in self.history.rewarded():
            if row['tokens'] == ' '.join(map(str, tokens)):
                return float(row['ap'])
        return None

    def _price(self, tokens):
        price = self.setup.pricer.price(tokens)
        admitted = self.setup.constraint.admits(price)
        status = 'priced' if admitted else ('unpriced' if admitted is None else 'skipped')
        row = {'step': len(self.history.rows) + 1, 'tokens': tokens, 'status': status, 'flops': price.flops,
               'params': price.params, 'latency_us': price.latency_us}
        if status != 'priced':
            value = self.setup.constraint.value(price)
            logger.info('candidate %s %s: %s %s (bounds %s..%s)%s', tokens, status, self.metric, value,
                        self.setup.constraint.min_constraint, self.setup.constraint.max_constraint,
                        '; missing table keys: {}'.format(', '.join(price.unpriced[:3])) if price.unpriced else '')
        return row

    def _train(self, tokens, step):
        logger.info('----->>> search step %d/%d: tokens %s <<<------', len(self.history.rewarded()) + 1,
                    self.search_steps, tokens)
        model = self.trainer.build(self.setup.pricer.blazenet_kwargs(tokens))
        out_dir = os.path.join(self.save_dir, 'candidates', '{:04d}_{}'.format(step, '-'.join(map(str, tokens))))
        result = self.trainer.run(model, out_dir)
        return {'status': result.status, 'ap': result.ap, 'train_seconds': result.train_seconds}

    def _log_candidate(self, row, seconds):
        done = len(self.history.rewarded())
        best = max(self.history.rewarded(), key=lambda r: float(r['ap']))
        per_candidate = sum(seconds) / len(seconds)
        value = row[self.metric]
        logger.info('search step %d/%d | tokens %s | flops %.1fM | latency %s | AP %.4f (%s) | best %.4f %s | '
                    'eta %s', done, self.search_steps, row['tokens'], row['flops'] / 1e6,
                    '-' if row['latency_us'] is None else '{:.0f}us'.format(row['latency_us']), row['ap'],
                    row['status'], float(best['ap']), best['tokens'].split(),
                    eta_string((self.search_steps - done) * per_candidate) if value is not None else '-')

    def best(self):
        """Best tokens and AP: the controller's own record, else (a client) the best history row."""
        tokens, reward = self.controller.best()
        if tokens is None and self.history.rewarded():
            row = max(self.history.rewarded(), key=lambda r: float(r['ap']))
            tokens, reward = [int(t) for t in row['tokens'].split()], float(row['ap'])
        return tokens, reward

    def finish(self):
        """Write the report files, print the structure block and the output paths."""
        tokens, reward = self.best()
        self.controller.close()
        outputs = {'history': self.history.path}
        if tokens is not None:
            args = self.setup.space.blazenet_args(tokens)
            outputs['best structure'] = os.path.join(self.save_dir, 'best_structure.yml')
            write_best_structure(outputs['best structure'], tokens, args, reward)
            outputs['pareto plot'] = os.path.join(self.save_dir, 'search_pareto.png')
            plot_pareto(outputs['pareto plot'], self.history.rewarded(), self.metric, UNITS[self.metric])
            outputs['controller checkpoint'] = os.path.join(self.save_dir, 'sanas.checkpoints')
            logger.info('All steps end, the best BlazeFace-NAS structure is (tokens %s, AP %.4f):', tokens, reward)
            print(structure_block(args), flush=True)
        for name, path in outputs.items():
            print('{}: {}'.format(name, path), flush=True)
        return tokens, reward
