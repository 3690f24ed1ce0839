"""The search controller: PaddleSlim's simulated-annealing controller behind its socket server.

What SANAS (``paddleslim.nas.SANAS``) composes, composed here with the defaults a long search needs:
- ``server_ip: ""`` binds loopback, not the host's network address (the protocol has no authentication);
- a port in use is a one-line error naming ``server_port``; the port is reusable right after a restart;
- a malformed, partial, oversized or foreign message is answered ``error`` and changes nothing, instead of
  stopping PaddleSlim's server thread;
- nothing that came over a socket is evaluated (PaddleSlim's client ``eval``s ``current_info``);
- a client whose controller is gone waits and retries with backoff (``controller_wait`` seconds, one log line per
  outage), then raises ``ControllerGone`` instead of PaddleSlim's ``os._exit(0)``, so the search can leave its
  history and report in order; a port where something else answers is a one-line error at once;
- the state that matters survives a kill of the host: rewards, sampled tokens (skips included) and the candidates
  in flight with their client are written atomically (write, fsync, rename) as they change, before the reply; a
  request the controller could not write down is not answered, so the client sends it again;
- a client asking for tokens trains nothing: a candidate it still holds was lost with its previous process; it is
  released and handed out again (first, to the next client asking), so the rewards always add up to
  ``search_steps`` and no candidate is counted twice; the host can release the candidates of clients it knows
  are dead (``release_clients``: a local worker that died, or every worker of a search resumed with -r);
- when every neighbour of the current tokens has been tried, sampling restarts from a random point instead of
  PaddleSlim's silent ``sys.exit()``;
- the annealing draws from a generator of its own (its proposals and PaddleSlim's acceptance draw), seeded from the
  config's ``seed`` and kept in the checkpoint, so ``-r`` continues the same stream; PaddleSlim draws from numpy's
  global generator, which the data pipeline used to reseed for every sample, so every step replayed one list of
  edits;
- a client holding candidates that stays silent longer than a lease (``client_lease``, see ClientLease) has its
  candidates handed out again, so a remote client that died costs the host minutes rather than ``max_client_wait``.
The wire protocol is PaddleSlim's: ``next_tokens``, ``current_info``, ``key<TAB>tokens<TAB>reward<TAB>iter<TAB>client``.
"""
import ast
import errno
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
from threading import Thread

import numpy as np
from paddleslim.common import ControllerServer, SAController

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.files import SaveError, atomic_write, check_resume_dir, line_of
from ppdet.slim.nas.strategies import StrategyError
from ppdet.slim.nas.tokens import Tokens
from ppdet.slim.nas.vocabulary import CHECKPOINT_NAME, Settings, of_type

__all__ = ['SearchController', 'ControllerGone', 'resolve_server_ip', 'DEFAULT_CONTROLLER_WAIT',
           'lease_seconds']

logger = logging.getLogger(__name__)
SA_LOGGER = logging.getLogger('paddleslim.common.sa_controller')  # PaddleSlim's "Controller - iter" lines
LOOPBACK = '127.0.0.1'
MAX_MESSAGE = 65536
DEFAULT_CONTROLLER_WAIT = Settings.controller_wait  # seconds a client waits for a silent controller
FIRST_RETRY = 0.5  # seconds; until the controller first answers, it is polled at this pace (a host may live seconds)
MAX_BACKOFF = 5.0  # seconds between attempts at most, after it stopped answering
# The controller's generator has a spawn key of its own, so that no seed of the reader's (which uses 1) gives it the
# stream of a sample or of an epoch's shuffle.
CONTROLLER_STREAM = 2
LEASE_FLOOR = 600.0  # seconds: the shortest default lease, also before any training finished
LEASE_TRAININGS = 3  # the default lease is this many times the longest training so far
RUNTIME = ('_checkpoints', '_constrain_func', '_rng', '_lease')  # attributes not written to the checkpoint as such


class ControllerGone(StrategyError):
    """The controller server cannot be reached (it finished, or was stopped)."""


def resolve_server_ip(server_ip):
    """``""`` or None means loopback: a search is reachable from the network only when the user says so."""
    return server_ip or LOOPBACK


def _pcg64_state(state):
    """Whether ``state`` is a PCG64 state as the checkpoint writes it (numpy's setter accepts more, and bends it)."""
    def word(value, bits):
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** bits

    inner = state.get('state') if isinstance(state, dict) else None
    return (isinstance(inner, dict) and state.get('bit_generator') == 'PCG64' and word(inner.get('state'), 128) and
            word(inner.get('inc'), 128) and state.get('has_uint32') in (0, 1) and word(state.get('uinteger'), 32))


