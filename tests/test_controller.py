"""The controller server on a real loopback socket: safe defaults, robustness against bad input, and state that
survives a crash of the host."""
import json
import logging
import os
import socket
import threading
import time

import pytest

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.controller import (AnnealingController, ControllerGone, NotAController, SafeControllerClient,
                                       SearchController, resolve_server_ip)
from ppdet.slim.nas.files import SaveError
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
    """What the controller tells of itself: rewards, best, and every rewarded candidate."""
    return c.rewarded_so_far(), c.best(), c.annealing_tokens(), c.rewards()


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
    assert controller.rewarded_so_far() == 1 and controller.best() == (tokens, 0.5)


def test_reward_counts_once(controller):
    tokens = controller.next_tokens()
    assert controller.reward(tokens, 0.25, 1) and controller.reward(tokens, 0.9, 2)
    assert controller.rewarded_so_far() == 1 and controller.best() == (tokens, 0.25)


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


def _host(save_dir, port, load=None, steps=10):
    return SearchController('BlazeFaceNasSpace', BlazeFaceNasSpace(), '', port, True, None, 0.85, steps,
                            str(save_dir), load, client_name='host')


def test_host_restart_keeps_candidates_in_flight_and_counts_once(tmp_path):
    port = free_port()
    first = _host(tmp_path, port, steps=3)
    other = SafeControllerClient('127.0.0.1', port, first.key, 'client-a', wait_seconds=5)
    theirs = other.next_tokens()
    mine = first.next_tokens()
    assert first.reward(mine, 0.4, 1)
    first.close()  # the host "crashes": only what is on disk survives
    second = _host(tmp_path, port, load=str(tmp_path), steps=3)
    try:
        assert second.server.in_flight() == 1 and second.rewarded_so_far() == 1
        assert second.controller.in_flight == {','.join(map(str, theirs)): 'client-a'}
        assert other.update(theirs, 0.7, 1) and other.update(theirs, 0.9, 1)  # a late reward, then a retry
        assert second.rewarded_so_far() == 2 and second.best() == (theirs, 0.7)
        assert second.reward(mine, 0.1, 1) and second.rewarded_so_far() == 2  # the restarted host re-sends its own
        assert not second.server.finished()
        third = second.next_tokens()
        assert second.server.finished(), 'two rewards and one in flight make the 3 steps'
        assert other.next_tokens() is None
        assert second.reward(third, 0.2, 3) and second.rewarded_so_far() == 3
    finally:
        second.close()


def test_a_lost_candidate_is_handed_out_again_and_counted_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()
    host = _host(tmp_path, port, steps=2)
    try:
        client = SafeControllerClient('127.0.0.1', port, host.key, 'client-a')
        lost = client.next_tokens()
        again = client.next_tokens()  # the client was killed and resumed under its name
        assert again == lost and host.controller.in_flight == {','.join(map(str, lost)): 'client-a'}
        assert 'was lost with its process; it will be handed out again' in caplog.text
        assert client.update(again, 0.5, 1) and client.update(again, 0.5, 1)  # a retry does not count again
        assert host.rewarded_so_far() == 1 and host.controller.lost == []
        assert client.current_info()['rewarded'] == 1, 'every worker can count the steps of the whole search'
        assert client.next_tokens() != lost, 'a rewarded candidate is never handed out again'
    finally:
        host.close()


def test_candidates_of_dead_clients_survive_a_host_restart_and_go_to_the_next_client(tmp_path):
    port = free_port()
    first = _host(tmp_path, port, steps=2)
    dead = SafeControllerClient('127.0.0.1', port, first.key, 'client-a')
    lost = dead.next_tokens()
    first.release_clients(['client-a'])  # the host learns client-a is not running any more
    assert first.server.in_flight() == 0 and first.controller.clients_to_tell() == []
    first.close()
    second = _host(tmp_path, port, load=str(tmp_path), steps=2)
    try:
        assert second.controller.lost == [lost]
        assert second.next_tokens() == lost, 'the lost candidate first, to whichever client asks'
        assert second.controller.lost == [] and second.server.in_flight() == 1
        assert second.reward(lost, 0.3, 1) and second.rewarded_so_far() == 1
    finally:
        second.close()


def test_a_restarted_host_gets_back_the_step_its_lost_candidate_held(tmp_path):
    port = free_port()
    first = _host(tmp_path, port, steps=1)
    lost = first.next_tokens()
    first.close()  # killed while training the last candidate of the search
    second = _host(tmp_path, port, load=str(tmp_path), steps=1)
    try:
        again = second.next_tokens()
        assert again == lost, 'the search is not complete: its one step is handed out again'
        assert second.server.in_flight() == 1
    finally:
        second.close()


def test_client_waits_for_a_late_controller_and_logs_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()
    client = SafeControllerClient('127.0.0.1', port, str([('BlazeFaceNasSpace', None)]), 'c', wait_seconds=30)
    started = {}
    timer = threading.Timer(3.0, lambda: started.setdefault('host', _host(tmp_path, port)))
    timer.start()
    try:
        client.check_controller()
        assert len(client.next_tokens()) == 9
    finally:
        timer.join()
        started['host'].close()
    waits = [r for r in caplog.records if 'retrying for up to 30s' in r.getMessage()]
    assert len(waits) == 1 and 'is not up yet' in waits[0].getMessage()
    assert 'answers (after' in caplog.text


