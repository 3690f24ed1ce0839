"""Building and validating latency tables with real Paddle Inference, on a tiny space at 32x32 (seconds, not
minutes); the enumeration itself is checked on the real BlazeFace-NAS space."""
import argparse
import itertools
import json
import os
import random
import subprocess
import sys

import pytest
from paddleslim.nas.search_space.search_space_registry import SEARCHSPACE

import tools.build_latency_table as build_tool
import tools.price_arch as price_tool
import tools.validate_latency_table as validate_tool
from conftest import run_tool_main
from ppdet.modeling.layers import ConvSpec, PlacedConv
from ppdet.slim.nas import latency
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.constraint import RUN_OVERHEAD_KEY, CandidatePricer, LatencyTable, unit_key
from ppdet.slim.nas.latency import load_table_setup, space_units, table_header, with_kernels
from search_space import BlazeFaceNasSpace3x3

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ['--threads', '1', '--warmup', '1', '--repeats', '3', '--rounds', '1']


@SEARCHSPACE.register
class TinyLatencySpace(BlazeFaceNasSpace3x3):
    """Eight candidates, 33 distinct convs and 65 runtime units: a complete table in a few seconds."""
    blaze_filter_num1 = [4, 8]
    blaze_filter_num2 = [8]
    mid_filter_num = [8]
    double_filter_num = [8, 16]
    initial_tokens = [0] * 9


def _config(path, table='not_built_yet.txt'):
    """A latency config naming a table that may not exist yet: the build tool must load it anyway."""
    path.write_text('search_space: TinyLatencySpace\n'
                    'Constraint: {{ctype: latency, table_file: {}, max_constraint: 1.0e+9}}\n'
                    'TrainReader: {{inputs_def: {{image_shape: [3, 32, 32]}}}}\n'.format(table))
    return str(path)


TINY_UNITS = 65


def _tiny_units(config, kernels=(3,)):
    setup = load_table_setup(config, {})
    return space_units(CandidatePricer(setup.cfg, with_kernels(setup.space, kernels)))


def _tiny_keys(config, kernels=(3,)):
    return set(_tiny_units(config, kernels))


_cli = run_tool_main


