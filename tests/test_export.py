"""Exporting a searched architecture: the saved model runs in Paddle Inference and gives dygraph's boxes."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
from paddle import inference

import tools.export_model as export_tool
from conftest import run_tool_main
from ppdet.slim.nas.latency import candidate_model, load_table_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, 'demo.yml')
SIZE = ['-o', 'TrainReader.inputs_def.image_shape=[3,64,64]']
TOKENS = '2,1,3,8,2,1,2,1,0'


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    """Weights whose scores are spread out (random heads scaled down, as a trained net's are: a saturated
    softmax would tie scores and make NMS order arbitrary) and a synthetic image with two face-like blobs."""
    tmp = tmp_path_factory.mktemp('export')
    setup = load_table_setup(DEMO, {'TrainReader.inputs_def.image_shape': [3, 64, 64]})
    model = candidate_model(setup.cfg, setup.pricer, [int(t) for t in TOKENS.split(',')])
    for conv in list(model.loc_convs) + list(model.conf_convs):
        conv.weight.set_value(conv.weight * 0.05)
    weights = str(tmp / 'model_final.pdparams')
    paddle.save(model.state_dict(), weights)
    image = np.full((96, 80, 3), 90, np.uint8)
    cv2.circle(image, (30, 40), 15, (170, 190, 220), -1)
    cv2.rectangle(image, (50, 60), (75, 90), (40, 80, 200), -1)
    image_path = str(tmp / 'faces.png')
    cv2.imwrite(image_path, image)
    return setup, weights, image_path, tmp


def _cli(argv, capsys):
    return run_tool_main(export_tool.main, argv, capsys)


def _by_score(detections):
    return detections[np.argsort(-detections[:, 1], kind='stable')]


def test_exported_model_gives_dygraph_boxes_in_paddle_inference(assets, capsys):
    setup, weights, image_path, tmp = assets
    out_dir = str(tmp / 'exported')
    code, out, _ = _cli(['-c', DEMO, '--tokens', TOKENS, '--weights', weights, '--out', out_dir,
                         '--image', image_path] + SIZE, capsys)
    check = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and check['within_tolerance'] and check['max_abs_diff'] <= export_tool.TOLERANCE
    # independently of the tool: a plain Paddle Inference predictor against the dygraph model
    config = inference.Config(os.path.join(out_dir, 'model.json'), os.path.join(out_dir, 'model.pdiparams'))
    config.disable_gpu()
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    assert handle.shape() == [1, 3, 64, 64]
    image = export_tool.load_image(image_path, setup.cfg, 64, 64)
    handle.copy_from_cpu(image)
    predictor.run()
    detections, counts = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
    model = export_tool.load_weights(candidate_model(setup.cfg, setup.pricer, [2, 1, 3, 8, 2, 1, 2, 1, 0]),
                                     weights)
    model.eval()
    expected, expected_counts = [t.numpy() for t in model.predict(paddle.to_tensor(image))]
    assert 0 < len(detections) == counts[0] == expected_counts[0] and check['detections'] == len(detections)
    np.testing.assert_allclose(_by_score(detections), _by_score(expected), atol=export_tool.TOLERANCE)
    assert len(np.unique(detections[:, 1])) > 1  # real boxes with distinct scores, not one repeated row


def test_detection_sets_are_compared_whatever_the_row_order():
    rows = np.array([[1, .9, .1, .1, .2, .2], [1, .8, .5, .5, .6, .6]], np.float32)
    assert export_tool.max_difference(rows, rows[::-1]) == 0
    assert export_tool.max_difference(rows, rows[:1]) == float('inf')
    moved = rows.copy()
    moved[1, 2] += 0.25
    assert export_tool.max_difference(rows, moved) == pytest.approx(0.25)


@pytest.mark.parametrize('tokens, words', [('2,1,3', ['--tokens', 'expected 9 tokens']),
                                           ('2,1,3,8,2,1,2,1,x', ['--tokens', 'integers']),
                                           ('9,1,3,8,2,1,2,1,0', ['--tokens', 'token 0'])])
def test_bad_tokens_are_one_line_errors(assets, tmp_path, capsys, tokens, words):
    _, weights, _, _ = assets
    code, _, err = _cli(['-c', DEMO, '--tokens', tokens, '--weights', weights, '--out', str(tmp_path)] + SIZE,
                        capsys)
    assert code == 2 and err.count('\n') == 1 and all(w in err for w in words)


@pytest.mark.parametrize('content', [b'not weights at all', None])
def test_files_that_are_not_weights_are_refused(tmp_path, capsys, content):
    path = tmp_path / 'w.pdparams'
    if content is None:
        paddle.save(paddle.ones([2]), str(path))
    else:
        path.write_bytes(content)
    code, _, err = _cli(['-c', DEMO, '--tokens', TOKENS, '--weights', str(path), '--out', str(tmp_path / 'o')] + SIZE,
                        capsys)
    assert code == 2 and err.count('\n') == 1 and str(path) in err and not (tmp_path / 'o').exists()


def test_weights_of_another_architecture_are_refused(assets, tmp_path, capsys):
    _, weights, _, _ = assets
    code, _, err = _cli(['-c', DEMO, '--tokens', '3,1,3,8,2,1,2,1,0', '--weights', weights,
                         '--out', str(tmp_path)] + SIZE, capsys)
    assert code == 2 and err.count('\n') == 1 and 'shape' in err and not os.listdir(tmp_path)


def test_missing_weights_is_a_one_line_error_from_the_command_line(tmp_path):
    missing = str(tmp_path / 'nowhere.pdparams')
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'export_model.py'), '-c', DEMO, '--tokens',
                          TOKENS, '--weights', missing, '--out', str(tmp_path / 'out')] + SIZE,
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
    assert out.returncode == 2 and len(errors) == 1 and missing in errors[0] and 'Traceback' not in out.stderr
    assert not os.path.exists(tmp_path / 'out')


def test_lite_route_legacy_program_without_decoder(assets, tmp_path):
    """paddle_lite_opt reads the legacy ProgramDesc (.pdmodel), which Paddle 3 writes with FLAGS_enable_pir_api=0;
    the decoder does not trace in that mode, so the network goes without it, with its priors beside it."""
    _, weights, image_path, _ = assets
    env = dict(os.environ, FLAGS_enable_pir_api='0')
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'export_model.py'), '-c', DEMO, '--tokens',
                          TOKENS, '--weights', weights, '--out', str(tmp_path), '--image', image_path,
                          '--without-decoder'] + SIZE, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    check = json.loads(out.stdout.strip().splitlines()[-1])
    (_, priors, _), (_, confs, classes) = check['outputs']
    assert check['within_tolerance'] and priors == confs and classes == 2
    assert (tmp_path / 'model.pdmodel').is_file() and not (tmp_path / 'model.json').exists()
    assert np.load(tmp_path / 'priors.npy').shape == (priors, 4)
