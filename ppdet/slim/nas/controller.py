"""The search controller: PaddleSlim's simulated-annealing controller behind its socket server.

What SANAS (``paddleslim.nas.SANAS``) composes, composed here with the defaults a long search needs:
- ``server_ip: ""`` binds loopback, not the host's network address (the protocol has no authentication);
- a port in use is a one-line error naming ``server_port``; the port is reusable right after a restart;
- a malformed, partial, oversized or foreign message is answered ``error`` and changes nothing, instead of
  stopping PaddleSlim's server thread;
- nothing that came over a socket is evaluated (PaddleSlim's client ``eval``s ``current_info``);
- a client whose controller is gone raises ``ControllerGone`` instead of PaddleSlim's ``os._exit(0)``, so the
  search can leave its history and report in order;
- checkpoints are written atomically (write, fsync, rename), so a kill never leaves half a file;
- when every neighbour of the current tokens has been tried, sampling restarts from a random point instead of
  PaddleSlim's silent ``sys.exit()``.
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
import time
import weakref
from threading import Thread

import numpy as np
from paddleslim.common import ControllerServer, SAController

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.files import atomic_write

__all__ = ['SearchController', 'ControllerGone', 'CHECKPOINT_NAME', 'resolve_server_ip']

logger = logging.getLogger(__name__)
CHECKPOINT_NAME = 'sanas.checkpoints'
LOOPBACK = '127.0.0.1'
MAX_MESSAGE = 65536


class ControllerGone(RuntimeError):
    """The controller server cannot be reached (it finished, or was stopped)."""


def resolve_server_ip(server_ip):
    """``""`` or None means loopback: a search is reachable from the network only when the user says so."""
    return server_ip or LOOPBACK


class AnnealingController(SAController):
    """SAController with atomic checkpoints and a random restart when the neighbourhood is exhausted."""

    def _save_checkpoint(self, output_dir):
        scene = {k: v for k, v in self.__dict__.items() if k not in ('_checkpoints', '_constrain_func')}
        atomic_write(os.path.join(output_dir, CHECKPOINT_NAME), json.dumps(scene))

    def next_tokens(self, control_token=None):
        base = control_token or self._tokens
        for _ in range(100):
            tokens = self._mutate_unsearched(base)
            if tokens is not None:
                self._current_tokens = tokens
                return tokens
            base = [int(np.random.randint(lo, hi)) for lo, hi in zip(*self._range_table)]
        raise RuntimeError('the search space seems exhausted: no untried tokens found')

    def _mutate_unsearched(self, base, tries=2000):
        """A one-token mutation of ``base`` not sampled before (marked as sampled), or None."""
        low, high = self._range_table
        for _ in range(tries):
            tokens = list(base)
            index = int(np.random.randint(len(low)))
            tokens[index] = int(np.random.randint(low[index], high[index]))
            if str(tokens) not in self._searched:
                self._searched[str(tokens)] = -1
                return tokens
        return None


class SafeControllerServer(ControllerServer):
    """PaddleSlim's ControllerServer with a robust request loop (see the module docstring)."""

    def start(self, bind_wait=10.0):
        """Listen; a port still held (say, by the orphaned data workers of a killed search) is retried a while."""
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
        self._socket_server.listen(self._max_client_num)
        _close_in_forked_children(self._socket_server)
        self._ip, self._port = self._socket_server.getsockname()[:2]
        self._in_flight = set()
        self._not_told_done = set()  # clients that asked for tokens and have not yet been told the search is done
        self._thread = Thread(target=self.run, daemon=True)
        self._thread.start()

    def finished(self):
        """No more candidates to hand out: the rewards so far and those in flight make ``search_steps``."""
        spent = self._controller._iter + len(self._in_flight)
        return self._search_steps is not None and spent >= self._search_steps

    def in_flight(self):
        """Candidates handed out and neither rewarded nor reported skipped."""
        return len(self._in_flight)

    def clients_to_tell(self):
        """Clients that will ask again and should hear 'done' rather than find the server gone."""
        return len(self._not_told_done)

    def run(self):
        while not self._closed:
            try:
                conn, addr = self._socket_server.accept()
            except OSError:
                break
            with conn:
                try:
                    conn.sendall(self._answer(_receive(conn)).encode())
                except (OSError, UnicodeDecodeError) as e:
                    logger.warning('controller: dropped a request from %s: %s', addr, e)
        self._socket_server.close()

    def _answer(self, message):
        """The reply to one request; anything malformed gets 'error' and leaves the controller as it was."""
        message = message.strip('\n')
        if message.split('\t')[0] == 'next_tokens':
            client = message.partition('\t')[2]
            if self.finished():
                self._not_told_done.discard(client)
                return 'done'
            self._not_told_done.add(client)
            text = ','.join(str(t) for t in self._controller.next_tokens())
            self._in_flight.add(text)
            return text
        if message == 'current_info':
            return repr({'best_tokens': self._controller.best_tokens, 'best_reward': self._controller.max_reward,
                         'current_tokens': self._controller.current_tokens})
        if message.startswith('skip\t'):  # a client priced the candidate out: it is not in flight any more
            self._in_flight.discard(message.split('\t', 1)[1])
            return 'ok'
        update = self._parse_update(message)
        if update is None:
            if message:  # an empty connection is close() waking the server up
                logger.warning('controller: ignored a malformed message (%d bytes)', len(message))
            return 'error'
        tokens, reward, _, client = update
        self._client[client] = time.time()
        self._in_flight.discard(','.join(str(t) for t in tokens))
        record_reward(self._controller, tokens, reward)
        return 'ok'

    def _parse_update(self, message):
        fields = message.split('\t')
        if len(fields) != 5 or fields[0] != self._key:
            return None
        low, high = self._controller._range_table
        try:
            tokens = [int(t) for t in fields[1].split(',')]
            reward, iteration = float(fields[2]), int(fields[3])
        except ValueError:
            return None
        in_range = len(tokens) == len(high) and all(lo <= t < hi for t, lo, hi in zip(tokens, low, high))
        if not (in_range and math.isfinite(reward) and iteration >= 0 and fields[4]):
            return None
        return tokens, reward, iteration, fields[4]


