"""One candidate of the search: build it, train it ``max_iters`` iterations, evaluate the original's AP.

Training follows the original loop: RMSProp with L2 and the piecewise LR from the config, a median-smoothed
log line every ``log_iter`` iterations, ``model_final`` saved at the end, then AP@0.5 over the eval set.
"""
import contextlib
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import paddle

from ppdet.core.workspace import create
from ppdet.data.reader import create_reader
from ppdet.slim.nas.distributed import Ranks
from ppdet.slim.nas.files import SaveError
from ppdet.slim.nas.inherit import inherit_weights
from ppdet.slim.nas.metrics import APAccumulator
from ppdet.slim.nas.vocabulary import Settings, Status, candidate_weights
from ppdet.utils.stats import TrainingStats, eta_string

__all__ = ['CandidateResult', 'CandidateTrainer', 'PruningCheck', 'build_blazeface', 'select_device']

logger = logging.getLogger(__name__)


@dataclass
class PruningCheck:
    """Early stopping of a poor candidate (``pruner``): every ``interval`` iterations before the last, its AP is
    evaluated and ``stop(iteration, ap)`` decides whether it trains on; ``pruned`` is then (iteration, ap)."""
    interval: int
    stop: Callable[[int, float], bool]
    pruned: Optional[Tuple[int, float]] = None

    def due(self, iteration, max_iters):
        return iteration % self.interval == 0 and iteration < max_iters


@dataclass
class CandidateResult:
    status: Status              # TRAINED, FAILED (non-finite loss) or PRUNED (stopped by a PruningCheck)
    ap: float
    train_seconds: float
    weights: Optional[str] = None
    inherited: Optional[object] = None  # an inherit.Inheritance when the candidate started from a parent's weights


def build_blazeface(cfg, blazenet_kwargs, backbone=None):
    """A candidate's BlazeFace: the config's BlazeNet/BlazeFace sections overlaid by the searched args
    (``backbone``: one built already, e.g. a supernet's sub-network on the same args)."""
    if backbone is None:
        backbone = create('BlazeNet', cfg, **blazenet_kwargs)
    return create('BlazeFace', cfg, backbone=backbone)


def select_device(use_gpu):
    """'gpu' when asked for and available; a CPU-only machine falls back to the CPU with a warning. The entry point
    (train_nas.py, a tool) passes it to ``paddle.set_device``: the device is the process's, not a library's choice."""
    if use_gpu and paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return 'gpu'
    if use_gpu:
        warnings.warn('use_gpu is true but this Paddle has no usable GPU; training on the CPU', stacklevel=2)
    return 'cpu'


