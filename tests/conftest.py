import logging
import os
import signal
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from ppdet.utils.logs import quiet_libraries  # noqa: E402

quiet_libraries()  # the test process is an entry point too: glog's level must be set before paddle is imported

REPO_TABLE = os.path.join(REPO, 'latency_855.txt')


@pytest.fixture
def latency_855():
    """The original's Snapdragon 855 table, as the repo ships it at its top level (PaddleDetection's data)."""
    if not os.path.isfile(REPO_TABLE):
        pytest.fail('{} is missing: the repo ships the original latency table at its top level'.format(REPO_TABLE))
    return REPO_TABLE


def run_tool_main(main, argv, capsys):
    """Run an entry point's ``main(argv)`` as its ``__main__`` does, in this process (no interpreter and Paddle to
    start: seconds less per call); returns (exit code, stdout, stderr). The logging set-up the entry point makes
    (handlers on the captured stderr) is undone after."""
    from ppdet.core.cli import run_cli
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        run_cli(lambda: main(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        logging.root.handlers[:], logging.root.level = handlers, level
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope='session', autouse=True)
def no_process_left_behind(tmp_path_factory):
    """The processes tests start carry the session's tmp path in their command line: none may outlive the suite
    (they are killed, and the session errs, if one does)."""
    yield
    from search_fixtures import wait_until_gone
    left = wait_until_gone(str(tmp_path_factory.getbasetemp()), timeout=5)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, 'processes left running after the tests: {}'.format(left)
