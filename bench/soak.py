"""Soak test of a whole search: a host and two clients on 127.0.0.1, killed with SIGKILL at random moments and
restarted with -r, until the search ends; then the invariants of issue 15 are checked.

    python bench/soak.py [--steps 20] [--kills 10] [--seed 0] [--minutes 30] [--max-iters 150] [--no-aim]
                         [--work DIR]

Each role (host, client1, client2) goes through these states:

    started -> searching --kill -9--> dead --(0..3 s)--> restarted with -r -> searching ... -> exited

Kills come every 1..5 s (random), on a random running role, while the controller has fewer than ``steps``
rewards; the host is among the victims (forced, and not aimed, for the last kill if chance has spared it). Random times mostly
land in training; so (unless --no-aim) half of the kills wait up to 15 s for a moment of AIMED instead. A kill point is the
victim's role and the phase its log was in (training, evaluating, after a reward, waiting for the controller, ...).
At the end: every process exited 0; exactly ``steps`` candidates rewarded in the histories, each once; no
candidate trained (weights saved) twice, unless it was lost (its trainer killed before its history row) and handed
out again, once per loss; every history valid; the checkpoint's count and best equal to the
histories'; nothing in flight; the killed processes' data workers gone within 5 s; no process left.
Prints one JSON line (kills, kill points covered, wall time, problems). ``tests/test_soak.py`` runs a short one.
"""
import argparse
import collections
import glob
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, 'tests')]

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

from search_fixtures import processes_with, tiny_config, tiny_dataset, wait_until_gone  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.files import History, row_tokens  # noqa: E402

TRAIN = os.path.join(REPO, 'train_nas.py')
# (text of a log line, the phase it means): the victim's phase is that of the last line that has one
PHASES = [('<<<------', 'candidate starting'), ('iter:', 'training'), ('TrainReader epoch', 'training'),
          ('EvalReader epoch', 'evaluating'), ('Controller - iter', 'reward recorded'),
          ('search step', 'after a reward'), (' skipped', 'after a skip'), (' unpriced', 'after a skip'),
          ('is not up yet', 'waiting for the controller'), ('stopped answering', 'waiting for the controller'),
          ('answers', 'reconnected'), ('controller restored', 'restored'),
          ('waiting for', 'waiting for clients'), ('search complete', 'finishing'), ('All steps end', 'finishing')]
KILL_EVERY = (1.0, 5.0)
RESTART_AFTER = (0.0, 3.0)
# with --aim, half of the kills wait (at most AIM_SECONDS) for one of these moments, which random times rarely hit
AIMED = ['candidate starting', 'evaluating', 'reward recorded', 'after a reward', 'after a skip',
         'waiting for the controller', 'reconnected', 'restored']
AIM_SECONDS = 15.0


@dataclass
class KillPoint:
    role: str
    phase: str
    workers: int        # data workers the victim had
    workers_left: int   # of those, still running 5 s after the kill


@dataclass
class Role:
    name: str
    config: str
    save_dir: str
    log_dir: str
    proc: Optional[subprocess.Popen] = None
    starts: int = 0
    log: str = ''
    restart_at: Optional[float] = None

    def start(self, resume):
        self.starts += 1
        self.log = os.path.join(self.log_dir, '{}.{}.log'.format(self.name, self.starts))
        args = [sys.executable, '-u', TRAIN, '-c', self.config] + (['-r', self.save_dir] if resume else [])
        with open(self.log, 'w') as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        self.restart_at = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def phase(self):
        with open(self.log, errors='replace') as f:
            lines = f.read().splitlines()
        for line in reversed(lines):
            for marker, phase in PHASES:
                if marker in line:
                    return phase
        return 'starting'

    def wait_for(self, phase, seconds):
        """Poll the log until it shows ``phase`` (or ``seconds`` pass, or the process ends)."""
        deadline = time.time() + seconds
        while time.time() < deadline and self.running() and self.phase() != phase:
            time.sleep(0.02)

    def kill(self):
        """SIGKILL this role's process; its data workers must end on their own."""
        try:
            with open('/proc/{0}/task/{0}/children'.format(self.proc.pid)) as f:
                workers = [int(p) for p in f.read().split()]
        except OSError:
            workers = []
        phase = self.phase()
        self.proc.kill()
        self.proc.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        return KillPoint(self.name, phase, len(workers), sum(_alive(w) for w in workers))