def _close_in_forked_children(sock):
    """Data-loader workers are forked: without this they keep the controller's port open, even after a kill."""
    ref = weakref.ref(sock)

    def close():
        alive = ref()
        if alive is not None:
            alive.close()
    os.register_at_fork(after_in_child=close)


def record_reward(controller, tokens, reward):
    """Count a reward once (a client retrying after a crash must not count twice) and step the annealing.

    The iteration is the number of rewards from all clients: the temperature decays with the whole search's
    progress, which PaddleSlim approximates with client_num x the client's own iteration.
    """
    if controller._searched.get(str(tokens), -1) != -1:
        return False
    controller.update(tokens, reward, controller._iter + 1, 1)
    return True


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


class SafeControllerClient:
    """Talks to the controller server; raises ControllerGone instead of exiting the process."""

    def __init__(self, server_ip, server_port, key, client_name, wait_seconds=60):
        self.address = (server_ip, server_port)
        self.key, self.client_name, self.wait_seconds = key, client_name, wait_seconds
        self._told_waiting = False

    def _request(self, message, wait=False):
        deadline = time.time() + (self.wait_seconds if wait else 0)
        while True:
            try:
                with socket.create_connection(self.address, timeout=30) as conn:
                    conn.sendall(message.encode())
                    conn.shutdown(socket.SHUT_WR)
                    return _receive(conn)
            except OSError as e:
                if time.time() >= deadline:
                    raise ControllerGone('controller at {}:{} is not reachable ({})'.format(
                        *self.address, e.strerror or e)) from None
                if not self._told_waiting:
                    logger.info('controller at %s:%s is not up yet; retrying for %ds', *self.address,
                                self.wait_seconds)
                    self._told_waiting = True
                time.sleep(1)

    def next_tokens(self, wait=False):
        reply = self._request('next_tokens\t' + self.client_name, wait)
        if reply == 'done':
            return None
        try:
            return [int(t) for t in reply.split(',')]
        except ValueError:
            raise ControllerGone('controller at {}:{} sent no tokens (the search has ended?)'.format(
                *self.address)) from None

    def skip(self, tokens):
        return self._request('skip\t' + ','.join(str(t) for t in tokens)) == 'ok'

    def update(self, tokens, reward, iteration):
        message = '\t'.join([self.key, ','.join(map(str, tokens)), repr(float(reward)), str(int(iteration)),
                             self.client_name])
        return self._request(message) == 'ok'

    def current_info(self):
        """The server's best tokens and reward, parsed as a literal (never evaluated)."""
        try:
            return ast.literal_eval(self._request('current_info'))
        except (ValueError, SyntaxError):
            return None