class CandidateTrainer:
    """Trains and evaluates candidates under one config (readers, optimizer, schedule, AMP), on the device the
    process's entry point set (``paddle.set_device``); ``seed``: the config's by default."""

    def __init__(self, cfg, fp16=False, loss_scale=8.0, seed=None, ranks=None):
        settings = Settings.from_config(cfg)
        self.cfg = cfg
        self.device = paddle.get_device()
        self.fp16 = fp16 and self.device.startswith('gpu')
        if fp16 and not self.fp16:
            logger.warning('--fp16 is ignored on the CPU (Paddle AMP needs a GPU); training in float32')
        self.loss_scale = loss_scale
        self.seed = settings.seed if seed is None else seed
        self.ranks = ranks or Ranks()
        self.max_iters, self.log_iter, self.window = settings.max_iters, settings.log_iter, settings.log_smooth_window

    def build(self, blazenet_kwargs, seed=None):
        """The candidate's BlazeFace, its initial weights drawn with ``seed`` (the trainer's by default)."""
        paddle.seed(self.seed if seed is None else seed)
        return build_blazeface(self.cfg, blazenet_kwargs)

    def candidate(self, blazenet_kwargs, out_dir, seed=None, parent=None, check=None):
        """What a search step does with one candidate: build it (``seed``: its initial weights and data order,
        the trainer's by default), start it from the weights of ``parent`` (an ``inherit.Parent``) if given, train
        (stopped early if ``check``, a PruningCheck, says so), save and evaluate."""
        trained = None
        if parent is not None:  # built first, so that the candidate's own initialisation is the usual one
            trained = self.build(parent.blazenet_kwargs)
            trained.set_state_dict(paddle.load(parent.weights))
        model = self.build(blazenet_kwargs, seed)
        inherited = inherit_weights(model, trained) if trained is not None else None
        result = self.run(model, out_dir, seed, check)
        result.inherited = inherited
        return result

    def run(self, model, out_dir, seed=None, check=None):
        """Train, save ``model_final`` under ``out_dir``, evaluate; a non-finite loss ends it as 'failed', a
        ``check`` that stops it as 'pruned' (its last AP, no weights saved). Weights that cannot be written (disk
        full) raise SaveError: the search stops rather than go on blind."""
        start = time.time()
        trained = self.train(model, seed, check)
        seconds = time.time() - start
        if not trained:
            return CandidateResult(Status.FAILED, 0.0, seconds)
        if check is not None and check.pruned is not None:
            return CandidateResult(Status.PRUNED, check.pruned[1], seconds)
        if not self.ranks.is_main:
            return CandidateResult(Status.TRAINED, 0.0, seconds)
        weights = candidate_weights(out_dir)
        try:
            os.makedirs(out_dir, exist_ok=True)
            paddle.save(model.state_dict(), weights)
        except OSError as e:
            raise SaveError(weights, e) from None
        return CandidateResult(Status.TRAINED, self.evaluate(model), seconds, weights)

    def optimizer(self, model, iters):
        """The config's LearningRate (fitted to ``iters``) and OptimizerBuilder over ``model``'s parameters."""
        lr = create('LearningRate', self.cfg)(budget=iters)
        return lr, create('OptimizerBuilder', self.cfg)(lr, model.parameters())

    def train(self, model, seed=None, check=None):
        """``max_iters`` iterations; False as soon as the loss is not finite. ``seed``: of the data order (the
        trainer's by default). ``check``: a PruningCheck, which may end the training early (True; it records
        where)."""
        model.train()
        lr, optimizer = self.optimizer(model, self.max_iters)

        def pruned(iteration):
            return check is not None and check.due(iteration, self.max_iters) and self._pruned(model, check, iteration)
        return self.fit(_LossOf(model), lr, optimizer, self.max_iters, seed, after_step=pruned)

    def fit(self, loss_model, lr, optimizer, iters, seed=None, start=0, after_step=None, find_unused=False):
        """The training loop: iterations ``start`` .. ``iters - 1`` of ``loss_model`` (a layer whose forward is the
        loss) on the TrainReader's batches for ``seed`` (batch ``start`` onwards), the per-step log line. False as
        soon as the loss is not finite; ``after_step(iterations done)`` returning True ends it early (True)."""
        seed = self.seed if seed is None else seed
        scaler = paddle.amp.GradScaler(init_loss_scaling=self.loss_scale) if self.fp16 else None
        stats = TrainingStats(self.window, ['loss'])
        reader = create_reader(self.cfg['TrainReader'], 'train', max_iters=iters - start, seed=seed + self.ranks.rank,
                               start=start)
        step_model = self.ranks.wrap(loss_model, find_unused)
        step_times = []
        tick = time.time()
        with contextlib.closing(iter(reader)) as batches:  # a pruned candidate stops its data workers now
            for it, batch in enumerate(batches, start):
                loss = self._step(step_model, optimizer, scaler, batch)
                if not math.isfinite(loss):
                    logger.warning('iter: %d, loss is %s: candidate failed', it, loss)
                    return False
                lr.step()
                stats.update({'loss': loss})
                now = time.time()
                step_times = (step_times + [now - tick])[-self.window:]
                tick = now
                if self.ranks.is_main and (it % self.log_iter == 0 or it == iters - 1):
                    per_iter = float(np.mean(step_times))
                    logger.info('iter: %d, lr: %.6f, %s, time: %.3f, eta: %s', it, optimizer.get_lr(), stats.log(),
                                per_iter, eta_string((iters - it - 1) * per_iter))
                if after_step is not None and after_step(it + 1):
                    return True
        return True

    def _pruned(self, model, check, iteration):
        ap = self.evaluate(model)
        stop = check.stop(iteration, ap)
        logger.info('iter: %d, intermediate AP %.4f: %s', iteration, ap, 'pruned' if stop else 'trains on')
        if stop:
            check.pruned = (iteration, ap)
        return stop

    def _step(self, step_model, optimizer, scaler, batch):
        tensors = {k: paddle.to_tensor(batch[k]) for k in ('image', 'gt_bbox', 'gt_class', 'gt_num')}
        with paddle.amp.auto_cast(enable=self.fp16):
            loss = step_model(**tensors)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.minimize(optimizer, loss)
        else:
            loss.backward()
            optimizer.step()
        optimizer.clear_grad()
        return float(loss)

    def evaluate(self, model):
        """The original's reward: AP@0.5 over the eval set."""
        model.eval()
        accumulator = APAccumulator()
        with paddle.no_grad():
            for batch in create_reader(self.cfg['EvalReader'], 'eval', seed=self.seed):
                detections, counts = model.predict(paddle.to_tensor(batch['image']))
                accumulator.add(detections.numpy(), counts.numpy(), batch)
        model.train()
        return float(accumulator.accumulate())


class _LossOf(paddle.nn.Layer):
    """A model whose forward is its training loss: what ``paddle.DataParallel`` needs to wrap."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, gt_bbox, gt_class, gt_num):
        return self.model.loss(image, gt_bbox, gt_class, gt_num)