def _alive(pid):
    try:
        with open('/proc/{}/stat'.format(pid)) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@dataclass
class SoakResult:
    steps: int
    kills: List[KillPoint] = field(default_factory=list)
    seconds: float = 0.0
    problems: List[str] = field(default_factory=list)

    @property
    def kill_points(self):
        return sorted({'{}: {}'.format(k.role.rstrip('12'), k.phase) for k in self.kills})

    def summary(self):
        return {'steps': self.steps, 'kills': len(self.kills), 'host_kills': sum(k.role == 'host' for k in self.kills),
                'kill_points_covered': len(self.kill_points), 'kill_points': self.kill_points,
                'workers_killed_with_parents': sum(k.workers for k in self.kills),
                'workers_left': sum(k.workers_left for k in self.kills), 'seconds': round(self.seconds, 1),
                'problems': self.problems}


def _configs(work, steps, max_iters):
    """The host's config and the clients' (same save_dir and port; clients wait up to 2 minutes for the host)."""
    data = tiny_dataset(work)
    host = tiny_config(_mkdir(work, 'host'), data, search_steps=steps, max_iters=max_iters,
                       save_dir=os.path.join(work, 'out'), controller_wait=120)
    with open(host) as f:
        text = f.read()
    client = os.path.join(_mkdir(work, 'client'), 'tiny.yml')
    with open(client, 'w') as f:
        f.write(text.replace('is_server: true', 'is_server: false').replace('server_ip: ""', 'server_ip: 127.0.0.1'))
    return host, client


def _mkdir(*parts):
    path = os.path.join(*parts)
    os.makedirs(path, exist_ok=True)
    return path


def _rewarded(save_dir):
    try:
        with open(os.path.join(save_dir, 'sanas.checkpoints')) as f:
            return json.load(f)['_iter']
    except (OSError, ValueError, KeyError):
        return 0


def run_soak(work, steps=8, kills=3, seed=0, seconds=600, max_iters=150, aim=False):
    """The soak in ``work`` (a fresh directory); returns a SoakResult whose ``problems`` are the broken
    invariants (empty when all hold). ``aim``: half of the kills wait for a moment from AIMED."""
    rng = random.Random(seed)
    host_cfg, client_cfg = _configs(work, steps, max_iters)
    save_dir, logs = os.path.join(work, 'out'), _mkdir(work, 'logs')
    roles = [Role('host', host_cfg, save_dir, logs)] + [Role('client{}'.format(i), client_cfg, save_dir, logs)
                                                         for i in (1, 2)]
    result = SoakResult(steps)
    start = time.time()
    for role in roles:
        role.start(resume=False)
    next_kill = start + rng.uniform(*KILL_EVERY)
    while time.time() - start < seconds:
        now = time.time()
        host_done = roles[0].proc.poll() == 0
        for role in roles:
            if role.restart_at is not None and now >= role.restart_at and not host_done:
                role.start(resume=True)
        if all(not r.running() and r.restart_at is None for r in roles) or (host_done and not any(
                r.running() for r in roles)):
            break
        if len(result.kills) < kills and now >= next_kill and _rewarded(save_dir) < steps:
            running = [r for r in roles if r.running()]
            host_spared = not any(k.role == 'host' for k in result.kills)
            forced = host_spared and len(result.kills) == kills - 1 and roles[0].running()
            victim = roles[0] if forced else (rng.choice(running) if running else None)
            if victim is not None:
                # the forced host kill is not aimed: waiting for a moment the host may never reach again would let
                # the search end first (seen: a run of 3 kills with none of the host)
                if aim and not forced and rng.random() < 0.5:
                    victim.wait_for(rng.choice(AIMED), AIM_SECONDS)
                if not victim.running():
                    continue
                result.kills.append(victim.kill())
                victim.restart_at = time.time() + rng.uniform(*RESTART_AFTER)
            next_kill = time.time() + rng.uniform(*KILL_EVERY)
        time.sleep(0.2)
    else:
        result.problems.append('not finished within {} s'.format(seconds))
        for role in roles:
            if role.running():
                role.proc.kill()
                role.proc.wait()
    result.seconds = time.time() - start
    for role in roles:
        if role.proc.returncode not in (0, None) and role.restart_at is None:
            result.problems.append('{} exited {} (log {})'.format(role.name, role.proc.returncode, role.log))
    result.problems += check_outputs(save_dir, steps, logs)
    left = wait_until_gone(work, timeout=5)
    if left:
        result.problems.append('processes left running: {}'.format(left))
    result.problems += ['{} data worker(s) of a killed {} outlived it'.format(k.workers_left, k.role)
                        for k in result.kills if k.workers_left]
    return result


