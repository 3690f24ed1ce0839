"""``python barrier_start.py BARRIER_DIR train_nas.py-arguments...``: train_nas.py released by a barrier.

Imports everything ``train_nas.py`` imports (Paddle, Optuna, SQLAlchemy: seconds that would spread the workers
out), says it is ready (``BARRIER_DIR/ready.<pid>``), waits for ``BARRIER_DIR/go``, then runs ``train_nas.py``'s
own ``main`` on the arguments: every worker of a test opens the storage within milliseconds of the others.
"""
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import train_nas  # noqa: E402
from ppdet.core.cli import run_cli  # noqa: E402


def main():
    barrier, argv = sys.argv[1], sys.argv[2:]
    open(os.path.join(barrier, 'ready.{}'.format(os.getpid())), 'w').close()
    go = os.path.join(barrier, 'go')
    deadline = time.time() + 600
    while not os.path.exists(go):
        if time.time() > deadline:
            sys.exit('barrier_start: never released')
        time.sleep(0.005)
    sys.argv = ['train_nas.py'] + argv
    run_cli(lambda: train_nas.main(argv))


if __name__ == '__main__':
    main()
