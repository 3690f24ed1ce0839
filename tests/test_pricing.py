import itertools
import json
import os
import subprocess
import sys

import pytest

import tools.price_arch as price_tool
from conftest import run_tool_main
from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.constraint import LatencyTable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = [2, 1, 3, 8, 2, 1, 2, 1, 0]


def _config(tmp_path, ctype='flops', size=(640, 640), table=None, bounds=''):
    text = 'Constraint: {{ctype: {}{}{}}}\nTrainReader: {{inputs_def: {{image_shape: [3, {}, {}]}}}}\n'.format(
        ctype, ', table_file: {}'.format(table) if table else '', bounds, *size)
    path = tmp_path / 'c.yml'
    path.write_text(text)
    return str(path)


def test_flops_agree_with_paddleslim_on_a_static_program(tmp_path):
    """The convention (only convs, no bias term, batch ignored) checked against paddleslim.analysis.flops."""
    tokens = [[2, 1, 3, 8, 2, 1, 2, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0], [6, 8, 11, 11, 5, 5, 5, 5, 0]]
    env = dict(os.environ, FLAGS_enable_pir_api='0')
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'helpers', 'static_flops.py'), '96', '128',
                          json.dumps(tokens)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = json.loads(out.stdout.strip().splitlines()[-1])
    setup = load_search_config(_config(tmp_path, size=(96, 128)))
    assert [setup.pricer.price(t).flops for t in tokens] == [int(f) for f in expected]


def test_every_covered_latency_candidate_is_priced(tmp_path, latency_855):
    """Over the whole latency space (all stem/block/double widths, each middle width), a candidate is unpriced
    exactly when it uses 20 channels at 320x320 or 160x160, which the Snapdragon 855 table lacks."""
    setup = load_search_config(_config(tmp_path, 'latency', table=latency_855))
    mids = setup.space.range_table()[4]
    for t0, t1, t2, t3 in itertools.product(*[range(r) for r in setup.space.range_table()[:4]]):
        for m in range(mids):
            price = setup.pricer.price([t0, t1, t2, t3, m, m, m, m, 0])
            uses_20 = t0 == 4 or t1 == 3
            assert (price.latency_us is None) == uses_20 == bool(price.unpriced)
            assert all(',20,' in key for key in price.unpriced)


def test_published_structure_prices(tmp_path, latency_855):
    setup = load_search_config(_config(tmp_path, 'latency', table=latency_855, bounds=', max_constraint: 57489, '
                                       'min_constraint: 18000'))
    price = setup.pricer.price(PUBLISHED)
    table = LatencyTable.load(latency_855)
    keys = [k for k in table.entries if k.startswith('conv,0,0,1,3,640,640,12,')]
    assert keys and price.latency_us > table.entries[keys[0]]
    assert setup.constraint.admits(price) is (18000 <= price.latency_us <= 57489)
    unpriced = setup.pricer.price([4, 1, 3, 8, 2, 1, 2, 1, 0])
    assert unpriced.latency_us is None and setup.constraint.admits(unpriced) is None


@pytest.mark.parametrize('content, words', [
    ('conv,0,0,1,3,640,640,8,1,3,1,2,1\t2433\n', ['line 1', 'header']),
    ('op_type\t855\tus\nconv,0,0,1,3,640,640,8,1,3,1,2,1\tfast\n', ['line 2']),
    ('op_type\t855\tus\nconv,0,0,1,3,640,640,8,1,3,1,2,1\n', ['line 2']),
    ('', ['line 1']),
])
def test_bad_tables_are_clear_errors(tmp_path, content, words):
    path = tmp_path / 'table.txt'
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        LatencyTable.load(str(path))
    for word in words + [str(path)]:
        assert word in str(err.value)


def _price_cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'price_arch.py'), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_price_arch_cli(tmp_path, latency_855):
    out = _price_cli('-c', _config(tmp_path, 'latency', table=latency_855, bounds=', max_constraint: 57489'),
                     '--tokens', ','.join(map(str, PUBLISHED)), '--tokens', '4,1,3,8,2,1,2,1,0')
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert set(rows[0]) == {'tokens', 'flops', 'params', 'latency_us', 'unpriced', 'within_constraint'}
    assert rows[0]['tokens'] == PUBLISHED and rows[0]['within_constraint'] is True
    assert rows[0]['flops'] > 0 and rows[0]['params'] > 0 and rows[0]['unpriced'] == []
    assert rows[1]['latency_us'] is None and rows[1]['within_constraint'] is None and rows[1]['unpriced']


@pytest.mark.parametrize('args, words', [
    (['--tokens', '2,1,3'], ['expected 9 tokens']),
    (['--tokens', '2,1,x'], ['comma-separated']),
    (['--tokens', '2,1,3,8,2,1,2,1,0', '-o', 'Constraint.table_file=/nope.txt'], ['/nope.txt', 'not found']),
])
def test_price_arch_mistakes_are_one_line(tmp_path, latency_855, capsys, args, words):
    code, _, err = run_tool_main(price_tool.main, ['-c', _config(tmp_path, 'latency', table=latency_855), *args],
                                 capsys)
    assert code == 2
    assert 'Traceback' not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith('error:') and all(w in last for w in words)