def _generator(seed, state=None):
    """The controller's own generator: a new stream of ``seed``, or the checkpoint's ``state`` continued."""
    if state is None:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(CONTROLLER_STREAM,))))
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


class ClientLease:
    """How long a client holding candidates may stay silent before they are handed out again.

    A client speaks with every request that names it (asking for tokens, sending a reward) and, through the
    candidate it holds, with a skip. While it trains it says nothing, so the lease must outlast a training:
    ``client_lease`` seconds when the config sets it; else 3x the longest training seen so far (hand-out to reward,
    on any client; kept in the checkpoint), and at least 600 s, also before any training finished. So a machine a
    little slower than the fastest is not taken for dead, and a remote client that died costs the host minutes
    rather than ``max_client_wait``. A client mistaken for dead (trainings over 10 minutes, the first of them still
    running, and another client asking for tokens: set ``client_lease`` above a training's time there) costs a
    training, never a count: its reward and the other's count once. The host's own client is never released by
    lease, and clients restored in flight by -r get a whole lease from the restart.
    """

    def __init__(self, seconds=None, longest=0.0, host=None):
        self.seconds, self.longest, self.host = seconds, float(longest), host
        self._since = time.monotonic()
        self._heard = {}  # client -> when it last spoke
        self._handed = {}  # token text -> when it was handed out

    def length(self):
        return self.seconds if self.seconds is not None else max(LEASE_FLOOR, LEASE_TRAININGS * self.longest)

    def describe(self):
        if self.seconds is not None:
            return 'client_lease {:g}s'.format(self.seconds)
        return '{:.0f}s: {}x the longest training so far, at least {:.0f}s; client_lease sets it'.format(
            self.length(), LEASE_TRAININGS, LEASE_FLOOR)

    def heard(self, client):
        self._heard[client] = time.monotonic()

    def handed_out(self, text, client):
        self._handed[text] = time.monotonic()
        self.heard(client)

    def landed(self, text, rewarded):
        """Candidate ``text`` is out of flight; if ``rewarded``, the time since it was handed out was a training."""
        started = self._handed.pop(text, None)
        if rewarded and started is not None:
            self.longest = max(self.longest, time.monotonic() - started)

    def silent(self, in_flight):
        """{client: seconds since it spoke} for the clients holding candidates of ``in_flight`` past the lease."""
        now, limit = time.monotonic(), self.length()
        silence = {c: now - self._heard.get(c, self._since) for c in set(in_flight.values()) - {self.host}}
        return {c: seconds for c, seconds in sorted(silence.items()) if seconds > limit}