def test_client_gives_up_after_controller_wait(tmp_path):
    client = SafeControllerClient('127.0.0.1', free_port(), 'k', 'c', wait_seconds=1.5)
    with pytest.raises(ControllerGone, match='waited 2s, controller_wait is 1.5s'):
        client.next_tokens()


@pytest.mark.parametrize('answer', [b'HTTP/1.0 400 Bad Request\r\n\r\n', None])
def test_something_else_on_the_port_is_one_clear_error(answer):
    with socket.socket() as other:
        other.bind(('127.0.0.1', 0))
        other.listen(1)
        port = other.getsockname()[1]

        def serve():
            conn, _ = other.accept()
            with conn:
                conn.recv(1024)
                if answer is None:
                    time.sleep(8)  # a service that never answers
                else:
                    conn.sendall(answer)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with pytest.raises(NotAController, match='server_port {}: something answers there, but not'.format(port)):
            SafeControllerClient('127.0.0.1', port, 'k', 'c', wait_seconds=60).check_controller()
        if answer is None:
            assert thread.is_alive(), 'the client gave up on the silent service before it hung up, not after'


def _checkpoint(tmp_path):
    host = _host(tmp_path, free_port())
    tokens = host.next_tokens()
    host.reward(tokens, 0.5, 1)
    host.next_tokens()
    host.close()
    return tmp_path / 'sanas.checkpoints'


