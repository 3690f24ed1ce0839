import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ours_trains_exactly_the_steps_the_original_wastes_them(latency_855):
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'simulate_search.py'), '-c',
                          os.path.join(REPO, 'blazeface.yml'), '--steps', '60', '-o',
                          'Constraint.table_file={}'.format(latency_855)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    shipped, edited, ours = [json.loads(line) for line in out.stdout.splitlines()]
    assert shipped['first_crash_step'] == 0, 'the shipped init tokens use 5x5 kernels, which the table lacks'
    for loop in (shipped, edited):
        assert loop['trained'] + loop['skipped'] + loop['unpriced'] <= 60
        assert loop['trained'] < 60
    assert ours['trained'] == 60
    assert ours['skipped'] + ours['unpriced'] > 0