class AnnealingController(SAController):
    """SAController with atomic checkpoints of everything a restarted host needs, candidates in flight and the
    generator's state included, a random restart when the neighbourhood is exhausted, and a generator of its own
    (``seed``, or ``rng_state`` from a checkpoint) for every draw. PaddleSlim's state, temperature schedule and
    acceptance rule are kept; the four methods it overrides each say why in their first line."""

    def __init__(self, *args, in_flight=None, to_tell=None, lost=None, seed=0, rng_state=None, lease=None,
                 **kwargs):
        # overrides PaddleSlim's: adds what a restarted host needs (candidates in flight, clients, the generator)
        super().__init__(*args, **kwargs)
        self._in_flight = dict(in_flight or {})  # token text -> the client training it
        self._to_tell = dict(to_tell or {})  # clients that asked for tokens and were not yet told 'done' -> 1
        self._lost = [list(t) for t in lost or []]  # released candidates, handed out again before new ones
        self._rng = _generator(seed, rng_state)
        self._lease = lease or ClientLease()

    @property
    def lease(self):
        return self._lease

    @property
    def rng_state(self):
        """The generator's state (JSON-able): a controller built with it proposes what this one would next."""
        return self._rng.bit_generator.state

    def _save_checkpoint(self, output_dir):
        # overrides PaddleSlim's: written atomically (a kill mid-write left a truncated file), with the generator
        scene = {k: v for k, v in self.__dict__.items() if k not in RUNTIME}
        scene.update(_rng=self.rng_state, _longest_training=self._lease.longest)
        atomic_write(os.path.join(output_dir, CHECKPOINT_NAME), json.dumps(scene, indent=1))  # a line per entry

    def _persist(self):
        if self._checkpoints is not None:
            self._save_checkpoint(self._checkpoints)

    @property
    def in_flight(self):
        return self._in_flight

    @property
    def lost(self):
        return self._lost

    def release(self, client, why='asks again'):
        """A candidate ``client`` still holds was lost with its process (killed, restarted with -r): it is no
        longer in flight (before the search is judged complete, else the host would wait for it forever) and
        is queued to be handed out again, so the sampled candidate is still trained, once."""
        lost = [text for text, owner in self._in_flight.items() if owner == client]
        for text in lost:  # its hand-out time stays: a late reward still measures a training
            del self._in_flight[text]
            self._lost.append(list(Tokens.parse(text)))
        if lost:
            logger.info('controller: client %s %s, so %s was lost with its process; it will be handed out again',
                        client, why, ' and '.join(lost))
            self._persist()

    def forget(self, clients, why='is not running'):
        """``clients`` are taken for dead (no process holds their history, or silent past the lease): release their
        candidates and do not wait to tell them the search is done (one that comes back asks again and is told then)."""
        for client in clients:
            self.release(client, why)
            if self._to_tell.pop(client, None) is not None:
                self._persist()

    def heard(self, client):
        """``client`` sent a request: it is alive, its lease starts again."""
        self._lease.heard(client)

    def heard_about(self, tokens):
        """A request about ``tokens`` (a skip, which names no client) comes from the client holding them."""
        owner = self._in_flight.get(Tokens(tokens).wire)
        if owner is not None:
            self.heard(owner)

    def release_silent(self):
        """Hand out again the candidates of clients silent longer than the lease (a remote client that died)."""
        for client, seconds in self._lease.silent(self._in_flight).items():
            self.forget([client], 'has been silent for {:.0f}s, longer than the lease ({})'.format(
                seconds, self._lease.describe()))

    def hand_out(self, client):
        """Tokens for ``client`` (a lost candidate first, else new ones), in flight until rewarded or skipped,
        written down before they are sent."""
        tokens = self._lost.pop(0) if self._lost else self.next_tokens()
        self._in_flight[Tokens(tokens).wire] = client
        self._lease.handed_out(Tokens(tokens).wire, client)
        self._to_tell[client] = 1
        self._persist()
        return tokens

    def told_done(self, client):
        """``client`` heard the search is complete: the host need not wait for it any more."""
        if self._to_tell.pop(client, None) is not None:
            self._persist()

    def clients_to_tell(self):
        return sorted(self._to_tell)

    def take_back(self, tokens):
        """A client priced the candidate out: it is not in flight any more (and stays sampled)."""
        self._in_flight.pop(Tokens(tokens).wire, None)
        self._lease.landed(Tokens(tokens).wire, rewarded=False)
        self._drop_lost(tokens)
        self._persist()

    def _drop_lost(self, tokens):
        """A lost candidate whose reward (or skip) arrives after all (a resumed client re-sending its history)."""
        self._lost = [t for t in self._lost if t != list(tokens)]

    def record(self, tokens, reward):
        """Count a reward once (a client retrying after a crash must not count twice) and step the annealing.

        The iteration is the number of rewards from all clients: the temperature decays with the whole search's
        progress, which PaddleSlim approximates with client_num x the client's own iteration.
        """
        self._in_flight.pop(Tokens(tokens).wire, None)
        self._lease.landed(Tokens(tokens).wire, rewarded=True)
        self._drop_lost(tokens)
        if self._searched.get(str(tokens), -1) != -1:
            self._persist()
            return False
        self.update(tokens, reward, self._iter + 1, 1)  # saves the checkpoint
        return True

    def update(self, tokens, reward, iter, client_num=1):
        """Overrides PaddleSlim's: its acceptance draw reads numpy's global generator, which the data pipeline
        reseeded (every step replayed one list of edits). PaddleSlim 2.6's ``SAController.update`` with one change:
        the acceptance draw comes from the controller's own generator rather than numpy's global one. The arithmetic
        is PaddleSlim's (a draw only when the reward is not higher), and so is the log line, through its logger."""
        iter = int(iter)
        if iter > self._iter:
            self._iter = iter
        self._searched[str(tokens)] = reward
        temperature = self._init_temperature * self._reduce_rate ** (client_num * self._iter)
        if reward > self._reward or self._rng.random() <= math.exp((reward - self._reward) / temperature):
            self._reward = reward
            self._tokens = tokens
        if reward > self._max_reward:
            self._max_reward = reward
            self._best_tokens = tokens
        SA_LOGGER.info('Controller - iter: {}; best_reward: {}, best tokens: {}, current_reward: {}; current tokens: '
                       '{}'.format(self._iter, self._max_reward, self._best_tokens, reward, tokens))
        self._persist()

    def next_tokens(self, control_token=None):
        """Overrides PaddleSlim's: it draws from numpy's global generator, and calls ``sys.exit()`` when one
        neighbourhood is exhausted; here the controller's generator, and a restart from a random point."""
        base = control_token or self._tokens
        for _ in range(100):
            tokens = self._mutate_unsearched(base)
            if tokens is not None:
                self._current_tokens = tokens
                return tokens
            base = [int(self._rng.integers(lo, hi)) for lo, hi in zip(*self._range_table)]
        raise RuntimeError('the search space seems exhausted: no untried tokens found')

    def _mutate_unsearched(self, base, tries=2000):
        """A one-token mutation of ``base`` not sampled before (marked as sampled), or None."""
        low, high = self._range_table
        for _ in range(tries):
            tokens = list(base)
            index = int(self._rng.integers(len(low)))
            tokens[index] = int(self._rng.integers(low[index], high[index]))
            if str(tokens) not in self._searched:
                self._searched[str(tokens)] = -1
                return tokens
        return None


