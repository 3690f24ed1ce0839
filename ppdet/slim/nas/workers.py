"""Candidates trained side by side on one machine: ``train_nas.py --workers N``.

A BlazeFace candidate is far too small to keep a GPU, or several cores, busy on its own, and splitting one
candidate over devices (``paddle.distributed.launch``) buys little; training different candidates at the same
time scales almost linearly. So the driver process is the search's host (controller) and worker 0, and starts
N-1 local clients of the same search (``is_server: false`` on 127.0.0.1), one per GPU or each with its share of
the cores. The multi-client protocol does the rest: one ``search_steps`` budget, one history per worker, merged
by the host's report.

- Placement (``plan_workers``, a pure function): on GPUs one worker per GPU (``CUDA_VISIBLE_DEVICES`` of the
  child; the host trains on ``gpu:<id>``); on the CPU one math-library thread per worker per core share
  (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``) and the readers' ``worker_num`` capped at that share, so N workers
  do not oversubscribe the cores.
- Lifecycle (``Supervisor``): each child calls ``die_with_parent`` on the driver first thing, so ``kill -9`` of
  the driver ends them; one that dies before the search is complete is reported once and restarted with ``-r``
  (it takes over its history and name), up to ``MAX_RESTARTS`` times, and what it had in flight is handed out
  again at once; Ctrl-C or SIGTERM on the driver stops them all (SIGTERM, then SIGKILL after ``STOP_GRACE`` s).
"""
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.files import SaveError
from ppdet.slim.nas.search import SearchError, build_search
from ppdet.slim.nas.vocabulary import Settings
from ppdet.utils.processes import EXIT_ORPHANED

__all__ = ['WorkerSlot', 'WorkerPlan', 'plan_workers', 'parse_worker_count', 'parse_gpu_ids', 'reader_overrides',
           'resolve_plan', 'worker_command', 'Supervisor', 'run_search']

logger = logging.getLogger(__name__)
AUTO = 'auto'
MAX_RESTARTS = 3       # per worker; after that the search goes on with the others
POLL_SECONDS = 0.5     # how often the supervisor looks at its children
STOP_GRACE = 5.0       # seconds between SIGTERM and SIGKILL when the workers are stopped
GOODBYE_SECONDS = 5.0  # how long workers may take to exit on their own at the end (told 'done', or never connected)
READERS = ('TrainReader', 'EvalReader')
TRAIN_NAS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), 'train_nas.py')


@dataclass(frozen=True)
class WorkerSlot:
    """Where one worker trains: a GPU (its id as the driver's Paddle numbers it, and as CUDA_VISIBLE_DEVICES
    names it), or the CPU with a share of the cores."""
    worker_id: int
    math_threads: int
    data_workers: int          # at most this many DataLoader processes per reader
    gpu: Optional[int] = None
    cuda_device: Optional[str] = None

    @property
    def device(self) -> Optional[str]:
        """Paddle's device for a worker running in the driver's process (worker 0); None: the config's choice
        (``select_device``: the CPU, or the GPU a launcher's rank is given)."""
        return None if self.gpu is None else 'gpu:{}'.format(self.gpu)

    def env(self) -> Dict[str, str]:
        """Environment of a child worker: its one GPU, and its share of the math-library threads."""
        env = {'OMP_NUM_THREADS': str(self.math_threads), 'MKL_NUM_THREADS': str(self.math_threads)}
        if self.cuda_device is not None:
            env['CUDA_VISIBLE_DEVICES'] = self.cuda_device
        return env