def _load_scene(load_dir):
    """The controller state saved in ``load_dir``; None when a search there never got its first reward."""
    if not os.path.isdir(load_dir):
        raise ConfigError('-r {}: no such directory; resume from the save_dir of an earlier search'.format(load_dir))
    path = os.path.join(load_dir, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        logger.warning('-r %s: no %s yet (killed before the first reward); the controller starts afresh',
                       load_dir, CHECKPOINT_NAME)
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        raise ConfigError('{} is not a valid checkpoint (JSON); restore it or start a new search'.format(
            path)) from None


class SearchController:
    """Next tokens and rewards for one search client; the first client (``is_server``) also hosts the server."""

    def __init__(self, space_name, space, server_ip='', server_port=8999, is_server=True, init_temperature=None,
                 reduce_rate=0.85, search_steps=300, save_dir='nas_checkpoint', load_checkpoint=None):
        self.server_ip = resolve_server_ip(server_ip)
        self.server_port = int(server_port)
        self.key = str([(space_name, None)])  # SANAS's key: clients of another space are ignored
        self.controller = None
        self.server = None
        if is_server:
            self.controller = self._controller(space, init_temperature, reduce_rate, save_dir, load_checkpoint)
            self.server = SafeControllerServer(self.controller, (self.server_ip, self.server_port), 100,
                                               search_steps, self.key)
            self._start_server()
        name = hashlib.md5(os.urandom(16)).hexdigest()
        self.client = SafeControllerClient(self.server_ip, self.server_port, self.key, name)
        self.is_server = is_server

    @staticmethod
    def _controller(space, init_temperature, reduce_rate, save_dir, load_checkpoint):
        ranges = space.range_table()
        state = dict(init_tokens=space.init_tokens(), reward=-1, max_reward=-1, iters=0, best_tokens=None,
                     searched=None)
        scene = _load_scene(load_checkpoint) if load_checkpoint else None
        if scene is not None:
            state = dict(init_tokens=scene['_tokens'], reward=scene['_reward'], max_reward=scene['_max_reward'],
                         iters=scene['_iter'], best_tokens=scene['_best_tokens'], searched=scene['_searched'])
        return AnnealingController(([0] * len(ranges), ranges), reduce_rate, init_temperature, max_try_times=50000,
                                   checkpoints=save_dir, **state)

    def _start_server(self):
        try:
            self.server.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError('server_port {} on {} is already in use (another search?); set server_port to a '
                                  'free port'.format(self.server_port, self.server_ip)) from None
            raise ConfigError('cannot listen on {}:{} ({}); check server_ip and server_port'.format(
                self.server_ip, self.server_port, e.strerror)) from None

    @property
    def rewarded(self):
        """How many rewards the controller has taken (its iteration), when this process hosts it."""
        return self.controller._iter if self.controller is not None else None

    def next_tokens(self):
        return self.client.next_tokens(wait=not self.is_server)

    def reward(self, tokens, score, iteration):
        return self.client.update(tokens, float(score), int(iteration))

    def skip(self, tokens):
        """Tell the controller a sampled candidate will not be trained (it stays sampled: never proposed again)."""
        return self.client.skip(tokens)

    def wait_for_others(self, timeout, poll=1.0, goodbye_seconds=60):
        """On the host: serve on until candidates in flight elsewhere are rewarded (at most ``timeout`` s), then
        until the other clients have been told the search is done (at most ``goodbye_seconds``)."""
        if self.server is None:
            return
        self.server._not_told_done.discard(self.client.client_name)  # the host itself is done
        for pending, limit, what in ((self.server.in_flight, timeout, 'candidate(s) in flight on other clients'),
                                     (self.server.clients_to_tell, goodbye_seconds, 'client(s) to finish')):
            deadline = time.time() + limit
            while pending() and time.time() < deadline:
                logger.info('waiting for %d %s', pending(), what)
                time.sleep(poll)
            if pending():
                logger.warning('stopped waiting for %d %s', pending(), what)

    def best(self):
        """(best tokens, best reward) read from the controller itself; PaddleSlim's client eval()s the reply."""
        if self.controller is not None:
            return self.controller.best_tokens, self.controller.max_reward
        try:
            info = self.client.current_info()
        except ControllerGone:
            return None, None
        return (info['best_tokens'], info['best_reward']) if isinstance(info, dict) else (None, None)

    def close(self):
        if self.server is not None:
            self.server.close()
            _wake(self.server_ip, self.server_port)


def _wake(ip, port):
    """Unblock the server's accept() so its thread sees it is closed."""
    try:
        with socket.create_connection((ip, port), timeout=1):
            pass
    except OSError:
        pass
