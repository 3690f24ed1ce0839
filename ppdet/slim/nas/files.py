"""Crash-safe files: what a search has learned must survive a kill at any moment, a full disk, or a hand edit."""
import csv
import glob
import io
import os
import socket

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks; a resumed client then always starts a history of its own
    fcntl = None

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.tokens import Tokens
from ppdet.slim.nas.vocabulary import HISTORY_NAME, HISTORY_STATUSES, REWARDED

__all__ = ['atomic_save', 'atomic_write', 'write_csv', 'History', 'HISTORY_FIELDS', 'SaveError', 'claim_history',
           'dead_histories', 'line_of', 'row_tokens', 'check_resume_dir']

HISTORY_FIELDS = ['step', 'tokens', 'status', 'flops', 'params', 'latency_us', 'ap', 'train_seconds', 'client']
HOST_CLIENT = 'host'


class SaveError(RuntimeError):
    """A file of the search could not be written (disk full, save_dir not writable); the old file is intact."""

    def __init__(self, path, error):
        super().__init__('cannot write {} ({}); the files written before are intact: free space or make save_dir '
                         'writable, then resume with -r'.format(path, getattr(error, 'strerror', None) or error))


def atomic_save(path, write):
    """Make ``path`` with ``write(tmp)`` (which writes a whole file at ``tmp``: text, or ``paddle.save``'s weights) so
    that readers see the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = '{}.tmp.{}'.format(path, os.getpid())
    try:
        os.makedirs(directory, exist_ok=True)
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(directory)
    except OSError as e:
        _remove_quietly(tmp)
        raise SaveError(path, e) from None


def atomic_write(path, text):
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
    atomic_save(path, write)


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync(path):
    """Flush a written file, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_resume_dir(path):
    """``-r path`` must name an earlier search's save_dir: a typo is one line, never a search started afresh."""
    if not os.path.isdir(path):
        raise ConfigError('-r {}: no such directory; resume from the save_dir of an earlier search'.format(path))


def line_of(text, needle):
    """The 1-based line of ``text`` where ``needle`` first appears (1 when it does not)."""
    index = text.find(needle) if needle else -1
    return text.count('\n', 0, index) + 1 if index >= 0 else 1


class History:
    """``search_history.csv``: one row per sampled candidate, appended on resume, never rewritten.

    Each append rewrites the file atomically with the new row, so a kill leaves the file as it was before or
    after that row: always valid CSV. A file that is not (cut short, edited by hand) is a one-line error naming
    its line when it is read, rather than rows silently lost or a search silently started again.
    """

    def __init__(self, path, owner=None):
        self.path = path
        self.owner = owner  # the client name this history's candidates were asked for under
        self.rows = self._read() if os.path.isfile(path) else []

    def _read(self):
        with open(self.path, newline='') as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                return []
            if reader.fieldnames != HISTORY_FIELDS:
                self._fail(1, 'the header is {}, expected {}'.format(','.join(reader.fieldnames),
                                                                     ','.join(HISTORY_FIELDS)))
            rows = []
            for row in reader:
                self._check_row(reader.line_num, row)
                rows.append(row)
        return rows

    def _fail(self, line, what):
        raise ConfigError('{} line {}: {}; restore the file from a copy or delete that line, then resume'.format(
            self.path, line, what))

    def _check_row(self, line, row):
        if None in row or None in row.values():
            self._fail(line, 'expected {} fields (truncated or edited?)'.format(len(HISTORY_FIELDS)))
        if row['status'] not in HISTORY_STATUSES:
            self._fail(line, 'status {!r} is not one of {}'.format(row['status'], ', '.join(HISTORY_STATUSES)))
        try:
            int(row['step'])
            row_tokens(row)
            if row['status'] in REWARDED:
                float(row['ap'])
        except ValueError:
            self._fail(line, 'step, tokens or ap is not a number ({!r}, {!r}, {!r})'.format(
                row['step'], row['tokens'], row['ap']))
        if not row['tokens'].split():
            self._fail(line, 'no tokens')

    def append(self, row):
        self.rows.append({k: _cell(row.get(k)) for k in HISTORY_FIELDS})
        write_csv(self.path, HISTORY_FIELDS, self.rows)

    def rewarded(self):
        return [r for r in self.rows if r['status'] in REWARDED]


