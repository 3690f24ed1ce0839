"""A real search: SANAS controller, pricing, training, AP reward, outputs and resume, on a tiny synthetic set."""
import csv
import json
import os

import pytest
import yaml

import train_nas
from conftest import run_tool_main
from search_fixtures import run_search, tiny_config, tiny_dataset
from test_paddledet_interop import FILE_NAME, HELPER, STAND_IN_BASE, _missing_install, run_in_paddledet
from ppdet.slim.nas.report import PADDLEDET_BASE
from search_space.blazefacespace_nas import STRUCTURE_END, STRUCTURE_START


def _history(save_dir):
    with open(os.path.join(save_dir, 'search_history.csv'), newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def finished(tmp_path_factory, dataset):
    """A 3-candidate FLOPs search whose upper bound rejects part of the neighbourhood of the init tokens."""
    tmp = tmp_path_factory.mktemp('search')
    config = tiny_config(tmp, dataset)
    with open(config) as f:
        text = f.read()
    with open(config, 'w') as f:
        f.write(text.replace('max_constraint: 12000000', 'max_constraint: 2700000'))
    out = run_search(config)
    assert out.returncode == 0, out.stderr[-3000:]
    return config, str(tmp / 'out'), out


def test_history_rows_and_statuses(finished):
    config, save_dir, _ = finished
    rows = _history(save_dir)
    trained = [r for r in rows if r['status'] == 'trained']
    skipped = [r for r in rows if r['status'] == 'skipped']
    assert len(trained) == 3, rows
    assert skipped, 'the bounds should reject some sampled candidates'
    assert len(rows) == len(trained) + len(skipped)
    assert [int(r['step']) for r in rows] == list(range(1, len(rows) + 1))
    for r in trained:
        assert 1000000 <= int(r['flops']) <= 2700000
        assert 0.0 <= float(r['ap']) <= 1.0 and float(r['train_seconds']) > 0
        step_dir = '{:04d}_{}'.format(int(r['step']), r['tokens'].replace(' ', '-'))
        assert os.path.isfile(os.path.join(save_dir, 'candidates', step_dir, 'model_final.pdparams'))
    for r in skipped:
        assert not 1000000 <= int(r['flops']) <= 2700000 and r['ap'] == ''
    assert len({r['tokens'] for r in rows}) == len(rows), 'a token vector was sampled twice'


def test_rewards_reach_the_controller(finished):
    _, save_dir, _ = finished
    with open(os.path.join(save_dir, 'sanas.checkpoints')) as f:
        scene = json.load(f)
    trained = [r for r in _history(save_dir) if r['status'] == 'trained']
    best = max(trained, key=lambda r: float(r['ap']))
    assert scene['_iter'] == 3
    assert scene['_best_tokens'] == [int(t) for t in best['tokens'].split()]
    assert scene['_max_reward'] == pytest.approx(float(best['ap']), abs=1e-6)
    for r in trained:
        assert scene['_searched'][str([int(t) for t in r['tokens'].split()])] == pytest.approx(float(r['ap']),
                                                                                             abs=1e-6)


def test_structure_block_and_outputs(finished):
    _, save_dir, out = finished
    lines = out.stdout.splitlines()
    start, end = lines.index(STRUCTURE_START), lines.index(STRUCTURE_END)
    block = yaml.safe_load('\n'.join(lines[start + 1:end]))['BlazeNet']
    with open(os.path.join(save_dir, 'best_structure.yml')) as f:
        assert yaml.safe_load(f)['BlazeNet'] == block
    assert set(block) == {'blaze_filters', 'double_blaze_filters', 'use_5x5kernel', 'with_extra_blocks',
                          'lite_edition'}
    with open(os.path.join(save_dir, 'search_pareto.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'iter: 0, lr: ' in out.stderr and ', eta: ' in out.stderr
    assert 'search step 3/3 | tokens' in out.stderr


def test_paddledet_structure_is_written_and_named(finished):
    _, save_dir, out = finished
    path = os.path.join(save_dir, 'best_paddledet.yml')
    assert 'for PaddleDetection 2.x: {}'.format(path) in out.stdout
    with open(path) as f:
        override = yaml.safe_load(f)
    with open(os.path.join(save_dir, 'best_structure.yml')) as f:
        searched = yaml.safe_load(f)['BlazeNet']
    assert override['BlazeNet']['double_blaze_filters'] == searched['double_blaze_filters']
    channels = [searched['double_blaze_filters'][0][2], searched['double_blaze_filters'][3][2]]
    assert override['BlazeNeck']['in_channel'] == override['FaceHead']['in_channels'] == channels


def test_the_searched_structure_builds_in_paddledet(finished, tmp_path):
    """The file a real search wrote, as a user copies it into PaddleDetection, built and run by its own code."""
    if _missing_install():
        pytest.fail(_missing_install(), pytrace=False)
    _, save_dir, _ = finished
    with open(os.path.join(save_dir, 'best_paddledet.yml')) as f:
        (tmp_path / FILE_NAME).write_text(f.read())
    (tmp_path / PADDLEDET_BASE).write_text(STAND_IN_BASE)
    result = run_in_paddledet(HELPER, ['64', '64', str(tmp_path / FILE_NAME)], str(tmp_path))['results'][0]
    assert result['ok'], result
    override = yaml.safe_load((tmp_path / FILE_NAME).read_text())
    assert [m['channels'] for m in result['features']] == override['BlazeNeck']['in_channel']
    assert [m['stride'] for m in result['features']] == [[8.0, 8.0], [16.0, 16.0]]


@pytest.mark.parametrize('noise', ['No ccache found', 'Setuptools is replacing distutils', 'pir_interpreter',
                                   'If regularizer of a Parameter', 'UserWarning'])
def test_no_library_noise_in_the_log(finished, noise):
    _, _, out = finished
    assert noise not in out.stderr and noise not in out.stdout
    assert not any(line[:1] == 'I' and line[1:5].isdigit() for line in out.stderr.splitlines())  # glog INFO


def test_resume_appends_rows(finished):
    config, save_dir, _ = finished
    before = _history(save_dir)
    out = run_search(config, '-r', save_dir, '-o', 'search_steps=4')
    assert out.returncode == 0, out.stderr[-3000:]
    after = _history(save_dir)
    assert after[:len(before)] == before
    assert len([r for r in after if r['status'] == 'trained']) == 4
    with open(os.path.join(save_dir, 'sanas.checkpoints')) as f:
        assert json.load(f)['_iter'] == 4


def test_config_mistake_is_one_line(tmp_path, dataset, capsys):
    code, _, err = run_tool_main(train_nas.main, ['-c', tiny_config(tmp_path, dataset, search_steps=0)], capsys)
    assert code == 2 and 'Traceback' not in err
    assert 'search_steps' in err.strip().splitlines()[-1]
