import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SHARED_TABLE = os.path.join(os.path.dirname(REPO), 'shared', 'latency_855.txt')


@pytest.fixture
def latency_855():
    """The original's Snapdragon 855 table, read from ../shared (it is third-party data, never committed)."""
    if not os.path.isfile(SHARED_TABLE):
        pytest.fail('{} is missing: tests read the original latency table from ../shared'.format(SHARED_TABLE))
    return SHARED_TABLE


def run_tool_main(main, argv, capsys):
    """Run a tool's ``main(argv)`` as its ``__main__`` does; returns (exit code, stdout, stderr)."""
    from ppdet.core.cli import run_cli
    try:
        run_cli(lambda: main(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
