"""Child processes that end with their parent, however the parent ends (``kill -9`` included).

A SIGKILLed process runs no cleanup, so its children must notice on their own. Paddle's DataLoader workers
only look at their parent between two reads of their index queue, and a worker whose parent died mid-write
blocks in that read for good (seen: two ~290 MB workers of a killed demo search, minutes later). So every
child this search starts calls ``die_with_parent`` first:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel signals the child the moment its parent dies (the
  parent *thread* that forked it, which for the DataLoader is the search's main thread);
- everywhere: a watchdog thread that compares ``os.getppid()`` with the parent's pid every second, in case
  the signal is not available (macOS, BSD) or the parent died before the request took effect.

Either way the child runs its cleanup (a DataLoader worker removes the shared-memory files it made for batches
nobody will read any more), then leaves with ``os._exit`` (a normal exit would wait for queue threads writing to
the dead parent).
On Windows, where a parent's death is not visible through ``getppid``, nothing of this applies.
"""
import ctypes
import ctypes.util
import glob
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ['die_with_parent', 'DataWorkerGuard', 'EXIT_ORPHANED', 'remove_shared_memory', 'close_inherited_listeners']

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 3
WATCH_SECONDS = 1.0


def _request_death_signal(signum: int) -> bool:
    """Ask the Linux kernel to send ``signum`` when the parent dies; False where that is not available."""
    if not sys.platform.startswith('linux'):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def die_with_parent(parent_pid: int, cleanup: Optional[Callable[[], None]] = None) -> None:
    """End this process (``cleanup`` first) as soon as ``parent_pid`` is no longer its parent.

    Call it from the child's main thread, first thing: it installs a SIGTERM handler.
    """
    def leave(*_):
        if cleanup is not None:
            cleanup()
        os._exit(EXIT_ORPHANED)

    if sys.platform == 'win32':
        return
    signal.signal(signal.SIGTERM, leave)
    _request_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died between fork and prctl: no signal will come
        leave()

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(WATCH_SECONDS)
        leave()
    threading.Thread(target=watch, name='parent-watchdog', daemon=True).start()


def remove_shared_memory(pid: int) -> None:
    """Remove the batch files Paddle's DataLoader process ``pid`` made in /dev/shm (``paddle_<pid>_*``).

    A worker whose parent is gone owns the only reference to them: left there, they hold RAM until a reboot.
    """
    for path in glob.glob('/dev/shm/paddle_{}_*'.format(pid)):
        try:
            os.unlink(path)
        except OSError:
            pass


def close_inherited_listeners() -> None:
    """Close every listening socket this process inherited by fork.

    A forked DataLoader worker holds a copy of each descriptor of its parent, the SANAS controller's listening port
    among them: while any worker lives (a killed search's included), that port cannot be bound again. The worker
    accepts no connection, so it closes them; the parent's sockets are untouched, and no process-wide fork hook is
    needed.
    """
    fd_dir = '/proc/self/fd' if os.path.isdir('/proc/self/fd') else '/dev/fd'
    if not os.path.isdir(fd_dir):
        return
    for name in os.listdir(fd_dir):
        try:
            sock = socket.socket(fileno=int(name))
        except (OSError, ValueError):  # not a socket (or the listing's own descriptor, gone)
            continue
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            listening = 0
        if listening:
            sock.close()
        else:
            sock.detach()


@dataclass
class DataWorkerGuard:
    """``worker_init_fn`` of the search's DataLoaders: the worker ends with the process that iterates it, and
    holds none of its listening ports."""
    parent_pid: int

    def __call__(self, worker_id: int) -> None:
        pid = os.getpid()
        close_inherited_listeners()
        die_with_parent(self.parent_pid, lambda: remove_shared_memory(pid))