def _entries(path):
    with open(path) as f:
        return f.read().splitlines()[1:]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """One complete tiny table, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp('table')
    config = _config(tmp / 'tiny.yml')
    table = str(tmp / 'table.txt')
    build_tool.main(['-c', config, '--out', table] + FAST)
    return config, table


def test_table_has_every_unit_once_in_paddleslim_format(built):
    config, table = built
    with open(table) as f:
        header = f.readline().rstrip('\n').split('\t')
    assert header == list(table_header('cpu', 1)) and header[2] == 'us' and header[1].endswith('_network')
    entries = dict(line.split('\t') for line in _entries(table))
    assert len(entries) == len(_entries(table)) and set(entries) == _tiny_keys(config) | {RUN_OVERHEAD_KEY}
    assert len(entries) == TINY_UNITS + 1 and sum(k.startswith('conv,') for k in entries) == 33
    # net of a run's fixed cost, a conv on a 2x2 map may cost nothing measurable: never less
    assert all(float(v) >= 0 for v in entries.values()) and float(entries[RUN_OVERHEAD_KEY]) > 0
    assert sum(float(v) > 0 for k, v in entries.items() if k.startswith('conv,')) > 33 // 2


def test_price_arch_prices_every_candidate_with_the_built_table(built, tmp_path, monkeypatch, capsys):
    """The table plugs into Constraint.table_file unchanged: every candidate of the space is priced."""
    _, table = built
    config = _config(tmp_path / 'search.yml', table)
    candidates = [list(t) + [0] * 5 for t in itertools.product(range(2), range(1), range(2), range(2))]
    argv = ['price_arch.py', '-c', config] + [a for t in candidates for a in ('--tokens', ','.join(map(str, t)))]
    monkeypatch.setattr(sys, 'argv', argv)
    price_tool.main()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    entries = LatencyTable.load(table).entries
    pricer = load_search_config(config).pricer
    assert len(rows) == 8
    for row in rows:
        expected = sum(entries[unit_key(u)] for u in pricer.describe_units(row['tokens']))
        assert row['unpriced'] == [] and row['within_constraint'] is True
        assert row['latency_us'] == pytest.approx(expected + entries[RUN_OVERHEAD_KEY])


def test_price_arch_quantile_is_a_bound_admitting_that_share(built, tmp_path, monkeypatch, capsys):
    _, table = built
    config = _config(tmp_path / 'search.yml', table)
    monkeypatch.setattr(sys, 'argv', ['price_arch.py', '-c', config, '--quantile', '0.5'])
    price_tool.main()
    bound = int(capsys.readouterr().out.strip())
    setup = load_search_config(config)
    prices = sorted(setup.pricer.price(list(t) + [0] * 5).latency_us
                    for t in itertools.product(range(2), range(1), range(2), range(2)))
    assert prices[3] <= bound <= prices[4]  # the median of the 8 candidates of the space


def _interrupt_the_second_batch(monkeypatch):
    """The build measures its first batch of units for real, then gets Ctrl-C; returns the real measure."""
    real, batches = latency.measure_units, []

    def interrupt_second_batch(*args):
        if batches:
            raise KeyboardInterrupt
        batches.append(args)
        return real(*args)
    monkeypatch.setattr(latency, 'measure_units', interrupt_second_batch)
    return real


def test_an_interrupted_build_resumes_with_the_missing_keys_only(tmp_path, monkeypatch, capsys):
    config, table = _config(tmp_path / 'tiny.yml'), str(tmp_path / 'table.txt')
    real = _interrupt_the_second_batch(monkeypatch)
    code, _, err = _cli(build_tool.main, ['-c', config, '--out', table] + FAST, capsys)
    assert code == 130 and 'rerun' in err
    first = [line.split('\t')[0] for line in _entries(table)]
    assert len(first) == latency.REFERENCES + 24  # the reference convs and a batch of 24
    with open(table, 'a') as f:
        f.write('conv,0,0,1,8,16')  # a kill in the middle of a line
    monkeypatch.setattr(latency, 'measure_units', real)
    code, out, _ = _cli(build_tool.main, ['-c', config, '--out', table] + FAST, capsys)
    keys = [line.split('\t')[0] for line in _entries(table)]
    assert code == 0 and '29 already in' in out and 'measuring {}'.format(TINY_UNITS - 29) in out
    assert keys[:29] == first and len(keys) == len(set(keys)) == TINY_UNITS + 1
    assert set(keys) == _tiny_keys(config) | {RUN_OVERHEAD_KEY} and 'calibrated on 8 networks' in out


def test_resuming_with_other_settings_is_refused(built, tmp_path, capsys):
    config, table = built
    copy = tmp_path / 'copy.txt'
    copy.write_text(open(table).read())
    code, _, err = _cli(build_tool.main, ['-c', config, '--out', str(copy), '--threads', '2'], capsys)
    assert code == 2 and err.count('\n') == 1 and '1threads' in err and '2threads' in err
    assert copy.read_text() == open(table).read()


def test_kernel_choice(tmp_path, capsys):
    config = _config(tmp_path / 'tiny.yml')
    both = _tiny_keys(config, (3, 5))
    assert _tiny_keys(config) < both and all(k.split(',')[9] == '5' for k in both - _tiny_keys(config))
    code, _, err = _cli(build_tool.main, ['-c', config, '--out', str(tmp_path / 't.txt'), '--kernels', '3,7'],
                        capsys)
    assert code == 2 and err.count('\n') == 1 and '--kernels' in err
    assert not (tmp_path / 't.txt').exists()


def test_enumeration_meets_every_conv_of_the_real_space(tmp_path):
    """Pairs of tokens suffice: random candidates and every all-extremes candidate of the full BlazeFace-NAS
    space (both kernels) use only enumerated keys."""
    path = tmp_path / 'real.yml'
    path.write_text('Constraint: {ctype: flops}\nTrainReader: {inputs_def: {image_shape: [3, 64, 64]}}\n')
    setup = load_table_setup(str(path), {})
    pricer = CandidatePricer(setup.cfg, with_kernels(setup.space, (3, 5)))
    keys = set(space_units(pricer))
    ranges = pricer.space.range_table()
    rng = random.Random(1)
    samples = [[rng.randrange(r) for r in ranges] for _ in range(300)]
    samples += [list(c) for c in itertools.product(*[(0, r - 1) for r in ranges])]
    used = {unit_key(u) for tokens in samples for u in pricer.describe_units(tokens)}
    assert used <= keys
    assert len(keys - used) < len(keys)  # the sample is not trivially small


def test_validation_reports_every_candidate(built, tmp_path, capsys):
    config, table = built
    report = tmp_path / 'report.txt'
    code, out, _ = _cli(validate_tool.main, ['-c', config, '--table', table, '--samples', '3', '--warmup', '1',
                                             '--repeats', '2', '--rounds', '2', '--report', str(report)], capsys)
    lines = out.strip().splitlines()
    rows = [json.loads(line) for line in lines[:3]]
    last = json.loads(lines[-1])
    pricer = load_search_config(_config(tmp_path / 's.yml', table)).pricer
    assert code == 0 and set(last) == {'samples', 'spearman', 'median_ratio', 'within_10pct', 'worst_ratio',
                                       'speed_factor', 'median_ratio_adjusted', 'within_10pct_adjusted'}
    assert last['median_ratio_adjusted'] == pytest.approx(last['median_ratio'] / last['speed_factor'], rel=1e-3)
    assert last['samples'] == 3 and -1 <= last['spearman'] <= 1 and last['median_ratio'] > 0
    ratios = [row['ratio'] for row in rows]
    assert last['within_10pct'] == pytest.approx(sum(abs(r - 1) <= 0.1 for r in ratios) / 3)
    assert last['worst_ratio'] == pytest.approx(max(ratios, key=lambda r: abs(r - 1)), abs=1e-3)
    for row in rows:
        assert row['measured_us'] > 0
        assert row['table_us'] == pytest.approx(pricer.price(row['tokens']).latency_us, abs=0.1)
    assert report.read_text().strip().splitlines()[-1] == lines[-1]
    assert (tmp_path / 'report.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_table_of_the_real_space_prices_every_candidate(tmp_path, capsys):
    """The whole pipeline at 32x32 on the full 3x3 space: a fresh, calibrated table prices random candidates of the
    space in full, and validation measures candidates other than the calibration networks. How accurate the prices
    are depends on the machine's load, so that is measured by ``bench/latency_tables.py``, not asserted here."""
    config, table = tmp_path / 'real.yml', str(tmp_path / 'table.txt')
    config.write_text('Constraint: {{ctype: latency, table_file: {}}}\n'
                      'TrainReader: {{inputs_def: {{image_shape: [3, 32, 32]}}}}\n'.format(table))
    code, out, _ = _cli(build_tool.main, ['-c', str(config), '--out', table] + FAST, capsys)
    assert code == 0 and 'calibrated on 8 networks' in out
    setup = load_search_config(str(config))
    assert setup.space.use_5x5kernel == [0]  # the 3x3 space both tools sample from
    assert LatencyTable.load(table).whole_network
    for tokens in latency.sample_candidates(setup.space, 20, 1):
        price = setup.pricer.price(tokens)
        assert not price.unpriced and price.latency_us > 0, (tokens, price)
    code, out, _ = _cli(validate_tool.main, ['-c', str(config), '--table', table, '--samples', '3'] + FAST[2:],
                        capsys)
    rows = [json.loads(line) for line in out.strip().splitlines()[:3]]
    calibration = {tuple(t) for t in latency.sample_candidates(setup.space, 8, latency.CALIBRATION_SEED)}
    assert code == 0 and len(rows) == 3 and not calibration & {tuple(r['tokens']) for r in rows}
    assert all(r['ratio'] > 0 for r in rows), rows