@dataclass(frozen=True)
class WorkerPlan:
    slots: Tuple[WorkerSlot, ...]

    @property
    def count(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        first = self.slots[0]
        where = ('GPUs ' + ', '.join(str(s.gpu) for s in self.slots) if first.gpu is not None else
                 'the CPU, {} math thread(s) each'.format(first.math_threads))
        return ('{} workers: worker 0 is this process (the host), {} more process(es); on {}, readers capped at {} '
                'data worker(s) each'.format(self.count, self.count - 1, where, first.data_workers))


def parse_worker_count(value, source: str) -> Optional[int]:
    """A number of workers >= 1, or None for ``auto``; anything else is a one-line error naming ``source``."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return None
    text = value.strip() if isinstance(value, str) else value
    try:
        count = int(text) if not isinstance(text, (bool, float)) else None
    except (TypeError, ValueError):
        count = None
    if count is None or count < 1:
        raise ConfigError('{} {!r}: give a number of workers >= 1 (e.g. {} 2), or auto (one per GPU, else one per '
                          'CPU core)'.format(source, value, source.split()[0]))
    return count


def parse_gpu_ids(text: str) -> List[int]:
    try:
        ids = [int(t) for t in text.split(',') if t.strip()]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise ConfigError('--gpus {!r}: give distinct GPU ids separated by commas, e.g. --gpus 0,2'.format(text))
    return ids


def plan_workers(requested: Optional[int], use_gpu: bool, visible_gpus: int, cores: int,
                 chosen_gpus: Optional[Sequence[int]] = None, cuda_visible: Optional[str] = None) -> WorkerPlan:
    """Placement of ``requested`` workers (None: auto). ``visible_gpus``: how many GPUs Paddle sees (their ids are
    0..n-1); ``cuda_visible``: the driver's CUDA_VISIBLE_DEVICES, which a child's id must be translated through.

    CPU: one worker per core for auto (measured here: two candidates side by side on 2 cores give about 1.8x
    the throughput of one; a second math thread for one candidate gave 1.04-1.2x), each with cores // N math
    threads and at most that many data workers per reader (at least one of each).
    """
    gpus = visible_gpus if use_gpu else 0
    if chosen_gpus is not None:
        if not use_gpu:
            raise ConfigError('--gpus {}: use_gpu is false; set -o use_gpu=true to train on GPUs'.format(
                ','.join(map(str, chosen_gpus))))
        unknown = [g for g in chosen_gpus if g >= visible_gpus]
        if unknown:
            raise ConfigError('--gpus {}: Paddle sees {} GPU(s) here{}; GPU {} does not exist'.format(
                ','.join(map(str, chosen_gpus)), visible_gpus,
                ' (ids 0..{})'.format(visible_gpus - 1) if visible_gpus else '', unknown[0]))
    ids = list(chosen_gpus) if chosen_gpus is not None else list(range(gpus))
    if requested == 1 and chosen_gpus is None:
        ids = []  # one worker, no GPU named: where the config (or paddle.distributed.launch) says
    if ids:
        count = len(ids) if requested is None else requested
        if count > len(ids):
            raise ConfigError('--workers {}: one candidate per GPU, and {} GPU(s) are available ({}); use --workers '
                              '{} or fewer, or --workers auto'.format(count, len(ids), ','.join(map(str, ids)),
                                                                       len(ids)))
        ids = ids[:count]
    else:
        count = cores if requested is None else requested
    share = max(1, cores // count)
    cuda_names = [d.strip() for d in cuda_visible.split(',')] if cuda_visible else None
    slots = tuple(WorkerSlot(k, share, share, ids[k] if ids else None,
                             (cuda_names[ids[k]] if cuda_names else str(ids[k])) if ids else None)
                  for k in range(count))
    return WorkerPlan(slots)


def reader_overrides(cfg: dict, data_workers: int) -> Dict[str, int]:
    """``worker_num`` of each reader capped at ``data_workers`` (readers already below it are left alone)."""
    caps = {}
    for section in READERS:
        reader = cfg.get(section) or {}
        if reader.get('use_process') and int(reader.get('worker_num', 0)) > data_workers:
            caps['{}.worker_num'.format(section)] = data_workers
    return caps


def worker_command(config: str, overrides: dict, save_dir: str, joins: dict, driver_pid: int, slot: WorkerSlot,
                   fp16: bool, loss_scale: float) -> List[str]:
    """A child worker: the same train_nas.py and config, joining the driver's search (``joins``: the strategy's
    ``worker_overrides``, its controller on loopback or its study), always ``-r save_dir`` so that a restarted
    worker takes over the history (and name) of a dead one."""
    opts = dict(overrides, save_dir=save_dir, **joins)
    argv = [sys.executable, '-u', TRAIN_NAS, '-c', os.path.abspath(config), '-r', save_dir,
            '--worker-of', str(driver_pid), '--worker-id', str(slot.worker_id), '--loss_scale', repr(loss_scale)]
    argv += ['--fp16'] if fp16 else []
    return argv + ['-o'] + ['{}={}'.format(k, json.dumps(v)) for k, v in opts.items()]  # JSON values are YAML


def _how_it_ended(code: int) -> str:
    if code < 0:
        return 'was killed by {}'.format(signal.Signals(-code).name)
    if code == EXIT_ORPHANED:
        return 'ended because its parent went away'
    return 'exited with code {}'.format(code)


@dataclass
class Child:
    worker_id: int
    argv: List[str]
    env: Dict[str, str]
    proc: Optional[subprocess.Popen] = None
    restarts: int = 0
    done: bool = False


@dataclass
class Supervisor:
    """Starts the child workers, restarts one that dies before the search is complete, stops them all.
    ``on_death(worker_id)`` runs (in the supervisor's thread) after each death, before any restart."""
    children: List[Child]
    on_death: Callable[[int], None]
    max_restarts: int = MAX_RESTARTS
    poll: float = POLL_SECONDS
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._thread = threading.Thread(target=self._watch, name='worker-supervisor', daemon=True)
        self._thread.start()

    @staticmethod
    def _spawn(child: Child) -> None:
        # a session of its own: Ctrl-C in the terminal reaches the driver only, which stops the workers in order
        child.proc = subprocess.Popen(child.argv, env=dict(os.environ, **child.env), start_new_session=True)

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll):
            for child in self.children:
                self._check(child)

    def _check(self, child: Child) -> None:
        if child.done or child.proc.poll() is None:
            return
        code = child.proc.returncode
        if code == 0:  # it was told the search is complete
            child.done = True
            return
        try:
            self.on_death(child.worker_id)
        except (ConfigError, SaveError) as e:  # a damaged history of the dead worker: its candidate stays in flight
            logger.error('worker %d: %s', child.worker_id, e)
        if child.restarts >= self.max_restarts:
            logger.error('worker %d %s; not restarted (it was %d times already): the search goes on with the others',
                         child.worker_id, _how_it_ended(code), child.restarts)
            child.done = True
            return
        child.restarts += 1
        logger.warning('worker %d %s; restarting it (%d/%d)',
                       child.worker_id, _how_it_ended(code), child.restarts, self.max_restarts)
        self._spawn(child)

    def running(self) -> List[Child]:
        return [c for c in self.children if c.proc is not None and c.proc.poll() is None]

    def stop(self, goodbye: float = 0.0, grace: float = STOP_GRACE) -> None:
        """No more restarts; let the workers end by themselves for ``goodbye`` s, then SIGTERM, then SIGKILL."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        for wait, send in ((goodbye, None), (grace, signal.SIGTERM), (grace, signal.SIGKILL)):
            for child in self.running() if send else []:
                child.proc.send_signal(send)
            deadline = time.time() + wait
            while self.running() and time.time() < deadline:
                time.sleep(0.1)
        for child in self.children:
            if child.proc is not None:
                child.proc.wait()


def resolve_plan(cfg: dict, workers_flag: Optional[str], gpus_flag: Optional[str]) -> WorkerPlan:
    """The plan from ``--workers`` (else the config's ``workers``; ``auto`` when only ``--gpus`` is given) and
    ``--gpus``, with every mistake a one-line error before anything starts."""
    settings = Settings.from_config(cfg)
    source = '--workers' if workers_flag is not None else 'workers (config key)'
    value = workers_flag if workers_flag is not None else cfg.get('workers', AUTO if gpus_flag else 1)
    requested = parse_worker_count(value, source)
    if workers_flag is not None or gpus_flag is not None or requested != 1:
        if not settings.is_server:
            raise ConfigError('{} {}: this config joins another host\'s search (is_server: false); local workers '
                              'are started by the host: drop {} here, or set is_server: true'.format(
                                  source, value, source.split()[0]))
        if int(os.environ.get('PADDLE_TRAINERS_NUM', 1)) > 1:
            raise ConfigError('{} {}: under paddle.distributed.launch each candidate already uses every rank; choose '
                              'one: --workers (candidates side by side) or the launcher (one candidate on all '
                              'devices)'.format(source, value))
    return plan_workers(requested, settings.use_gpu, _visible_gpus(), _cores(),
                        parse_gpu_ids(gpus_flag) if gpus_flag is not None else None,
                        os.environ.get('CUDA_VISIBLE_DEVICES'))


def _visible_gpus() -> int:
    import paddle
    return paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


class Interrupted(Exception):
    """SIGTERM or SIGINT (Ctrl-C) reached the driver."""


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def run_search(setup, plan: WorkerPlan, config: str, overrides: dict, resume_dir: Optional[str], fp16: bool,
               loss_scale: float):
    """The search with ``plan``'s workers: this process is the host and worker 0; returns (best tokens, AP).

    The host's controller listens (a port in use is a one-line error) before any child starts."""
    caps = reader_overrides(setup.cfg, plan.slots[0].data_workers) if plan.count > 1 else {}
    if caps:  # the host's own readers, in a copy of the caller's config; the children get them as -o
        cfg = dict(setup.cfg)
        for key, value in caps.items():
            section, name = key.split('.')
            cfg[section] = dict(cfg[section], **{name: value})
        setup = dataclasses.replace(setup, cfg=cfg)
    if plan.count > 1:
        logger.info('%s', plan.describe())
    search = build_search(setup, resume_dir, fp16, loss_scale)
    if plan.count == 1:
        return search.run()
    save_dir = os.path.abspath(search.save_dir)
    child_overrides = dict(overrides, **caps)
    supernets = search.prepare_supernet()  # trained here, once, before the workers that score with it start
    if supernets:
        child_overrides['supernet_weights'] = [os.path.abspath(d) for d in supernets]
    children = [Child(slot.worker_id, worker_command(config, child_overrides, save_dir,
                                                     search.strategy.worker_overrides(), os.getpid(), slot, fp16,
                                                     loss_scale), slot.env())
                for slot in plan.slots[1:]]
    supervisor = Supervisor(children, lambda worker_id: search.strategy.release_dead())
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    stopped, finished = None, False
    try:
        supervisor.start()
        result = search.run()
        finished = True
        return result
    except Interrupted as e:
        stopped = e
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the stopping short
        supervisor.stop(goodbye=GOODBYE_SECONDS if finished else 0.0)
        for s, handler in previous.items():
            signal.signal(s, handler)
    raise SearchError('stopped by {}: every worker was stopped; the history and checkpoint in {} are consistent; '
                      'resume with: python -u train_nas.py -c {} --workers {} -r {}'.format(
                          stopped, save_dir, config, plan.count, save_dir))
