"""best_paddledet.yml builds and runs in PaddleDetection 2.x itself (the published paddledet 2.6.0 wheel).

The emitted files are loaded, built and run by tests/helpers/paddledet_build.py in a subprocess whose ``ppdet`` is
PaddleDetection's (``make test`` installs it in .venv/paddledet), never this repo's. The wheel ships no configs/,
so each file gets a stand-in ``blazeface_1000e.yml`` beside it (STAND_IN_BASE): PaddleDetection's own ``_BASE_``
merge runs, over the stock BlazeFace values the override has to replace.
"""
import json
import os
import signal
import subprocess

import pytest
import yaml

from ppdet.modeling.backbones.blazenet import blazenet_plan
from ppdet.slim.nas.report import PADDLEDET_BASE, paddledet_feature_channels, write_paddledet_override
from search_space.blazefacespace_nas import BlazeFaceNasSpace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
PADDLEDET_DIR = os.path.join(REPO, '.venv', 'paddledet')
HELPER = os.path.join(REPO, 'tests', 'helpers', 'paddledet_build.py')
FILE_NAME = 'blazeface_nas_best.yml'  # the name the file's own comment tells users to save it under

# What configs/face_detection/blazeface_1000e.yml brings that matters to the model, with the values PaddleDetection
# develop has in datasets/wider_face.yml, blazeface_1000e.yml and _base_/blazeface.yml (the stock BlazeFace
# structure included, so the override must replace it). Datasets, readers, optimizer and runtime are left out.
STAND_IN_BASE = """\
num_classes: 1
weights: output/blazeface_1000e/model_final
architecture: BlazeFace
BlazeFace: {backbone: BlazeNet, neck: BlazeNeck, blaze_head: FaceHead, post_process: BBoxPostProcess}
BlazeNet:
  blaze_filters: [[24, 24], [24, 24], [24, 48, 2], [48, 48], [48, 48]]
  double_blaze_filters: [[48, 24, 96, 2], [96, 24, 96], [96, 24, 96], [96, 24, 96, 2], [96, 24, 96], [96, 24, 96]]
  act: relu
BlazeNeck: {neck_type: None, in_channel: [96, 96]}
FaceHead: {in_channels: [96, 96], anchor_generator: AnchorGeneratorSSD, loss: SSDLoss}
SSDLoss: {overlap_threshold: 0.35}
AnchorGeneratorSSD:
  steps: [8., 16.]
  aspect_ratios: [[1.], [1.]]
  min_sizes: [[16., 24.], [32., 48., 64., 80., 96., 128.]]
  max_sizes: [[], []]
  offset: 0.5
  flip: false
  min_max_aspect_ratios_order: false
BBoxPostProcess:
  decode: {name: SSDBox}
  nms: {name: MultiClassNMS, keep_top_k: 750, score_threshold: 0.01, nms_threshold: 0.3, nms_top_k: 5000}
"""

SPACE = BlazeFaceNasSpace()
STRUCTURES = {
    'published_5x5': [2, 1, 3, 8, 2, 1, 2, 1, 1],
    'published_3x3': [2, 1, 3, 8, 2, 1, 2, 1, 0],
    'smallest': [0] * 9,
    'largest': [r - 1 for r in SPACE.range_table()],
}
SIZES = [640, 96]
NEGATIVE_SIZE = 96


def _write_case(root, case, tokens, size, edit=None):
    folder = os.path.join(str(root), '{}_{}'.format(case, size))
    os.makedirs(folder)
    path = os.path.join(folder, FILE_NAME)
    assert write_paddledet_override(path, tokens, SPACE.blazenet_args(tokens), 0.5, (size, size))
    if edit:
        with open(path) as f:
            text = f.read()
        old, new = edit
        assert text.count(old) == 1, (old, text)
        with open(path, 'w') as f:
            f.write(text.replace(old, new))
    with open(os.path.join(folder, PADDLEDET_BASE), 'w') as f:
        f.write(STAND_IN_BASE)
    return path


