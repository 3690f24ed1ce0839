"""Export a searched architecture as a Paddle inference model: decoder included, static input [1, 3, H, W].

    python tools/export_model.py -c demo.yml --tokens 2,1,3,8,2,1,2,1,0 --weights OUT/model_final.pdparams \
        --out DIR [--image IMG] [--without-decoder]

H, W are the config's TrainReader.inputs_def.image_shape. DIR/model.json and DIR/model.pdiparams load in
paddle.inference. The model's input is the image after the config's EvalReader preprocessing, resized to H x W;
its outputs are the detections [M, 6] (label, score, x1, y1, x2, y2 normalised to [0, 1]) and the detection
count. --without-decoder saves the raw network (locs [1, P, 4], conf logits [1, P, classes]) and DIR/priors.npy
instead, for runtimes that lack the decoder's ops; with FLAGS_enable_pir_api=0 it is written as model.pdmodel,
the format paddle_lite_opt converts for phones (docs/latency.md). With --image, the saved model is run on that
image with Paddle Inference and compared with the dygraph model.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries(static_graphs=True)  # before paddle is imported (glog reads its level then)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import paddle  # noqa: E402

from ppdet.core.cli import ArgsParser, checked_tokens, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError, build  # noqa: E402
from ppdet.slim.nas.constraint import train_input_size  # noqa: E402
from ppdet.slim.nas.latency import (DeployedBlazeFace, candidate_model, create_predictor,  # noqa: E402
                                    load_table_setup, save_layer)

# Paddle Inference (oneDNN, fused conv+BN) and dygraph differ by float rounding only: boxes and scores agree to
# this absolute tolerance (measured: up to 4e-7).
TOLERANCE = 1e-4


def load_weights(model, path):
    """Set ``model``'s weights from a .pdparams file; any missing or misshaped tensor is a user error, since
    set_state_dict would only warn and keep random weights."""
    if not os.path.isfile(path):
        raise ConfigError('--weights {}: file not found'.format(path))
    try:
        state = paddle.load(path)
    except Exception as e:  # paddle.load raises assorted types on a file that is not a saved state dict
        raise ConfigError('--weights {}: not a Paddle weights file ({})'.format(path, e)) from None
    if not isinstance(state, dict):
        raise ConfigError('--weights {}: holds a {}, not a state dict (.pdparams)'.format(path, type(state).__name__))
    for name, param in model.state_dict().items():
        if name not in state:
            raise ConfigError('--weights {}: no tensor {!r}; were the weights trained with these --tokens?'.format(
                path, name))
        if list(state[name].shape) != list(param.shape):
            raise ConfigError('--weights {}: {!r} has shape {}, these --tokens need {}; were the weights trained '
                              'with these --tokens?'.format(path, name, list(state[name].shape), list(param.shape)))
    model.set_state_dict(state)
    return model


def load_image(path, cfg, height, width):
    """The network input for an image file: resized to the static size, then the config's EvalReader
    preprocessing (decode, channel order, normalisation), exactly as evaluation feeds the model."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError('--image {}: not an image OpenCV can read'.format(path))
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    sample = {'image': cv2.imencode('.png', resized)[1].tobytes(), 'gt_bbox': np.zeros((0, 4), np.float32)}
    for op in build(cfg['EvalReader']['sample_transforms']):
        sample = op(sample)
    return sample['image'][np.newaxis].astype(np.float32)


def run_inference(prefix, image):
    """Detections and counts of the saved model on a [1, 3, H, W] input, through Paddle Inference with its x86
    defaults (oneDNN), as an application loading the export gets it."""
    predictor = create_predictor(prefix, 'cpu', os.cpu_count(), onednn=True)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(image)
    predictor.run()
    return [predictor.get_output_handle(name).copy_to_cpu() for name in predictor.get_output_names()]


def compare(prefix, deployed, image):
    """Paddle Inference's outputs, and their largest absolute difference from the dygraph model's."""
    outputs = run_inference(prefix, image)
    deployed.eval()
    with paddle.no_grad():
        expected = [t.numpy() for t in deployed(paddle.to_tensor(image))]
    if deployed.decoded:
        return outputs, max_difference(outputs[0], expected[0])
    return outputs, max(float(np.abs(got - want).max()) for got, want in zip(outputs, expected))


def max_difference(a, b):
    """Largest difference between two detection sets, each row against its closest row of the other (rows of
    near-equal score may come in either order); inf when the counts differ."""
    if a.shape != b.shape:
        return float('inf')
    if not len(a):
        return 0.0
    pairs = np.abs(a[:, None, :] - b[None, :, :]).max(axis=-1)
    return float(max(pairs.min(axis=1).max(), pairs.min(axis=0).max()))


def save_priors(deployed, height, width, path):
    """The prior boxes [P, 4] an app needs to decode a model exported without the decoder."""
    deployed.eval()
    with paddle.no_grad():
        _, _, priors = deployed.model(paddle.zeros([1, 3, height, width]))
    np.save(path, priors.numpy())


def report(image_path, outputs, diff, decoded):
    result = {'image': image_path, 'max_abs_diff': diff, 'within_tolerance': diff <= TOLERANCE}
    if decoded:
        result.update(detections=len(outputs[0]), top=outputs[0][:5].round(4).tolist())
    else:
        result.update(outputs=[list(o.shape) for o in outputs])
    print(json.dumps(result))
    return diff <= TOLERANCE


def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--tokens', required=True, help='the architecture, comma-separated tokens')
    parser.add_argument('--weights', required=True, help='its trained weights (.pdparams)')
    parser.add_argument('--out', required=True, help='directory for model.json / model.pdiparams')
    parser.add_argument('--image', help='check the export on this image against the dygraph model')
    parser.add_argument('--without-decoder', action='store_true',
                        help='save the raw (locs, confs) network and priors.npy, for runtimes without NMS')
    args = parser.parse_args(argv)
    setup = load_table_setup(args.config, args.opt)
    tokens = checked_tokens(setup, args.tokens)
    height, width = train_input_size(setup.cfg)
    prefix = os.path.join(args.out, 'model')
    decoded = not args.without_decoder

    deployed = DeployedBlazeFace(load_weights(candidate_model(setup.cfg, setup.pricer, tokens), args.weights),
                                 decoded)
    save_layer(deployed, [1, 3, height, width], prefix)
    if not decoded:
        save_priors(deployed, height, width, os.path.join(args.out, 'priors.npy'))
    print('saved {}.* (input [1, 3, {}, {}])'.format(prefix, height, width), flush=True)
    if args.image:
        outputs, diff = compare(prefix, deployed, load_image(args.image, setup.cfg, height, width))
        if not report(args.image, outputs, diff, decoded):
            sys.exit(1)


if __name__ == '__main__':
    run_cli(main)