class SafeControllerServer(ControllerServer):
    """PaddleSlim's ControllerServer (its state and wire protocol) with a robust request loop (``start`` and ``run``
    override it, each saying why); the rest is what PaddleSlim has no word for: candidates in flight, clients to
    tell, releasing the dead."""

    def start(self, bind_wait=3.0):
        """Overrides PaddleSlim's (which binds once): listen, with SO_REUSEADDR; a port still held (by a killed
        search's process, in the moment it takes to end) is retried a while. (Data workers hold no copy of it:
        DataWorkerGuard closes their inherited listeners.)"""
        self._socket_server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket_server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.time() + bind_wait
        while True:
            try:
                self._socket_server.bind(self._address)
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.time() >= deadline:
                    self._socket_server.close()
                    raise
                time.sleep(0.5)
        self._socket_server.listen(self._max_client_num)  # data workers close their copy (DataWorkerGuard)
        self._ip, self._port = self._socket_server.getsockname()[:2]
        self.failure = None  # the SaveError that stopped the server
        self._lock = threading.Lock()  # requests and the host's own changes (release_clients) one at a time
        self._thread = Thread(target=self.run, daemon=True)
        self._thread.start()

    def finished(self):
        """No more candidates to hand out: the rewards so far and those in flight make ``search_steps``."""
        spent = self._controller._iter + len(self._controller.in_flight)
        return self._search_steps is not None and spent >= self._search_steps

    def in_flight(self):
        """Candidates handed out and neither rewarded nor reported skipped."""
        return len(self._controller.in_flight)

    def release_clients(self, clients, rewards=()):
        """Called from the host's own threads: ``clients`` are dead; the ``rewards`` (tokens, reward) their
        histories hold are counted (once), what else they had in flight goes back to be handed out."""
        with self._lock:
            for tokens, reward in rewards:
                self._controller.record(tokens, reward)
            self._controller.forget(clients)

    def release_silent(self):
        """Called from the host's own threads: candidates of clients silent past the lease go back to be handed out."""
        with self._lock:
            self._controller.release_silent()

    def clients_to_tell(self):
        """Clients that will ask again and should hear 'done' rather than find the server gone (kept across a
        restart of the host: a client between two candidates must not find the search ended without word)."""
        return len(self._controller.clients_to_tell())

    def run(self):
        """Overrides PaddleSlim's, whose thread ends on a malformed message and which reads one recv(1024): each
        request read whole, answered under the lock, written down before the reply."""
        while not self._closed:
            try:
                conn, addr = self._socket_server.accept()
            except OSError:
                break
            with conn:
                try:
                    message = _receive(conn)
                    with self._lock:
                        reply = self._answer(message)
                    conn.sendall(reply.encode())
                except SaveError as e:  # not answered: the client asks again, of a host restarted with -r
                    logger.error('controller stopped: %s', e)
                    self.failure = e
                    break
                except (OSError, UnicodeDecodeError) as e:
                    logger.warning('controller: dropped a request from %s: %s', addr, e)
        self._socket_server.close()

    def _answer(self, message):
        """The reply to one request; anything malformed gets 'error' and leaves the controller as it was."""
        message = message.strip('\n')
        if message.split('\t')[0] == 'next_tokens':
            client = message.partition('\t')[2]
            if not client:
                return 'error'
            self._controller.heard(client)
            self._controller.release(client)
            self._controller.release_silent()
            if self.finished():
                self._controller.told_done(client)
                return 'done'
            return Tokens(self._controller.hand_out(client)).wire
        if message == 'current_info':
            return repr({'best_tokens': self._controller.best_tokens, 'best_reward': self._controller.max_reward,
                         'current_tokens': self._controller.current_tokens, 'rewarded': self._controller._iter,
                         'annealing_tokens': self._controller._tokens})
        if message.startswith('skip\t'):
            tokens = self._parse_tokens(message.split('\t', 1)[1])
            if tokens is None:
                return 'error'
            self._controller.heard_about(tokens)
            self._controller.take_back(tokens)
            return 'ok'
        update = self._parse_update(message)
        if update is None:
            if message:  # an empty connection is close() waking the server up
                logger.warning('controller: ignored a malformed message (%d bytes)', len(message))
            return 'error'
        tokens, reward, _, client = update
        self._controller.heard(client)
        self._controller.record(tokens, reward)
        return 'ok'

    def _parse_tokens(self, text):
        """``2,1,3,...`` -> tokens inside the range table, or None."""
        low, high = self._controller._range_table
        tokens = _tokens(text)
        if tokens is None:
            return None
        in_range = len(tokens) == len(high) and all(lo <= t < hi for t, lo, hi in zip(tokens, low, high))
        return tokens if in_range else None

    def _parse_update(self, message):
        fields = message.split('\t')
        if len(fields) != 5 or fields[0] != self._key:
            return None
        tokens = self._parse_tokens(fields[1])
        try:
            reward, iteration = float(fields[2]), int(fields[3])
        except ValueError:
            return None
        if not (tokens is not None and math.isfinite(reward) and iteration >= 0 and fields[4]):
            return None
        return tokens, reward, iteration, fields[4]


