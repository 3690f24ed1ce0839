"""Crash-safe files: what a search has learned must survive a kill at any moment."""
import csv
import io
import os

__all__ = ['atomic_write', 'History', 'HISTORY_FIELDS']

HISTORY_FIELDS = ['step', 'tokens', 'status', 'flops', 'params', 'latency_us', 'ap', 'train_seconds', 'client']


def atomic_write(path, text):
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = '{}.tmp.{}'.format(path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class History:
    """``search_history.csv``: one row per sampled candidate, appended on resume, never rewritten.

    Each append rewrites the file atomically with the new row, so a kill leaves the file as it was before or
    after that row: always valid CSV.
    """

    def __init__(self, path):
        self.path = path
        self.rows = self._read() if os.path.isfile(path) else []

    def _read(self):
        with open(self.path, newline='') as f:
            return [row for row in csv.DictReader(f) if row.get('step')]

    def append(self, row):
        self.rows.append({k: _cell(row.get(k)) for k in HISTORY_FIELDS})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, HISTORY_FIELDS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, buffer.getvalue())

    def rewarded(self):
        return [r for r in self.rows if r['status'] in ('trained', 'failed')]


def _cell(value):
    if value is None:
        return ''
    if isinstance(value, (list, tuple)):
        return ' '.join(str(v) for v in value)
    if isinstance(value, float):
        return '{:.6g}'.format(value)
    return str(value)