def test_truncated_checkpoint_names_file_and_line(tmp_path):
    path = _checkpoint(tmp_path)
    text = path.read_text()
    path.write_text(text[:len(text) // 2])
    with pytest.raises(ConfigError, match=r'sanas.checkpoints line \d+: not a valid checkpoint'):
        _host(tmp_path, free_port(), load=str(tmp_path))


@pytest.mark.parametrize('edit, message, on_line', [
    (lambda s: s.update(_iter=7), '_iter is 7 but 1 candidates have rewards', '"_iter"'),
    (lambda s: s['_searched'].update({'[1, 2]': 0.3}), "_searched entry '[1, 2]'", '"[1, 2]"'),
    (lambda s: s.update(_in_flight={'2,1,3,8,2,1,2,1,1': ''}), '_in_flight entry', '"2,1,3,8,2,1,2,1,1"'),
    (lambda s: s.update(_tokens='2 1 3'), '_tokens is', '"_tokens"'),
    (lambda s: s['_rng']['state'].update(inc=-1), '_rng is', '"_rng"'),
    (lambda s: s.update(_longest_training='long'), '_longest_training is', '"_longest_training"'),
    (lambda s: s.pop('_searched'), 'no _searched', None)])
def test_hand_edited_checkpoint_names_file_and_line(tmp_path, edit, message, on_line):
    path = _checkpoint(tmp_path)
    scene = json.loads(path.read_text())
    edit(scene)
    text = json.dumps(scene, indent=1)
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        _host(tmp_path, free_port(), load=str(tmp_path))
    where, line = str(error.value).split(': ', 1)[0].rsplit(' line ', 1)
    assert where == str(path) and message in str(error.value)
    if on_line is not None:
        assert on_line in text.splitlines()[int(line) - 1]


def test_a_checkpoint_that_cannot_be_written_stops_the_host_and_keeps_the_old_file(tmp_path):
    host = _host(tmp_path, free_port())
    try:
        tokens = host.next_tokens()
        path = tmp_path / 'sanas.checkpoints'
        before = path.read_text()
        os.symlink('/dev/full', '{}.tmp.{}'.format(path, os.getpid()))  # the next write finds the disk full
        with pytest.raises(SaveError, match='cannot write {} .No space left on device'.format(path)):
            host.reward(tokens, 0.5, 1)
        assert path.read_text() == before
        assert not [n for n in os.listdir(str(tmp_path)) if '.tmp' in n], 'the partial file is removed'
    finally:
        host.close()


# ---- the lease of a silent client (issue 22) ----

def _leased_host(save_dir, port, steps, lease=1.5):
    return SearchController('BlazeFaceNasSpace', BlazeFaceNasSpace(), '', port, True, None, 0.85, steps,
                            str(save_dir), client_name='host', client_lease=lease)


def test_a_silent_clients_candidates_go_to_others_and_late_rewards_count_once(tmp_path, caplog):
    """Two clients take a candidate each and fall silent past a short lease; the host, training its own, is not
    released. A late reward of a released candidate not yet handed out again counts and leaves the queue; one
    handed out again counts once whichever of its two trainers reports first. The count of rewards stays exact."""
    caplog.set_level(logging.INFO)
    port = free_port()
    host = _leased_host(tmp_path, port, steps=4)
    try:
        a, c, b = (SafeControllerClient('127.0.0.1', port, host.key, name) for name in ('a', 'c', 'b'))
        mine, x, z = host.next_tokens(), a.next_tokens(), c.next_tokens()
        time.sleep(2.0)  # longer than the lease; no one speaks
        host.server.release_silent()  # what the host's wait does
        assert host.controller.lost == [x, z] and host.controller.in_flight == {','.join(map(str, mine)): 'host'}
        assert 'client a has been silent for 2s, longer than the lease (client_lease 1.5s), so' in caplog.text
        assert a.update(x, 0.4, 1) and host.rewarded_so_far() == 1 and host.controller.lost == [z]  # late, counted
        assert b.next_tokens() == z, 'handed out again to another client'
        assert c.update(z, 0.3, 1) and b.update(z, 0.35, 1) and host.rewarded_so_far() == 2  # its first report counts
        assert host.reward(mine, 0.2, 1) and host.rewarded_so_far() == 3 and host.server.in_flight() == 0
        last = host.next_tokens()
        assert last not in (mine, x, z) and b.next_tokens() is None, 'three rewards and one in flight make 4'
        assert host.reward(last, 0.1, 2) and host.rewarded_so_far() == 4
        assert host.best() == (x, 0.4) and host.controller.lost == []
    finally:
        host.close()


CLIENT = """
import sys, time
from ppdet.slim.nas.controller import SafeControllerClient
tokens = SafeControllerClient('127.0.0.1', int(sys.argv[1]), sys.argv[2], 'remote').next_tokens()
print(','.join(map(str, tokens)), flush=True)
time.sleep(600)
"""


def test_the_host_trains_what_a_killed_remote_client_held_instead_of_waiting(tmp_path):
    """A real client process takes a candidate and is killed with SIGKILL: once it has been silent past the lease
    the host's wait ends (a day's max_client_wait is not waited), the host trains the candidate itself, and a
    reward sent late under the dead client's name does not count again."""
    import signal
    import subprocess
    import sys
    from conftest import REPO
    port = free_port()
    host = _leased_host(tmp_path, port, steps=2)
    remote = subprocess.Popen([sys.executable, '-c', CLIENT, str(port), host.key], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        theirs = [int(t) for t in remote.stdout.readline().split(',')]
        os.kill(remote.pid, signal.SIGKILL)
        remote.wait()
        mine = host.next_tokens()
        assert host.reward(mine, 0.3, 1) and host.next_tokens() is None, 'the dead client holds the last step'
        assert host.wait_for_others(86400, poll=0.2) is False
        assert host.next_tokens() == theirs and host.reward(theirs, 0.5, 2) and host.rewarded_so_far() == 2
        late = SafeControllerClient('127.0.0.1', port, host.key, 'remote')
        assert late.update(theirs, 0.9, 1) and host.rewarded_so_far() == 2 and host.best() == (theirs, 0.5)
        assert host.wait_for_others(86400, poll=0.2, goodbye_seconds=30) is True
    finally:
        remote.kill()
        remote.wait()
        host.close()


def test_the_default_lease_follows_the_longest_training_and_survives_a_restart(tmp_path):
    """Without client_lease: 600 s before any training, then 3x the longest hand-out-to-reward time, at least
    600 s; the longest training is kept in the checkpoint."""
    from ppdet.slim.nas.controller import ClientLease
    assert ClientLease().length() == 600 and ClientLease(longest=150).length() == 600
    assert ClientLease(longest=400).length() == 1200 and ClientLease(seconds=5, longest=400).length() == 5
    port = free_port()
    host = _host(tmp_path, port)
    tokens = host.next_tokens()
    time.sleep(0.2)
    host.reward(tokens, 0.3, 1)
    host.close()
    saved = json.loads((tmp_path / 'sanas.checkpoints').read_text())['_longest_training']
    assert saved >= 0.2
    again = _host(tmp_path, free_port(), load=str(tmp_path))
    try:
        assert again.controller.lease.longest == saved
    finally:
        again.close()


@pytest.mark.parametrize('key, value, message', [
    ('client_lease', 0, 'client_lease is 0; it should be a number of seconds > 0'),
    ('client_lease', '1h', "client_lease is '1h'"), ('client_lease', True, 'client_lease is True'),
    ('seed', -1, 'seed is -1; it should be a whole number >= 0')])
def test_a_bad_lease_or_seed_is_one_clear_error(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        SearchController('BlazeFaceNasSpace', BlazeFaceNasSpace(), '', free_port(), True, None, 0.85, 10,
                         str(tmp_path), **{key: value})


def test_a_bad_client_lease_in_the_config_is_one_line_naming_the_file(tmp_path):
    from ppdet.slim.nas.config import load_search_config
    from search_fixtures import tiny_config
    config = tiny_config(tmp_path, str(tmp_path / 'wider'), client_lease=-5)
    with pytest.raises(ConfigError, match=r'tiny.yml: client_lease is -5; it should be a number of seconds > 0'):
        load_search_config(config)
    assert load_search_config(tiny_config(tmp_path, str(tmp_path / 'wider'), client_lease=900)).cfg['client_lease'] \
        == 900
