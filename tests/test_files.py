"""The search's files: atomic writes that fail cleanly, histories checked when read, a client's history resumed
by one process at a time under its old name."""
import contextlib
import os
import subprocess
import sys
import textwrap

import pytest

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.files import HISTORY_FIELDS, History, SaveError, atomic_write, claim_history, dead_histories
from search_fixtures import REPO

ROW = {'step': 1, 'tokens': [2, 1, 3, 8, 2, 1, 2, 1, 0], 'status': 'trained', 'flops': 1e6, 'params': 100,
       'ap': 0.25, 'train_seconds': 3.0, 'client': 'host'}


def test_a_write_that_fails_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / 'f.txt'
    atomic_write(str(path), 'old')
    os.symlink('/dev/full', '{}.tmp.{}'.format(path, os.getpid()))
    with pytest.raises(SaveError, match='cannot write {} .No space left on device.; the files written before '
                                        'are intact'.format(path)):
        atomic_write(str(path), 'new')
    assert path.read_text() == 'old' and os.listdir(str(tmp_path)) == ['f.txt']


def _history(tmp_path, rows=3):
    history = History(str(tmp_path / 'search_history.csv'))
    for step in range(1, rows + 1):
        history.append(dict(ROW, step=step))
    return history.path


@pytest.mark.parametrize('edit, line, message', [
    (lambda lines: lines[:-1] + [lines[-1][:12]], 4, 'expected 9 fields'),
    (lambda lines: lines[:2] + [lines[2].replace('trained', 'traned')] + lines[3:], 3, "status 'traned'"),
    (lambda lines: lines[:1] + [lines[1].replace('2 1 3', '2 x 3')] + lines[2:], 2, 'not a number'),
    (lambda lines: [lines[0].replace('tokens', 'token')] + lines[1:], 1, 'the header is'),
    (lambda lines: lines + ['9,1 2,trained,1,1,,0.5,1,host,extra'], 5, 'expected 9 fields')])
def test_a_broken_history_is_one_error_naming_file_and_line(tmp_path, edit, line, message):
    path = _history(tmp_path)
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, 'w') as f:
        f.write('\n'.join(edit(lines)) + '\n')
    with pytest.raises(ConfigError, match='{} line {}: .*{}'.format(path, line, message)):
        History(path)


def test_history_round_trip(tmp_path):
    rows = History(_history(tmp_path)).rows
    assert len(rows) == 3 and list(rows[0]) == HISTORY_FIELDS and rows[2]['ap'] == '0.25'


HOLDER = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {repo!r})
    from ppdet.slim.nas.files import claim_history
    print(claim_history({save_dir!r}, False, True).owner, flush=True)
    time.sleep(60)
''')


@contextlib.contextmanager
def _live_client(save_dir):
    """A client process that claims a history in ``save_dir`` and holds its lock; yields the client's name."""
    holder = subprocess.Popen([sys.executable, '-c', HOLDER.format(repo=REPO, save_dir=save_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        yield holder.stdout.readline().strip()
    finally:
        holder.kill()
        holder.wait()


def test_a_resumed_client_takes_over_a_dead_clients_history_only(tmp_path):
    save_dir = str(tmp_path / 'out')
    with _live_client(save_dir) as alive:
        History(os.path.join(save_dir, 'search_history_{}.csv'.format(alive))).append(ROW)
        mine = claim_history(save_dir, False, True)
        assert mine.owner != alive and mine.rows == [], 'a live client keeps its history'
    os.unlink(mine.path + '.lock')  # this process claimed once already; a real client claims once per process
    adopted = claim_history(save_dir, False, True)
    assert adopted.owner == alive and len(adopted.rows) == 1, 'a dead client\'s history is resumed under its name'
    assert claim_history(save_dir, False, False).owner != alive, 'without -r: a history of its own'


def test_dead_histories_are_those_no_live_process_holds(tmp_path):
    save_dir = str(tmp_path / 'out')
    with _live_client(save_dir) as alive:
        dead = History(os.path.join(save_dir, 'search_history_vm_1.csv'))
        dead.append(ROW)
        open(dead.path + '.lock', 'w').close()  # its process is gone: nobody holds the lock
        mine = claim_history(save_dir, False, False)  # this process's own: never reported, never unlocked
        found = dead_histories(save_dir)
        assert [h.owner for h in found] == ['vm_1'] and len(found[0].rows) == 1
        assert alive not in [h.owner for h in found] and mine.owner not in [h.owner for h in found]
        assert claim_history(save_dir, False, True).owner == 'vm_1', 'the dead one can still be taken over'
