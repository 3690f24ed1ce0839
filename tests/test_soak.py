"""The whole system under kill -9: a host and two clients on loopback, 3 kills at random moments (the host among
them), each victim restarted with -r; the invariants are checked by bench/soak.py (the long run lives there)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench'))

from soak import run_soak  # noqa: E402


def test_short_soak(tmp_path):
    result = run_soak(str(tmp_path), steps=8, kills=3, seed=11, seconds=300)
    summary = result.summary()
    print(summary)
    assert result.problems == [], summary
    assert summary['kills'] == 3 and summary['host_kills'] >= 1, summary