FIXED_US = 5.0  # what the timing stand-in gives a predictor run of one trivial op


def _timed_networks(config, spread=1.0):
    """A stand-in for the timing only (programs are still built and saved): unit i takes 10 + i us, and each
    calibration network takes the fixed cost plus 2x (or ``spread`` times that, every other network) the sum of
    its units net of the fixed cost, so the calibration's answer is known."""
    setup = load_table_setup(config, {})
    pricer = CandidatePricer(setup.cfg, setup.space)
    unit_us = {key: 10.0 + i for i, key in enumerate(sorted(space_units(pricer)))}
    networks = [sum(unit_us[unit_key(u)] - FIXED_US for u in pricer.describe_units(t))
                for t in latency.sample_candidates(setup.space, latency.CALIBRATION_NETWORKS, latency.CALIBRATION_SEED)]

    def measure(timer, units, workdir, extra_models=()):
        times = [unit_us[unit_key(u)] for u in units]
        if extra_models:
            times += [FIXED_US] + [FIXED_US + 2 * s * (spread if i % 2 else 1) for i, s in enumerate(networks)]
        return times
    return unit_us, measure


def test_the_calibration_is_applied_to_every_entry(tmp_path, monkeypatch, capsys, caplog):
    """Entries become (unit time - fixed cost) x slope, the fixed cost is run_overhead, and a calibration network
    is then priced at exactly its measured time."""
    config, table = _config(tmp_path / 'tiny.yml'), str(tmp_path / 'table.txt')
    unit_us, measure = _timed_networks(config)
    monkeypatch.setattr(latency, 'measure_units', measure)
    code, out, _ = _cli(build_tool.main, ['-c', config, '--out', table] + FAST, capsys)
    assert code == 0 and 'units x 2.000' in out and 'disagree' not in caplog.text
    entries = LatencyTable.load(table).entries
    assert entries.pop(RUN_OVERHEAD_KEY) == pytest.approx(FIXED_US)
    assert entries == pytest.approx({key: (us - FIXED_US) * 2 for key, us in unit_us.items()})
    setup = load_search_config(config, {'Constraint.table_file': table})
    tokens = latency.sample_candidates(setup.space, latency.CALIBRATION_NETWORKS, latency.CALIBRATION_SEED)[0]
    net = sum(unit_us[unit_key(u)] - FIXED_US for u in setup.pricer.describe_units(tokens))
    assert setup.pricer.price(tokens).latency_us == pytest.approx(FIXED_US + 2 * net)


