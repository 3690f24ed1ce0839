"""A fresh clone: the original's command finds its table, fails fast without WIDER FACE, and FLOPs need no table."""
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO, REPO_TABLE
from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.preflight import check_search_inputs
from search_fixtures import free_port, tiny_config, tiny_dataset

BLAZEFACE = os.path.join(REPO, 'blazeface.yml')
SHARED_TABLE = os.path.join(os.path.dirname(REPO), 'shared', 'latency_855.txt')
TABLE_MD5 = '541c84fe7f611877b60b652e8035ceeb'  # latency_855.txt of PaddleDetection slim/nas
PUBLISHED_3X3 = '2,1,3,8,2,1,2,1,0'


def _run(args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, '-u', *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


def test_the_table_ships_byte_for_byte():
    with open(REPO_TABLE, 'rb') as f:
        data = f.read()
    assert hashlib.md5(data).hexdigest() == TABLE_MD5
    if os.path.isfile(SHARED_TABLE):
        with open(SHARED_TABLE, 'rb') as f:
            assert f.read() == data


@pytest.mark.parametrize('where', ['repo', 'elsewhere'])
def test_blazeface_yml_finds_the_table(where, tmp_path):
    """From the repo root (working directory) and from any other directory (next to the config)."""
    out = _run([os.path.join(REPO, 'tools', 'price_arch.py'), '-c', BLAZEFACE, '--tokens', PUBLISHED_3X3],
               cwd=REPO if where == 'repo' else str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)['latency_us'] == 21117.0  # the original's figure for the 3x3 published structure


def test_flops_search_ignores_a_missing_table_with_one_warning(tmp_path):
    out = _run([os.path.join(REPO, 'tools', 'price_arch.py'), '-c', BLAZEFACE, '--tokens', PUBLISHED_3X3,
                '-o', 'Constraint.ctype=flops', 'Constraint.table_file=no_such_table.txt'], cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row['flops'] == 185625600 and row['latency_us'] is None
    warnings = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and 'no_such_table.txt' in warnings[0] and 'flops' in warnings[0]


def test_flops_search_still_reads_an_existing_table_for_the_history():
    out = _run([os.path.join(REPO, 'tools', 'price_arch.py'), '-c', BLAZEFACE, '--tokens', PUBLISHED_3X3,
                '-o', 'Constraint.ctype=flops'])
    assert out.returncode == 0 and out.stderr.strip() == '', out.stderr
    assert json.loads(out.stdout)['latency_us'] == 21117.0


def test_without_wider_face_the_search_stops_in_seconds_with_one_line(tmp_path):
    """No controller is started: the port is held here, and the error is still the dataset's, not the port's."""
    missing = str(tmp_path / 'wider_face')
    with socket.socket() as held:
        held.bind(('127.0.0.1', 0))
        held.listen(1)
        port = held.getsockname()[1]
        out = _run([os.path.join(REPO, 'train_nas.py'), '-c', BLAZEFACE, '-o', 'server_port={}'.format(port),
                    'save_dir={}'.format(tmp_path / 'out'), 'TrainReader.dataset.dataset_dir=' + missing,
                    'EvalReader.dataset.dataset_dir=' + missing])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert missing in lines[0] and 'tools/download_widerface.py --out ' + missing in lines[0]
    assert 'make demo' in lines[0] and 'TrainReader.dataset.dataset_dir' in lines[0]
    assert not (tmp_path / 'out').exists()


def _setup(tmp_path, dataset, **values):
    return load_search_config(tiny_config(tmp_path, dataset, **values))


def _problems(setup):
    with pytest.raises(ConfigError) as e:
        check_search_inputs(setup)
    return str(e.value).splitlines()


def test_every_problem_is_a_line_naming_its_key(tmp_path, dataset):
    os.makedirs(tmp_path / 'empty')
    setup = _setup(tmp_path, dataset)
    setup.cfg['TrainReader']['dataset']['dataset_dir'] = str(tmp_path / 'empty')
    setup.cfg['EvalReader']['dataset']['image_dir'] = 'no_images'
    setup.constraint.max_constraint = 57489  # latency microseconds left in place under ctype flops
    lines = _problems(setup)
    assert len(lines) == 3, lines
    assert lines[0].startswith('TrainReader.dataset.anno_path: ') and 'download_widerface.py' in lines[0]
    assert lines[1].startswith('EvalReader.dataset.image_dir: ') and 'no_images' in lines[1]
    assert lines[2].startswith('Constraint.max_constraint 57489 is below the FLOPs of the smallest candidate')
    assert not os.path.exists(setup.cfg['save_dir'])  # nothing is created while something else is wrong


def test_min_constraint_above_the_space(tmp_path, dataset):
    setup = _setup(tmp_path, dataset)
    setup.constraint.min_constraint, setup.constraint.max_constraint = 10 ** 12, None
    assert _problems(setup)[0].startswith('Constraint.min_constraint 1000000000000 is above')


def test_unwritable_save_dir(tmp_path, dataset):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    setup = _setup(tmp_path, dataset, save_dir=str(blocker / 'out'))
    lines = _problems(setup)
    assert len(lines) == 1 and lines[0].startswith('save_dir: cannot write to {}'.format(blocker / 'out'))


def test_a_sound_config_passes_and_gets_its_save_dir(tmp_path, dataset):
    setup = _setup(tmp_path, dataset)
    check_search_inputs(setup)
    assert os.path.isdir(setup.cfg['save_dir']) and os.listdir(setup.cfg['save_dir']) == []


def test_the_original_config_searches_under_the_855_table(tmp_path, dataset):
    """blazeface.yml as shipped (latency, latency_855.txt, 640x640); only the dataset and the run's size change."""
    save_dir = tmp_path / 'out'
    out = _run([os.path.join(REPO, 'train_nas.py'), '-c', BLAZEFACE, '-o', 'save_dir={}'.format(save_dir),
                'server_port={}'.format(free_port()), 'search_steps=1', 'max_iters=2', 'log_iter=1', 'use_gpu=false',
                'TrainReader.dataset.dataset_dir=' + dataset, 'EvalReader.dataset.dataset_dir=' + dataset,
                'TrainReader.batch_size=2', 'TrainReader.worker_num=1'], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(save_dir / 'search_history.csv') as f:
        trained = [line for line in f if ',trained,' in line]
    assert len(trained) == 1 and 18000 <= float(trained[0].split(',')[5]) <= 57489
    assert 'for PaddleDetection 2.x: {}'.format(save_dir / 'best_paddledet.yml') in out.stdout
    assert (save_dir / 'best_paddledet.yml').is_file()


# --- latency bounds: a table's latencies are read from a priced sample of the space
GROUND_TRUTH_TABLE = os.path.join(REPO, 'bench', 'ground_truth_latency.txt')  # a fixed 96x96 table of the demo


def _demo_argv(dataset, save_dir, *overrides):
    return ['-c', os.path.join(REPO, 'demo.yml'), '-o', 'Constraint.table_file={}'.format(GROUND_TRUTH_TABLE),
            'TrainReader.dataset.dataset_dir={}'.format(dataset), 'EvalReader.dataset.dataset_dir={}'.format(dataset),
            'save_dir={}'.format(save_dir), *overrides]


@pytest.mark.parametrize('bounds', [['Constraint.max_constraint=100'],
                                    ['Constraint.min_constraint=100000000']])
def test_latency_bounds_that_admit_nothing_are_one_line_before_anything_runs(tmp_path, dataset, capsys, bounds):
    import train_nas
    from conftest import run_tool_main
    save_dir = str(tmp_path / 'out')
    code, _, err = run_tool_main(train_nas.main, _demo_argv(dataset, save_dir, 'Constraint.max_quantile=null',
                                                            *bounds), capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith('error:')]
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert 'admits 0 of' in lines[0] and 'median' in lines[0] and 'tools/price_arch.py' in lines[0]
    assert 'demo.yml --quantile' in lines[0] and 'max_quantile' in lines[0]
    assert not os.path.exists(save_dir), 'something was started before the bounds were checked'


def test_max_quantile_sets_the_limit_that_admits_that_share_of_the_space(tmp_path):
    from ppdet.core.cli import parse_overrides
    from ppdet.slim.nas.constraint import space_values
    setup = load_search_config(os.path.join(REPO, 'demo.yml'), parse_overrides(
        ['Constraint.table_file={}'.format(GROUND_TRUTH_TABLE)]))
    assert setup.constraint.max_quantile == 0.45 and 'max_constraint {} us'.format(
        setup.constraint.max_constraint) in setup.note
    values = space_values(setup.pricer, setup.constraint)
    share = sum(setup.constraint.admits_value(v) for v in values) / len(values)
    assert share == pytest.approx(0.45, abs=0.01)
    with pytest.raises(ConfigError, match='both max_constraint'):
        load_search_config(os.path.join(REPO, 'demo.yml'), parse_overrides(
            ['Constraint.table_file={}'.format(GROUND_TRUTH_TABLE), 'Constraint.max_constraint=3000']))
    with pytest.raises(ConfigError, match='max_quantile is 45'):
        load_search_config(os.path.join(REPO, 'demo.yml'), parse_overrides(
            ['Constraint.table_file={}'.format(GROUND_TRUTH_TABLE), 'Constraint.max_quantile=45']))
