"""best_paddledet.yml builds, runs, trains, evaluates and exports in PaddleDetection 2.x itself (the paddledet 2.6.0
wheel, with the Paddle 3 fixes of paddledet-2.6.0-paddle3.patch that the Makefile applies).

The emitted files are loaded, built and run by tests/helpers/paddledet_build.py in a subprocess whose ``ppdet`` is
PaddleDetection's (``make test`` installs it in .venv/paddledet), never this repo's. The wheel ships no configs/,
so each file gets a stand-in ``blazeface_1000e.yml`` beside it (STAND_IN_BASE): PaddleDetection's own ``_BASE_``
merge runs, over the stock BlazeFace values the override has to replace. The training test's stand-in also has the
data, reader, optimizer and runtime sections of 2.6's configs/face_detection chain (STAND_IN_TRAINING), and runs
PaddleDetection's Trainer (tests/helpers/paddledet_train.py) as the README's recipe does: train, eval, export; the
exported model then runs in Paddle Inference in this process. The whole file: 50 to 80 s on 2 shared cores.
"""
import json
import os
import signal
import subprocess

import cv2
import numpy as np
import paddle
import pytest
import yaml

import tools.eval_widerface as eval_widerface
from ppdet.utils import synthetic
from ppdet.modeling.architectures.blazeface import BlazeFace
from ppdet.modeling.backbones.blazenet import BlazeNet, blazenet_plan
from ppdet.slim.nas.latency import create_predictor
from ppdet.slim.nas.report import (PADDLEDET_BASE, PADDLEDET_NAME, paddledet_feature_channels, paddledet_override,
                                   write_paddledet_override)
from search_space.blazefacespace_nas import BlazeFaceNasSpace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
PADDLEDET_DIR = os.path.join(REPO, '.venv', 'paddledet')
HELPER = os.path.join(REPO, 'tests', 'helpers', 'paddledet_build.py')
TRAIN_HELPER = os.path.join(REPO, 'tests', 'helpers', 'paddledet_train.py')
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

# The rest of 2.6's chain (datasets/wider_face.yml, runtime.yml, _base_/optimizer_1000e.yml, _base_/face_reader.yml,
# blazeface_1000e.yml's multi_scale_eval; the train list abbreviated, since the file replaces it), with dataset_dir
# where the README's recipe puts the data.
STAND_IN_TRAINING = """\
metric: WiderFace
TrainDataset:
  !WIDERFaceDataSet
    dataset_dir: dataset/wider_face
    anno_path: wider_face_split/wider_face_train_bbx_gt.txt
    image_dir: WIDER_train/images
    data_fields: ['image', 'gt_bbox', 'gt_class']
EvalDataset:
  !WIDERFaceDataSet
    dataset_dir: dataset/wider_face
    anno_path: wider_face_split/wider_face_val_bbx_gt.txt
    image_dir: WIDER_val/images
    data_fields: ['image']
TestDataset: !ImageFolder {use_default_label: true}
use_gpu: true
log_iter: 20
save_dir: output
snapshot_epoch: 1
epoch: 1000
multi_scale_eval: true
LearningRate:
  base_lr: 0.001
  schedulers:
  - !PiecewiseDecay {gamma: 0.1, milestones: [333, 800]}
  - !LinearWarmup {start_factor: 0.3333333333333333, steps: 500}
OptimizerBuilder:
  optimizer: {momentum: 0.0, type: RMSProp}
  regularizer: {factor: 0.0005, type: L2}
worker_num: 2
TrainReader:
  inputs_def: {num_max_boxes: 90}
  sample_transforms:
  - Decode: {}
  - Resize: {target_size: [640, 640], keep_ratio: false, interp: 1}
  - NormalizeBox: {}
  - PadBox: {num_max_boxes: 90}
  batch_transforms:
  - NormalizeImage: {mean: [123, 117, 104], std: [127.502231, 127.502231, 127.502231], is_scale: false}
  - Permute: {}
  batch_size: 8
  shuffle: true
  drop_last: true
EvalReader:
  sample_transforms:
  - Decode: {}
  - NormalizeImage: {mean: [123, 117, 104], std: [127.502231, 127.502231, 127.502231], is_scale: false}
  - Permute: {}
  batch_size: 1
TestReader:
  sample_transforms:
  - Decode: {}
  - NormalizeImage: {mean: [123, 117, 104], std: [127.502231, 127.502231, 127.502231], is_scale: false}
  - Permute: {}
  batch_size: 1
"""
DEMO_MIN_SIZES = [[12., 20.], [24., 32., 40., 48., 64., 80.]]  # demo.yml's BlazeFace.min_sizes, at 96 px
# The README's options for 2.6 on a CPU (use_gpu, save_dir, multi_scale_eval), then what keeps the test short.
TRAIN_OPTIONS = ['use_gpu=false', 'save_dir=output', 'multi_scale_eval=false', 'epoch=8', 'worker_num=0', 'log_iter=1']
PHOTO_SIZE = (320, 240)  # (width, height): the exported model is fed a photo of another size and aspect than 96 px