def test_a_noisy_build_warns(tmp_path, monkeypatch, capsys, caplog):
    """Calibration networks that disagree (the machine's speed changed during the build) are said in a warning."""
    config, table = _config(tmp_path / 'tiny.yml'), str(tmp_path / 'table.txt')
    monkeypatch.setattr(latency, 'measure_units', _timed_networks(config, spread=1.5)[1])
    code, out, _ = _cli(build_tool.main, ['-c', config, '--out', table] + FAST, capsys)
    assert code == 0 and 'ratios spread x1.500' in out
    assert 'the calibration networks disagree by x1.50' in caplog.text


def test_validation_refuses_tables_it_cannot_check(built, tmp_path, capsys, latency_855):
    config, table = built
    code, _, err = _cli(validate_tool.main, ['-c', config, '--table', latency_855], capsys)
    assert code == 2 and err.count('\n') == 1 and 'build_latency_table' in err
    partial = tmp_path / 'partial.txt'
    partial.write_text(open(table).read().splitlines()[0] + '\n')
    code, _, err = _cli(validate_tool.main, ['-c', config, '--table', str(partial), '--samples', '1'], capsys)
    assert code == 2 and err.count('\n') == 1 and 'cannot price' in err


def test_the_command_line_gives_one_line_errors(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'build_latency_table.py'), '-c',
                          str(tmp_path / 'missing.yml'), '--out', str(tmp_path / 't.txt')],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
    assert out.returncode == 2 and len(errors) == 1 and 'missing.yml' in errors[0] and 'Traceback' not in out.stderr


def test_drift_of_the_machine_speed_is_scaled_out(tmp_path, monkeypatch):
    """A machine twice as slow during the second batch (other load) must not double that batch's entries."""
    config, table = _config(tmp_path / 'tiny.yml'), str(tmp_path / 'table.txt')
    units = _tiny_units(config)
    true_us = {key: 10.0 * (i + 1) for i, key in enumerate(sorted(units))}
    batches = []

    def timed_on_a_drifting_machine(timer, batch_units, workdir, extra_models=()):
        slowdown = 1 + len(batches)
        batches.append(batch_units)
        return [true_us[unit_key(u)] * slowdown for u in batch_units]

    monkeypatch.setattr(latency, 'measure_units', timed_on_a_drifting_machine)
    writer = latency.TableWriter(table, table_header('cpu', 1))
    assert sum(latency.measure_table(None, writer, units)) == TINY_UNITS and len(batches) == 3
    assert LatencyTable.load(table).entries == pytest.approx(true_us)