def write_csv(path, fields, rows):
    """``rows`` (dicts) as CSV with a header, written atomically; token vectors in their CSV spelling."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, lineterminator='\n')
    writer.writeheader()
    writer.writerows({k: _cell(row.get(k)) for k in fields} for row in rows)
    atomic_write(path, buffer.getvalue())


def row_tokens(row):
    """The token vector of a history row, as a list."""
    return list(Tokens.parse(row['tokens']))


def _cell(value):
    if value is None:
        return ''
    if isinstance(value, (list, tuple)):
        return Tokens(value).csv
    if isinstance(value, float):
        return '{:.6g}'.format(value)
    return str(value)


_held_locks = {}  # path -> descriptor of each lock this process holds, open until it ends


def _make_dir(directory):
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ConfigError('save_dir {}: cannot create it ({}); make its parent writable or set save_dir '
                          'elsewhere'.format(directory, e.strerror)) from None


def _lock(path):
    """Hold an exclusive lock on ``path`` (created if need be) for this process's lifetime; False if another
    live process holds it (True, unchecked, where there are no POSIX locks). POSIX record locks are not
    inherited by forked data workers and end with the process, ``kill -9`` included."""
    if fcntl is None:
        return True
    if os.path.abspath(path) in _held_locks:  # POSIX would grant it again to its holder: one claim per lock
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError('save_dir: cannot write {} ({}); make save_dir writable or set it elsewhere'.format(
            path, e.strerror)) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held_locks[os.path.abspath(path)] = fd
    return True


def _is_free(path):
    """No live process holds the lock on ``path`` (tested by taking it and letting it go at once). Never asked of
    a lock this process holds: closing any descriptor of a file drops all of this process's POSIX locks on it."""
    if fcntl is None or os.path.abspath(path) in _held_locks:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # also lets go of the lock just taken
    return True


def dead_histories(save_dir):
    """The histories (owner: the client name) in ``save_dir`` of clients whose process is no longer running (their
    lock is free). Empty where there are no POSIX locks (nothing can be told)."""
    paths = [lock[:-len('.lock')] for lock in sorted(glob.glob(os.path.join(save_dir, 'search_history_*.csv.lock')))
             if _is_free(lock)]
    return [History(path, _client_name(path)) for path in paths]


def claim_history(save_dir, is_server, resume):
    """This process's history and the client name it asks the controller under.

    The host's is search_history.csv (client ``host``). A joining client's is search_history_<name>.csv; with
    ``resume`` (-r) it takes over the history of a client that is no longer running (no live process holds its
    lock), under the same name, so it can re-send that history's rewards and the controller can release the
    candidate that client was training when it died. Otherwise, or when every history is taken, a new one.
    """
    _make_dir(save_dir)
    if is_server:
        path = os.path.join(save_dir, HISTORY_NAME)
        if not _lock(path + '.lock'):
            raise ConfigError('save_dir {}: another search is running there (it holds {}.lock); stop it or set '
                              'save_dir elsewhere'.format(save_dir, path))
        return History(path, HOST_CLIENT)
    if resume and fcntl is not None:  # a client's lock file is made with its name: it may have died before writing any row
        for lock in sorted(glob.glob(os.path.join(save_dir, 'search_history_*.csv.lock'))):
            if _lock(lock):
                path = lock[:-len('.lock')]
                return History(path, _client_name(path))
    name = '{}_{}'.format(socket.gethostname(), os.getpid())
    path = os.path.join(save_dir, 'search_history_{}.csv'.format(name))
    _lock(path + '.lock')
    return History(path, name)


def _client_name(path):
    return os.path.basename(path)[len('search_history_'):-len('.csv')]