def _receive(conn):
    """One request: everything until the peer stops sending (EOF or a short pause), at most MAX_MESSAGE bytes."""
    conn.settimeout(5.0)
    chunks, size = [], 0
    while size <= MAX_MESSAGE:
        try:
            chunk = conn.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        conn.settimeout(0.2)
    if size > MAX_MESSAGE:
        return ''
    return b''.join(chunks).decode()


class NotAController(ConfigError):
    """Something answers at server_ip:server_port, but not a controller of this search."""


class SafeControllerClient:
    """Talks to the controller server. A controller that is not up yet or stopped answering (its host crashed)
    is retried with backoff for ``wait_seconds``, one log line per outage; then ControllerGone. In place of
    PaddleSlim's ControllerClient, which ``eval``s the server's reply and calls ``os._exit(0)`` when it is gone."""

    def __init__(self, server_ip, server_port, key, client_name, wait_seconds=0):
        self.address = (server_ip, server_port)
        self.key, self.client_name, self.wait_seconds = key, client_name, wait_seconds
        self._reached = False  # until the first answer, an unreachable controller is 'not up yet'

    def _exchange(self, message):
        with socket.create_connection(self.address, timeout=30) as conn:
            conn.sendall(message.encode())
            conn.shutdown(socket.SHUT_WR)
            return _receive(conn)

    def _request(self, message, answered=bool, wait_seconds=None):
        """The reply to ``message``; a refused or reset connection, or one closed without an answer (a host
        killed mid-request, or one that could not write the request down), is tried again until the deadline."""
        wait_seconds = self.wait_seconds if wait_seconds is None else wait_seconds
        started, delay, told = time.time(), FIRST_RETRY, False
        while True:
            try:
                reply = self._exchange(message)
                problem = None if answered(reply) else 'the connection closed without an answer'
            except OSError as e:
                problem = e.strerror or str(e)
            waited = time.time() - started
            if problem is None:
                if told:
                    logger.info('controller at %s:%s answers%s (after %.0fs)', *self.address,
                                ' again' if self._reached else '', waited)
                self._reached = True
                return reply
            if waited >= wait_seconds:
                raise ControllerGone('controller at {}:{} is not reachable ({}; waited {:.0f}s, controller_wait '
                                     'is {}s)'.format(*self.address, problem, waited, wait_seconds))
            if not told:  # one line per outage
                told = True
                logger.warning('controller at %s:%s %s (%s); retrying for up to %ds', *self.address,
                               'stopped answering' if self._reached else 'is not up yet', problem, wait_seconds)
            time.sleep(min(delay, max(wait_seconds - waited, 0.05)))
            delay = min(delay * 2, MAX_BACKOFF) if self._reached else FIRST_RETRY

    def check_controller(self):
        """Fail at once, in one line, when what answers at the address is not a controller (not a hang)."""
        reply = self._request('current_info', answered=lambda reply: True)
        info = _literal(reply)
        if not (isinstance(info, dict) and 'best_tokens' in info):
            raise NotAController('server_ip {} server_port {}: something answers there, but not a BlazeFace-NAS '
                                 'controller (reply {!r}); set them to the host\'s server_ip and server_port'.format(
                                     *self.address, reply[:60]))

    def next_tokens(self):
        reply = self._request('next_tokens\t' + self.client_name)
        if reply == 'done':
            return None
        tokens = _tokens(reply)
        if tokens is None:
            raise ControllerGone('controller at {}:{} sent no tokens (the search has ended?)'.format(
                *self.address))
        return tokens

    def skip(self, tokens):
        return self._request('skip\t' + Tokens(tokens).wire) == 'ok'

    def update(self, tokens, reward, iteration):
        message = '\t'.join([self.key, Tokens(tokens).wire, repr(float(reward)), str(int(iteration)),
                             self.client_name])
        return self._request(message) == 'ok'

    def current_info(self, wait_seconds=None):
        """The server's best tokens and reward, parsed as a literal (never evaluated)."""
        return _literal(self._request('current_info', wait_seconds=wait_seconds))


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _tokens(text):
    """Tokens (a list) from any of their spellings, or None."""
    try:
        return list(Tokens.parse(text))
    except ValueError:
        return None