def test_one_noisy_reference_does_not_shift_a_batch(tmp_path, monkeypatch):
    """Each batch is scaled by the median over several references: one of them timed 3x slow by chance (a
    preemption) must leave the batch's entries alone."""
    config, table = _config(tmp_path / 'tiny.yml'), str(tmp_path / 'table.txt')
    units = _tiny_units(config)
    true_us = {key: 10.0 * (i + 1) for i, key in enumerate(sorted(units))}
    references = latency.reference_convs(units)
    batches = []

    def one_reference_preempted_in_the_second_batch(timer, batch_units, workdir, extra_models=()):
        times = [true_us[unit_key(u)] for u in batch_units]
        if batches:
            times[0] *= 3
        batches.append(batch_units)
        return times

    monkeypatch.setattr(latency, 'measure_units', one_reference_preempted_in_the_second_batch)
    writer = latency.TableWriter(table, table_header('cpu', 1))
    assert sum(latency.measure_table(None, writer, units)) == TINY_UNITS and len(batches) == 3
    assert len(references) == latency.REFERENCES and [unit_key(u) for u in batches[1][:len(references)]] == references
    assert all(isinstance(units[r], PlacedConv) for r in references)
    assert LatencyTable.load(table).entries == pytest.approx(true_us)


def test_batches_mix_channel_widths(tmp_path):
    """Keys are measured by signature in a fixed shuffled order, not sorted by channels: a batch's timing error
    must not land on every conv of one width (every candidate with that token value alike)."""
    config = _config(tmp_path / 'tiny.yml')
    units = _tiny_units(config)
    writer = latency.TableWriter(str(tmp_path / 'table.txt'), table_header('cpu', 1))
    order = latency.missing_keys(units, writer)
    assert order == latency.missing_keys(units, writer) and sorted(order) == sorted(units)
    signatures = [latency.unit_signature(units[key]) for key in order]
    runs = [s for i, s in enumerate(signatures) if i == 0 or s != signatures[i - 1]]
    assert len(runs) == len(set(signatures))  # a signature's sizes stay together (one predictor)
    first_inputs = [s[1] for s in signatures[:len(signatures) // 2] if s[0] == 'conv']
    assert first_inputs != sorted(first_inputs)


def test_cpu_kernels_are_part_of_the_table(built, tmp_path, capsys, monkeypatch):
    """Paddle's own CPU kernels by default, oneDNN on request; the header says which, so that validation times
    the same kernels. (The oneDNN build stops after its first batch: the header is written before it.)"""
    config, table = built
    prefix = latency.save_unit_program(PlacedConv(ConvSpec('conv', 4, 8, 3), 8, 8), str(tmp_path / 'conv' / 'conv'))
    assert not latency.predictor_config(prefix).onednn_enabled()
    assert latency.predictor_config(prefix, onednn=True).onednn_enabled()
    timing = argparse.Namespace(warmup=1, repeats=1, rounds=1)
    assert validate_tool.table_timer(LatencyTable.load(table), timing).onednn is False
    onednn = tmp_path / 'onednn.txt'
    real = _interrupt_the_second_batch(monkeypatch)
    code, _, _ = _cli(build_tool.main, ['-c', config, '--out', str(onednn), '--onednn'] + FAST, capsys)
    monkeypatch.setattr(latency, 'measure_units', real)
    assert code == 130 and LatencyTable.load(str(onednn)).header == table_header('cpu', 1, onednn=True)
    assert table_header('cpu', 1, onednn=True)[1].endswith('_1threads_onednn_network')
    assert validate_tool.table_timer(LatencyTable.load(str(onednn)), timing).onednn is True
    code, _, err = _cli(build_tool.main, ['-c', config, '--out', str(tmp_path / 'g.txt'), '--onednn', '--device',
                                          'gpu'], capsys)
    assert code == 2 and err.count('\n') == 1 and '--onednn' in err
