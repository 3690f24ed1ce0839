"""The controller server on a real loopback socket: safe defaults and robustness against bad input."""
import os
import socket
import threading

import pytest

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.controller import (AnnealingController, SafeControllerClient, SearchController,
                                       resolve_server_ip)
from search_fixtures import free_port
from search_space import BlazeFaceNasSpace


@pytest.fixture
def controller(tmp_path):
    c = SearchController('BlazeFaceNasSpace', BlazeFaceNasSpace(), '', free_port(), True, None, 0.85, 10,
                         str(tmp_path))
    yield c
    c.close()


def _send(port, payload, shutdown=True):
    with socket.create_connection(('127.0.0.1', port), timeout=10) as conn:
        conn.sendall(payload)
        if shutdown:
            conn.shutdown(socket.SHUT_WR)
        return conn.recv(4096)


def _state(c):
    scene = c.controller
    return scene._iter, scene._max_reward, scene._best_tokens, dict(scene._searched)


def test_empty_server_ip_means_loopback(controller):
    assert resolve_server_ip('') == '127.0.0.1' and resolve_server_ip(None) == '127.0.0.1'
    assert controller.server.ip() == '127.0.0.1'


def test_garbage_does_not_crash_or_change_state(controller):
    port = controller.server_port
    key = controller.key
    before = _state(controller)
    bad = [b'\xff\xfe\x00garbage', b'hello', (key + '\t2,1,3').encode(), b'x' * 200000,
           (key + '\t2,1,3,8,2,1,2,1,1\tnan\t1\tc').encode(), (key + '\t2,1,3,8,2,1,2,1,9\t0.5\t1\tc').encode(),
           ('wrongkey\t2,1,3,8,2,1,2,1,1\t0.5\t1\tc').encode(), (key + '\t2,1,3,8,2,1,2,1,1\t0.5\tx\tc').encode(),
           b'current_info\x00\x00', b'']
    for payload in bad:
        try:
            reply = _send(port, payload)
        except OSError:
            reply = b''
        assert reply in (b'error', b''), (payload[:40], reply)
    _send(port, (key + '\t2,1').encode(), shutdown=False)  # a half message from a peer that stays silent
    assert _state(controller) == before
    tokens = controller.next_tokens()
    assert len(tokens) == 9
    assert controller.reward(tokens, 0.5, 1) is True
    assert controller.controller._iter == 1 and controller.best() == (tokens, 0.5)


def test_reward_counts_once(controller):
    tokens = controller.next_tokens()
    assert controller.reward(tokens, 0.25, 1) and controller.reward(tokens, 0.9, 2)
    assert controller.controller._iter == 1 and controller.best() == (tokens, 0.25)


def test_client_never_evaluates_what_it_receives(tmp_path):
    marker = tmp_path / 'pwned'
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer():
            conn, _ = server.accept()
            conn.recv(1024)
            conn.sendall("__import__('os').system('touch {}')".format(marker).encode())
            conn.close()
        thread = threading.Thread(target=answer)
        thread.start()
        assert SafeControllerClient('127.0.0.1', port, 'k', 'c').current_info() is None
        thread.join()
    assert not marker.exists()


def test_port_in_use_is_one_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match='server_port {}'.format(port)):
            SearchController('BlazeFaceNasSpace', BlazeFaceNasSpace(), '', port, True, None, 0.85, 10, str(tmp_path))


def test_exhausted_neighbourhood_restarts_instead_of_exiting():
    controller = AnnealingController(([0, 0], [2, 2]), 0.85, 1.0, init_tokens=[0, 0])
    seen = {str(controller.next_tokens()) for _ in range(4)}  # [1, 1] is two mutations away from [0, 0]
    assert seen == {'[0, 0]', '[0, 1]', '[1, 0]', '[1, 1]'}
    with pytest.raises(RuntimeError, match='exhausted'):
        controller.next_tokens()


def test_checkpoint_is_atomic_json(controller, tmp_path):
    tokens = controller.next_tokens()
    controller.reward(tokens, 0.3, 1)
    names = os.listdir(str(tmp_path))
    assert 'sanas.checkpoints' in names and not [n for n in names if '.tmp' in n]
