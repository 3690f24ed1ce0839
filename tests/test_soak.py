"""The whole system under kill -9: a host and two clients on loopback, 3 kills at random moments (the host among
them), each victim restarted with -r. ``bench/soak.py`` (run here as a user runs it, short) checks the invariants
and exits non-zero on any problem or process left behind; the long run lives there."""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_short_soak(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'soak.py'), '--steps', '8', '--kills', '3',
                          '--seed', '11', '--minutes', '5', '--work', str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and summary['problems'] == [], summary
    assert summary['kills'] == 3 and summary['host_kills'] >= 1, summary