LOST = re.compile(r'so (\S+(?: and \S+)*) was lost with its process')


def _handed_out_again(log_dir):
    """How often each candidate (tokens joined by '-') was lost and handed out again, from the host's log lines."""
    lost = collections.Counter()
    for path in glob.glob(os.path.join(log_dir, '*.log')):
        with open(path, errors='replace') as f:
            for match in LOST.finditer(f.read()):
                lost.update(text.replace(',', '-') for text in match.group(1).split(' and '))
    return lost


def check_outputs(save_dir, steps, log_dir):
    """The invariants of a finished search in ``save_dir``, as a list of what is broken."""
    problems, rows = [], []
    for path in sorted(glob.glob(os.path.join(save_dir, 'search_history*.csv'))):
        try:
            rows += History(path).rewarded()
        except ConfigError as e:
            problems.append('invalid history: {}'.format(e))
    tokens = [r['tokens'] for r in rows]
    if len(tokens) != steps or len(set(tokens)) != steps:
        problems.append('{} rewarded rows, {} distinct; expected {}'.format(len(tokens), len(set(tokens)), steps))
    saved = collections.Counter(os.path.basename(os.path.dirname(p)).split('_', 1)[1]
                                for p in glob.glob(os.path.join(save_dir, 'candidates', '*', 'model_final.pdparams')))
    again = _handed_out_again(log_dir)
    twice = [t for t, n in saved.items() if n > 1 + again[t]]
    if twice:
        problems.append('trained twice: {}'.format(twice))
    try:
        with open(os.path.join(save_dir, 'sanas.checkpoints')) as f:
            scene = json.load(f)
    except (OSError, ValueError) as e:
        return problems + ['no valid checkpoint: {}'.format(e)]
    if scene['_iter'] != steps or scene.get('_in_flight'):
        problems.append('checkpoint: {} rewarded, in flight {}'.format(scene['_iter'], scene.get('_in_flight')))
    for r in rows:
        key = str(row_tokens(r))
        if not math.isclose(scene['_searched'].get(key, -1), float(r['ap']), rel_tol=1e-5, abs_tol=1e-6):
            problems.append('reward of {} is {} in the history, {} in the checkpoint'.format(
                key, r['ap'], scene['_searched'].get(key)))
    if rows:
        best = max(float(r['ap']) for r in rows)
        best_rows = [r['tokens'] for r in rows if math.isclose(float(r['ap']), best, rel_tol=1e-5, abs_tol=1e-6)]
        chosen = ' '.join(map(str, scene['_best_tokens'] or []))
        if not math.isclose(scene['_max_reward'], best, rel_tol=1e-5, abs_tol=1e-6) or chosen not in best_rows:
            problems.append('controller best {} {} is not the best history row {} {}'.format(
                scene['_best_tokens'], scene['_max_reward'], best_rows, best))
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--kills', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--minutes', type=float, default=30)
    parser.add_argument('--max-iters', type=int, default=150, help='per candidate (64x64 images, batch 4)')
    parser.add_argument('--no-aim', action='store_true', help='kill at random times only (no aimed moments)')
    parser.add_argument('--work', default=None, help='a fresh directory (default: a new one under /tmp)')
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix='blazeface_soak_')
    os.makedirs(work, exist_ok=True)
    result = run_soak(work, args.steps, args.kills, args.seed, args.minutes * 60, args.max_iters, not args.no_aim)
    print(json.dumps(dict(result.summary(), work=work)), flush=True)
    return 1 if result.problems or processes_with(work) else 0


if __name__ == '__main__':
    sys.exit(main())