def _load_scene(load_dir, ranges):
    """The controller state saved in ``load_dir`` (None when a search there was killed before its first
    candidate); a truncated or hand-edited file is a one-line error naming its line, never a silent restart."""
    check_resume_dir(load_dir)
    path = os.path.join(load_dir, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        logger.warning('-r %s: no %s yet (killed before the first candidate); the controller starts afresh',
                       load_dir, CHECKPOINT_NAME)
        return None
    with open(path) as f:
        text = f.read()
    advice = 'restore the file from a copy, or start a new search without -r'
    try:
        scene = json.loads(text)
    except ValueError as e:
        raise ConfigError('{} line {}: not a valid checkpoint ({}; truncated or edited?); {}'.format(
            path, getattr(e, 'lineno', 1), getattr(e, 'msg', e), advice)) from None
    problem = _scene_problem(scene, ranges)
    if problem is not None:
        needle, what = problem
        raise ConfigError('{} line {}: {}; {}'.format(path, line_of(text, needle), what, advice))
    return scene


SCENE_KEYS = ('_tokens', '_reward', '_max_reward', '_iter', '_best_tokens', '_searched')


def _scene_problem(scene, ranges):
    """(text to find the line by, what is wrong) for the first inconsistency of a checkpoint, or None."""
    def bad_tokens(tokens):
        return not (isinstance(tokens, list) and len(tokens) == len(ranges) and
                    all(isinstance(t, int) and 0 <= t < r for t, r in zip(tokens, ranges)))

    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not isinstance(scene, dict):
        return '', 'not a controller checkpoint (a JSON object with {})'.format(', '.join(SCENE_KEYS))
    missing = [k for k in SCENE_KEYS if k not in scene]
    if missing:
        return '', 'no {} (not a controller checkpoint, or cut short)'.format(', '.join(missing))
    checks = [('_tokens', bad_tokens(scene['_tokens']), 'tokens within the range table {}'.format(ranges)),
              ('_reward', not number(scene['_reward']), 'a number'),
              ('_max_reward', not number(scene['_max_reward']), 'a number'),
              ('_iter', not (isinstance(scene['_iter'], int) and scene['_iter'] >= 0), 'a count >= 0'),
              ('_best_tokens', scene['_best_tokens'] is not None and bad_tokens(scene['_best_tokens']),
               'null or tokens within the range table'),
              ('_searched', not isinstance(scene['_searched'], dict), 'a mapping of tokens to rewards'),
              ('_in_flight', not isinstance(scene.get('_in_flight', {}), dict), 'a mapping of tokens to clients'),
              ('_to_tell', not isinstance(scene.get('_to_tell', {}), dict), 'a mapping of client names'),
              ('_lost', not (isinstance(scene.get('_lost', []), list) and not any(bad_tokens(t) for t in
                                                                                scene.get('_lost', []))),
               'a list of tokens within the range table')]
    checks += [('_rng', '_rng' in scene and not _pcg64_state(scene['_rng']),
                'the state of a PCG64 generator as the controller wrote it'),
               ('_longest_training', '_longest_training' in scene and not (
                   number(scene['_longest_training']) and scene['_longest_training'] >= 0), 'seconds >= 0')]
    for key, wrong, should in checks:
        if wrong:
            return '"{}"'.format(key), '{} is {!r}; it should be {}'.format(key, scene[key], should)
    for text, reward in scene['_searched'].items():
        if bad_tokens(_tokens(text)) or not number(reward):
            return json.dumps(text), '_searched entry {!r}: {!r} is not tokens and a reward'.format(text, reward)
    rewarded = sum(1 for r in scene['_searched'].values() if r != -1)
    if rewarded != scene['_iter']:
        return '"_iter"', '_iter is {} but {} candidates have rewards'.format(scene['_iter'], rewarded)
    for text, client in scene.get('_in_flight', {}).items():
        if bad_tokens(_tokens(text)) or not (isinstance(client, str) and client):
            return json.dumps(text), '_in_flight entry {!r}: {!r} is not tokens and a client'.format(text, client)
    return None


class SearchController:
    """Next tokens and rewards for one search client; the first client (``is_server``) also hosts the server."""

    def __init__(self, space_name, space, server_ip='', server_port=Settings.server_port, is_server=True,
                 init_temperature=None, reduce_rate=Settings.reduce_rate, search_steps=Settings.search_steps,
                 save_dir=Settings.save_dir, load_checkpoint=None, client_name=None,
                 controller_wait=DEFAULT_CONTROLLER_WAIT, client_lease=None, seed=Settings.seed):
        """``client_name`` should stay the same when a killed client is resumed (its history file's name), so
        the controller can release the candidate it lost; ``controller_wait``: seconds a client (not the host)
        waits for a controller that is not up or stopped answering; ``client_lease``: see ClientLease (None: the
        adaptive default); ``seed``: of the controller's generator in a new search (-r continues the saved one)."""
        self.server_ip = resolve_server_ip(server_ip)
        self.server_port = int(server_port)
        self.key = str([(space_name, None)])  # SANAS's key: clients of another space are ignored
        self.controller = None
        self.server = None
        name = client_name or hashlib.md5(os.urandom(16)).hexdigest()
        if is_server:
            self.controller = self._controller(space, init_temperature, reduce_rate, save_dir, load_checkpoint,
                                               _seed(seed), ClientLease(lease_seconds(client_lease), host=name))
            self.server = SafeControllerServer(self.controller, (self.server_ip, self.server_port), 100,
                                               search_steps, self.key)
            self._start_server()
        self.client = SafeControllerClient(self.server_ip, self.server_port, self.key, name,
                                           0 if is_server else _seconds('controller_wait', controller_wait))
        self.is_server = is_server

    @staticmethod
    def _controller(space, init_temperature, reduce_rate, save_dir, load_checkpoint, seed, lease):
        ranges = space.range_table()
        state = dict(init_tokens=space.init_tokens(), reward=-1, max_reward=-1, iters=0, best_tokens=None,
                     searched=None)
        scene = _load_scene(load_checkpoint, ranges) if load_checkpoint else None
        if scene is not None:
            state = dict(init_tokens=scene['_tokens'], reward=scene['_reward'], max_reward=scene['_max_reward'],
                         iters=scene['_iter'], best_tokens=scene['_best_tokens'], searched=scene['_searched'],
                         in_flight=scene.get('_in_flight'), to_tell=scene.get('_to_tell'), lost=scene.get('_lost'),
                         rng_state=scene.get('_rng'))
            lease.longest = scene.get('_longest_training', 0.0)
            _log_restored(load_checkpoint, scene, seed)
        return AnnealingController(([0] * len(ranges), ranges), reduce_rate, init_temperature, max_try_times=50000,
                                   checkpoints=save_dir, seed=seed, lease=lease, **state)

    def _start_server(self):
        try:
            self.server.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError('server_port {} on {} is already in use (another search?); set server_port to a '
                                  'free port'.format(self.server_port, self.server_ip)) from None
            raise ConfigError('cannot listen on {}:{} ({}); check server_ip and server_port'.format(
                self.server_ip, self.server_port, e.strerror)) from None

    def rewarded_so_far(self):
        """The whole search's reward count, asked of the controller by a client (None if it does not answer at
        once): so every worker's progress line counts the same steps."""
        if self.controller is not None:
            return self.controller._iter
        return self._info().get('rewarded')

    def _info(self):
        """The controller's current_info asked at once, {} if it does not answer (at the end it may be gone)."""
        try:
            info = self.client.current_info(wait_seconds=0)
        except ControllerGone:
            return {}
        return info if isinstance(info, dict) else {}

    def connect(self):
        """A client: wait for the controller (``controller_wait``) and make sure it is one; the host: nothing."""
        if not self.is_server:
            self.client.check_controller()

    def _call(self, request, *args):
        """A request to the controller; on the host, a controller stopped by a failed write raises that error."""
        try:
            return request(*args)
        except ControllerGone:
            if self.server is not None and self.server.failure is not None:
                raise self.server.failure from None
            raise

    def next_tokens(self):
        return self._call(self.client.next_tokens)

    def reward(self, tokens, score, iteration):
        return self._call(self.client.update, tokens, float(score), int(iteration))

    def skip(self, tokens):
        """Tell the controller a sampled candidate will not be trained (it stays sampled: never proposed again)."""
        return self._call(self.client.skip, tokens)

    def release_clients(self, clients, rewards=()):
        """On the host: ``clients`` are dead; ``rewards`` from their histories count, the rest of what they had in
        flight is handed out again."""
        if self.server is not None and clients:
            self.server.release_clients(clients, rewards)

    def wait_for_others(self, timeout, poll=1.0, goodbye_seconds=60):
        """On the host: serve on until candidates in flight elsewhere are rewarded (at most ``timeout`` s), then
        until the other clients have been told the search is done (at most ``goodbye_seconds``). False, at once,
        when a candidate in flight was lost (its client died, or was silent longer than the lease) and the search
        needs it trained after all: the host then asks for tokens again."""
        if self.server is None:
            return True
        self.controller.told_done(self.client.client_name)  # the host itself is done
        in_flight = 'candidate(s) in flight on other clients, each until rewarded or its client is silent for ' \
                    'longer than the lease ({})'.format(self.controller.lease.describe())
        for pending, limit, what in ((self.server.in_flight, timeout, in_flight),
                                     (self.server.clients_to_tell, goodbye_seconds, 'client(s) to finish')):
            deadline, logged_count, logged_at = time.time() + limit, None, 0.0
            while True:
                self.server.release_silent()  # a client silent past its lease: its candidate comes back here
                if not (self.server.finished() and pending() and time.time() < deadline):
                    break
                if self.server.failure is not None:
                    raise self.server.failure
                if pending() != logged_count or time.time() - logged_at >= 60:  # on change, else once a minute
                    logger.info('waiting for %d %s (at most %.0fs more)', pending(), what, deadline - time.time())
                    logged_count, logged_at = pending(), time.time()
                time.sleep(poll)
            if not self.server.finished():
                logger.info('a candidate in flight elsewhere was lost: the host trains it')
                return False
            if pending():
                logger.warning('stopped waiting for %d %s', pending(), what)
        return True

    def annealing_tokens(self):
        """The annealing's current tokens (those new candidates are mutations of), or None if not answered."""
        if self.controller is not None:
            return list(self.controller._tokens)
        return self._info().get('annealing_tokens')

    def rewards(self):
        """On the host: (tokens, reward) of every rewarded candidate of the search, whichever client trained it."""
        if self.controller is None:
            return []
        return [(_tokens(key), float(reward)) for key, reward in self.controller._searched.items() if reward != -1]

    def best(self):
        """(best tokens, best reward) read from the controller itself; PaddleSlim's client eval()s the reply."""
        if self.controller is not None:
            return self.controller.best_tokens, self.controller.max_reward
        info = self._info()
        return info.get('best_tokens'), info.get('best_reward')

    def close(self):
        if self.server is not None:
            self.server.close()
            _wake(self.server_ip, self.server_port)


def _log_restored(load_dir, scene, seed):
    in_flight = scene.get('_in_flight') or {}
    logger.info('controller restored from %s: %d rewarded, %d sampled in all, %d in flight%s', load_dir,
                scene['_iter'], len(scene['_searched']), len(in_flight),
                ' (on {})'.format(', '.join(sorted(set(in_flight.values())))) if in_flight else '')
    if '_rng' not in scene:
        logger.info('%s has no _rng (written before the controller had a generator of its own): its proposals go '
                    'on with a new stream of seed %d', os.path.join(load_dir, CHECKPOINT_NAME), seed)


def lease_seconds(value, where=''):
    """``client_lease`` checked: None (the adaptive default, see ClientLease) or seconds > 0, else one line."""
    if value is None:
        return None
    if not (of_type(value, float) and 0 < value < math.inf):
        raise ConfigError("{}client_lease is {!r}; it should be a number of seconds > 0, longer than a candidate's "
                          "training (or leave it out: {}x the longest training so far, at least {:.0f}s)".format(
                              where, value, LEASE_TRAININGS, LEASE_FLOOR))
    return float(value)


def _seed(value):
    """The controller's seed: a whole number >= 0 (what numpy's SeedSequence takes), or a one-line error."""
    if not (of_type(value, int) and value >= 0):
        raise ConfigError('seed is {!r}; it should be a whole number >= 0'.format(value))
    return value


def _seconds(key, value):
    """A number of seconds >= 0 from the config, or a one-line error naming the key."""
    if not (of_type(value, float) and value >= 0):
        raise ConfigError('{} is {!r}; it should be a number of seconds >= 0'.format(key, value))
    return value


def _wake(ip, port):
    """Unblock the server's accept() so its thread sees it is closed."""
    try:
        with socket.create_connection((ip, port), timeout=1):
            pass
    except OSError:
        pass