def _run_helper(size, paths, cwd):
    """The helper in its own process group, outside the repo, with only PaddleDetection on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=PADDLEDET_DIR, PYTHONDONTWRITEBYTECODE='1')
    proc = subprocess.Popen([VENV_PYTHON, HELPER, str(size), str(size)] + paths, cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    lines = out.strip().splitlines()
    assert len(lines) == 1, out[-4000:]
    return json.loads(lines[0])


def _missing_install():
    marker = os.path.join(PADDLEDET_DIR, '.installed')
    if not (os.access(VENV_PYTHON, os.X_OK) and os.path.isfile(marker)
            and os.path.isfile(os.path.join(PADDLEDET_DIR, 'ppdet', 'core', 'workspace.py'))):
        return ('PaddleDetection (paddledet, requirements-paddledet.txt) is not installed in {}: run `make test` '
                '(it installs it before running the tests)'.format(PADDLEDET_DIR))
    return None


def _result(built, case, size):
    if _missing_install():
        pytest.fail(_missing_install(), pytrace=False)  # a failure, never a skip
    return built[case, size]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """{(case, size): (emitted file, helper result)}: one helper run per input size (none without the install)."""
    if _missing_install():
        return {}
    root = tmp_path_factory.mktemp('paddledet')
    published = STRUCTURES['published_5x5']
    channels = paddledet_feature_channels(blazenet_plan(**SPACE.blazenet_args(published)))
    negatives = {  # the stride-8 and stride-16 channels in the wrong order, in one key or the other
        'swapped_neck_in_channel': ('  in_channel: {}'.format(channels), '  in_channel: {}'.format(channels[::-1])),
        'swapped_head_in_channels_only': ('  in_channels: {}'.format(channels),
                                          '  in_channels: {}'.format(channels[::-1])),
    }
    results = {}
    for size in SIZES:
        cases = [(case, _write_case(root, case, tokens, size)) for case, tokens in STRUCTURES.items()]
        if size == NEGATIVE_SIZE:
            cases += [(case, _write_case(root, case, published, size, edit)) for case, edit in negatives.items()]
        out = _run_helper(size, [p for _, p in cases], str(root))
        assert out['ppdet'].startswith(os.path.realpath(PADDLEDET_DIR) + os.sep), out['ppdet']
        assert out['input'] == [size, size] and int(out['numpy'].split('.')[0]) < 2
        assert [r['config'] for r in out['results']] == [os.path.abspath(p) for _, p in cases]
        for (case, path), result in zip(cases, out['results']):
            results[case, size] = path, result
    return results


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('case', sorted(STRUCTURES))
def test_paddledet_builds_and_runs_the_emitted_file(built, case, size):
    path, r = _result(built, case, size)
    assert r['ok'], '{} at {}: {} failed: {}\n{}'.format(case, size, r['stage'], r['error'], r.get('traceback'))
    args = SPACE.blazenet_args(STRUCTURES[case])
    ours = blazenet_plan(**args).feature_channels
    with open(path) as f:
        written = yaml.safe_load(f)
    # the two feature maps PaddleDetection's BlazeNet produced, as written in the file and as our plan says
    assert [m['channels'] for m in r['features']] == written['BlazeNeck']['in_channel'] == ours
    assert written['FaceHead']['in_channels'] == ours == r['head_in_channels'] == r['backbone_out_shape']
    assert [m['stride'] for m in r['features']] == [[8.0, 8.0], [16.0, 16.0]]
    assert [m['shape'] for m in r['features']] == [[size // 8] * 2, [size // 16] * 2]
    # every key as PaddleDetection read it, over the stand-in base's stock BlazeFace values
    assert (r['blocks'], r['double_blocks']) == (7, 4)
    assert r['kernel_sizes'] == ([5] if args['use_5x5kernel'] else [3])
    assert r['double_pw_act'] == ['relu'] and r['single_pw_act'] == ['None']
    assert r['neck_type'] == 'None' and r['neck_passes_through'] and r['neck_features'] == r['features']
    assert (r['filename'], r['weights']) == ('blazeface_nas_best', 'output/blazeface_nas_best/model_final')
    assert r['num_classes'] == 1 and r['head_num_priors'] == [2, 6]
    cells = [(size // 8) ** 2 * 2, (size // 16) ** 2 * 6]
    assert r['head'] == {'boxes': [[1, n, 4] for n in cells], 'scores': [[1, n, 2] for n in cells],
                         'priors': [[n, 4] for n in cells]}


def test_a_wrong_neck_in_channel_fails_in_paddledet(built):
    """The check has teeth: the head follows BlazeNeck.in_channel, so swapped channels break the forward pass."""
    _, r = _result(built, 'swapped_neck_in_channel', NEGATIVE_SIZE)
    assert not r['ok'] and r['stage'] == 'forward', r
    assert 'channel' in r['error'].lower(), r['error']


def test_paddledet_ignores_the_head_in_channels_key(built):
    """FaceHead.from_config replaces FaceHead.in_channels by the neck's out_shape: the key is only for reading."""
    _, r = _result(built, 'swapped_head_in_channels_only', NEGATIVE_SIZE)
    assert r['ok'], r
    assert r['config_head_in_channels'] == r['head_in_channels'][::-1] == r['config_neck_in_channel'][::-1]