SPACE = BlazeFaceNasSpace()
STRUCTURES = {
    'published_5x5': [2, 1, 3, 8, 2, 1, 2, 1, 1],
    'published_3x3': [2, 1, 3, 8, 2, 1, 2, 1, 0],
    'smallest': [0] * 9,
    'largest': [r - 1 for r in SPACE.range_table()],
}
SIZES = [640, 96]
NEGATIVE_SIZE = 96
# searched with BlazeNet: {topology: paddledet} (the network 2.x builds): the file must build exactly that network
TOPOLOGY_CASES = {'published_5x5_topology_paddledet': STRUCTURES['published_5x5'],
                  'largest_topology_paddledet': STRUCTURES['largest']}


def _write_case(root, case, tokens, size, edit=None, **blazenet):
    folder = os.path.join(str(root), '{}_{}'.format(case, size))
    os.makedirs(folder)
    path = os.path.join(folder, FILE_NAME)
    with open(path, 'w') as f:
        f.write(paddledet_override(tokens, dict(SPACE.blazenet_args(tokens), **blazenet), 0.5, (size, size)))
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


def run_in_paddledet(helper, args, cwd, timeout=300):
    """A helper script in its own process group, outside the repo, with only PaddleDetection on PYTHONPATH (its
    package is also called ppdet); returns the one JSON line it prints."""
    env = dict(os.environ, PYTHONPATH=PADDLEDET_DIR, PYTHONDONTWRITEBYTECODE='1')
    proc = subprocess.Popen([VENV_PYTHON, helper] + args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
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
            cases += [(case, _write_case(root, case, tokens, size, topology='paddledet'))
                      for case, tokens in TOPOLOGY_CASES.items()]
        out = run_in_paddledet(HELPER, [str(size), str(size)] + [p for _, p in cases], str(root), timeout=240)
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
    assert (r['filename'], r['weights']) == (PADDLEDET_NAME, 'output/{}/model_final'.format(PADDLEDET_NAME))
    assert r['num_classes'] == 1 and r['head_num_priors'] == [2, 6]
    cells = [(size // 8) ** 2 * 2, (size // 16) ** 2 * 6]
    assert r['head'] == {'boxes': [[1, n, 4] for n in cells], 'scores': [[1, n, 2] for n in cells],
                         'priors': [[n, 4] for n in cells]}


def _parameter_count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


@pytest.mark.parametrize('case', sorted(TOPOLOGY_CASES))
def test_the_paddledet_topology_file_builds_the_searched_network(built, case):
    """A search with BlazeNet: {topology: paddledet} writes a file whose network is the searched one: the maps of
    the same blocks, the same 5x5 depthwise convs, the same parameters as the model the search trained (every
    trainable parameter; 2.x's head shapes are this project's). tests/test_blazenet_topology.py checks the
    backbones' outputs on the same weights."""
    path, r = _result(built, case, NEGATIVE_SIZE)
    assert r['ok'], '{}: {} failed: {}\n{}'.format(case, r['stage'], r['error'], r.get('traceback'))
    tokens = TOPOLOGY_CASES[case]
    args = dict(SPACE.blazenet_args(tokens), topology='paddledet')
    with open(path) as f:
        text = f.read()
    assert 'the network it built, priced and trained is' in text and 'the search took it after' not in text
    assert [m['channels'] for m in r['features']] == blazenet_plan(**args).feature_channels
    assert r['kernel_sizes'] == [5] and r['double_pw_act'] == ['relu']
    paddle.seed(0)
    searched = _parameter_count(BlazeFace(BlazeNet(**args)))
    original = _parameter_count(BlazeFace(BlazeNet(**SPACE.blazenet_args(tokens))))
    assert r['params'] == searched < original  # the original's dense second 5x5 convs are not in 2.x


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


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The README's recipe in a PaddleDetection-like folder: the file a demo-like search writes (96 px, the demo's
    priors) in configs/face_detection/, tiny synthetic data with its .mat ground truth in dataset/wider_face, then
    PaddleDetection 2.6's train, eval and export; returns (workdir, helper result)."""
    if _missing_install():
        pytest.fail(_missing_install(), pytrace=False)
    work = tmp_path_factory.mktemp('paddledet_train')
    configs = work / 'configs' / 'face_detection'
    configs.mkdir(parents=True)
    tokens = STRUCTURES['published_3x3']
    cfg = {'TrainReader': {'inputs_def': {'image_shape': [3, 96, 96]}}, 'BlazeFace': {'min_sizes': DEMO_MIN_SIZES}}
    assert write_paddledet_override(str(configs / FILE_NAME), tokens, SPACE.blazenet_args(tokens), 0.5, cfg)
    (configs / PADDLEDET_BASE).write_text(STAND_IN_BASE + STAND_IN_TRAINING)
    data = work / 'dataset' / 'wider_face'
    # the demo's scenes: with this seed one val image has no face, which 2.6's eval reads only when patched
    synthetic.make_dataset(str(data), train=16, val=6, size=96, seed=0, workers=1, scenes=('empty', 'portraits'),
                           clutter='none')
    val = sorted((data / 'WIDER_val' / 'images').glob('*/*.jpg'))
    cv2.imwrite(str(work / 'photo.jpg'), cv2.resize(cv2.imread(str(val[0])), PHOTO_SIZE))
    env = dict(os.environ, PYTHONPATH=PADDLEDET_DIR, PYTHONDONTWRITEBYTECODE='1')
    proc = subprocess.run([VENV_PYTHON, TRAIN_HELPER, str(configs / FILE_NAME), str(work / 'photo.jpg')]
                          + TRAIN_OPTIONS, cwd=str(work), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, json.loads(proc.stdout.strip().splitlines()[-1])


def test_paddledet_trains_the_file_at_the_searched_size(trained):
    work, r = trained
    assert r['ppdet'].startswith(os.path.realpath(PADDLEDET_DIR) + os.sep)
    losses = r['losses']
    assert len(losses) == 16  # 8 epochs of 16 images in batches of 8
    assert max(losses[-4:]) < min(losses[:2]), losses  # learning, not noise
    # train wrote the checkpoint where the file's weights (what eval, infer and export load) point
    assert r['checkpoint'] == 'output/{}/model_final.pdparams'.format(PADDLEDET_NAME)
    assert (work / r['checkpoint']).is_file()


def test_paddledet_evaluates_the_three_wider_face_aps(trained):
    work, r = trained
    truth = eval_widerface.load_ground_truth(str(work / 'dataset' / 'wider_face' / 'WIDER_val' / 'ground_truth'))
    assert len(truth) == 6 and any(not len(boxes) for boxes, _ in truth.values()), truth  # an image with no face
    assert r['pred_files'] == 6  # one prediction file per val image, in output/pred/<event>/
    aps = eval_widerface.evaluate(eval_widerface.read_predictions(str(work / 'output' / 'pred'), truth), truth)
    assert sorted(aps) == ['easy', 'hard', 'medium']
    assert all(0.0 <= ap <= 1.0 for ap in aps.values()), aps


def test_paddledet_export_runs_in_paddle_inference(trained):
    """2.6's export wrote a model that Paddle Inference (this project's predictor settings) runs on a photo-sized
    input, giving the trained model's detections, in the photo's coordinates (BlazeFace's post-process decodes to
    the original size and, unlike BBoxPostProcess.get_pred, does not clip)."""
    work, r = trained
    assert r['exported'] == os.path.join('output_inference', PADDLEDET_NAME)
    ref = dict(np.load(str(work / r['reference'])))
    width, height = PHOTO_SIZE
    assert ref['image'].shape == (1, 3, 96, 96)  # TestReader resized the photo to the searched size
    np.testing.assert_allclose(ref['scale_factor'], [[96 / height, 96 / width]], rtol=1e-6)
    predictor = create_predictor(str(work / r['exported'] / 'model'))
    assert sorted(predictor.get_input_names()) == ['im_shape', 'image', 'scale_factor']
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(ref[name])
    predictor.run()
    bbox, bbox_num = (predictor.get_output_handle(name).copy_to_cpu() for name in predictor.get_output_names())
    assert bbox.shape == (bbox_num[0], 6) and ref['bbox'].shape == (ref['bbox_num'][0], 6)
    # the exported model is the trained one: the same boxes, each of the trained model's 10 best found (class,
    # score, corners); the count may differ by a box whose score or overlap sits on an NMS threshold
    assert abs(int(bbox_num[0]) - int(ref['bbox_num'][0])) <= 2 and ref['bbox_num'][0] >= 10, (bbox_num, ref)
    for box in ref['bbox'][:10]:
        assert np.abs(bbox - box).max(1).min() < 1e-2, (box, bbox[:10])
    classes, scores, x1, y1, x2, y2 = bbox.T
    assert (classes == 0).all() and ((scores > 0) & (scores <= 1)).all()
    assert ((x1 < x2) & (y1 < y2)).all(), bbox
    centres = np.stack([(x1 + x2) / 2, (y1 + y2) / 2], 1)
    assert (0 < np.median(centres, 0)).all() and (np.median(centres, 0) < PHOTO_SIZE).all(), centres
    assert centres[:, 0].max() > 96 and centres[:, 1].max() > 96, centres  # scaled back from the 96 px input
