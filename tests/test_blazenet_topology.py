"""BlazeNet.topology: the original's network (default) or the one PaddleDetection 2.x builds (``paddledet``).

The 2.x topology is checked against PaddleDetection 2.6's own BlazeNet (the paddledet wheel in .venv/paddledet, run
in a subprocess by tests/helpers/paddledet_blazenet.py, since its package is also named ``ppdet``): the same weights
and input give the same two feature maps. Then: the search prices what it builds under the key, the default is the
original's, and the emitted structure files carry the key.
"""
import json
import os

import numpy as np
import paddle
import pytest
import yaml

import tools.price_arch as price_tool
from conftest import run_tool_main
from ppdet.core.workspace import ConfigError
from ppdet.modeling.backbones.blazenet import BlazeNet, blazenet_plan
from ppdet.slim.nas.candidate import CandidateTrainer
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.report import paddledet_override, searched_args, write_best_structure
from search_space import BlazeFaceNasSpace
from search_space.blazefacespace_nas import STRUCTURE_END, structure_block
from test_paddledet_interop import PADDLEDET_DIR, _missing_install, run_in_paddledet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, 'tests', 'helpers', 'paddledet_blazenet.py')
SPACE = BlazeFaceNasSpace()
PUBLISHED_5X5 = [2, 1, 3, 8, 2, 1, 2, 1, 1]
PUBLISHED_3X3 = [2, 1, 3, 8, 2, 1, 2, 1, 0]
# token vectors with and without 5x5 kernels, from the smallest to the largest candidate
CASES = {
    'published_5x5': PUBLISHED_5X5,
    'published_3x3': PUBLISHED_3X3,
    'smallest_3x3': [0] * 9,
    'largest_5x5': [r - 1 for r in SPACE.range_table()],
    'mixed_5x5': [5, 6, 2, 10, 4, 0, 3, 5, 1],
}
# the same network with the original's topology: with 3x3 kernels the weights fit (only the stride-8 tap differs);
# with 5x5 kernels its dense second 5x5 conv cannot take 2.x's depthwise weights at all
ORIGINAL_CASES = {'original_3x3': PUBLISHED_3X3, 'original_dense_5x5': PUBLISHED_5X5}
IMAGE_SHAPE = (2, 3, 40, 56)  # odd sizes after three halvings: the ceil-mode shortcut pools and the paddings count


def _randomised(net, seed):
    """``net`` with its convs' initial weights and random batch-norm scales, shifts and statistics (eval mode uses
    the statistics, so they must not be the trivial 0 and 1)."""
    rng = np.random.RandomState(seed)
    state = {}
    for key, value in net.state_dict().items():
        shape = value.shape
        if key.endswith('_variance'):
            state[key] = rng.uniform(0.5, 2.0, shape).astype('float32')
        elif key.endswith('_mean') or key.endswith('.bias'):
            state[key] = rng.normal(0.0, 0.3, shape).astype('float32')
        elif len(shape) == 1:  # batch-norm scale
            state[key] = rng.uniform(0.5, 1.5, shape).astype('float32')
        else:
            state[key] = value.numpy()
    net.set_state_dict(state)
    return net


def _paddledet_kwargs(args):
    """The BlazeNet keys best_paddledet.yml gives PaddleDetection for these arguments."""
    return {'blaze_filters': args['blaze_filters'], 'double_blaze_filters': args['double_blaze_filters'],
            'use_5x5kernel': args['use_5x5kernel'], 'act': 'relu'}


@pytest.fixture(scope='module')
def compared(tmp_path_factory):
    """{case: (our two maps, PaddleDetection's result, its maps)}: one helper run for every case."""
    if _missing_install():
        pytest.fail(_missing_install(), pytrace=False)  # a failure, never a skip
    folder = str(tmp_path_factory.mktemp('paddledet_blazenet'))
    image = np.random.RandomState(0).uniform(-1, 1, IMAGE_SHAPE).astype('float32')
    ours = {}
    cases = [(name, tokens, 'paddledet') for name, tokens in CASES.items()]
    cases += [(name, tokens, 'original') for name, tokens in ORIGINAL_CASES.items()]
    for i, (name, tokens, topology) in enumerate(cases):
        args = SPACE.blazenet_args(tokens)
        paddle.seed(i)
        net = _randomised(BlazeNet(**args, topology=topology), seed=i).eval()
        with paddle.no_grad():
            ours[name] = [f.numpy() for f in net(paddle.to_tensor(image))]
        weights = {'w{:04d}'.format(k): v.numpy() for k, v in enumerate(net.state_dict().values())}
        np.savez(os.path.join(folder, name + '.npz'), image=image, **weights)
        with open(os.path.join(folder, name + '.json'), 'w') as f:
            json.dump(_paddledet_kwargs(args), f)
    out = run_in_paddledet(HELPER, [folder] + [name for name, _, _ in cases], folder)
    assert out['ppdet'].startswith(os.path.realpath(PADDLEDET_DIR) + os.sep), out['ppdet']
    results = {}
    for name, _, _ in cases:
        r = out['cases'][name]
        theirs = None
        if r['ok']:
            data = np.load(os.path.join(folder, name + '.out.npz'))
            theirs = [data['f{}'.format(i)] for i in range(len(data.files))]
        results[name] = ours[name], r, theirs
    return results


@pytest.mark.parametrize('case', sorted(CASES))
def test_paddledet_topology_is_paddledetection_2x_blazenet(compared, case):
    """Same weights, same input, eval mode: both feature maps of PaddleDetection 2.6's BlazeNet, to float32
    rounding."""
    ours, r, theirs = compared[case]
    assert r['ok'], '{}: {}\n{}'.format(case, r['error'], r.get('traceback'))
    assert len(theirs) == len(ours) == 2
    h, w = IMAGE_SHAPE[2:]
    assert [list(f.shape[2:]) for f in ours] == [[-(-h // 8), -(-w // 8)], [-(-h // 16), -(-w // 16)]]
    for mine, its in zip(ours, theirs):
        assert mine.shape == its.shape
        assert np.abs(mine).max() > 0.1  # the maps carry signal, not ReLU-zeroed noise
        np.testing.assert_allclose(mine, its, rtol=1e-5, atol=1e-5)


def test_the_original_topology_is_not_paddledetection_2x(compared):
    """The check has teeth: with 3x3 kernels the original's weights load into 2.x, and the stride-16 map agrees,
    but its stride-8 map is another block's (same shape); with 5x5 kernels the dense conv's weights do not fit."""
    ours, r, theirs = compared['original_3x3']
    assert r['ok'], r
    assert ours[0].shape == theirs[0].shape and not np.allclose(ours[0], theirs[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-5)
    _, r, _ = compared['original_dense_5x5']
    assert not r['ok'] and 'shape' in r['error'] and '2_dw' in r['error'], r


def _config(tmp_path, blazenet='', ctype='flops', size=(64, 96), name='c.yml'):
    text = 'Constraint: {{ctype: {}}}\nTrainReader: {{inputs_def: {{image_shape: [3, {}, {}]}}}}\n'.format(ctype, *size)
    if blazenet:
        text += 'BlazeNet: {{{}}}\n'.format(blazenet)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _conv_flops_run(model, size):
    """FLOPs (the constraint's convention: convs only, no bias) of the convs a real forward pass runs."""
    flops = []

    def hook(layer, inputs, output):
        n, c_out, h, w = output.shape
        k = layer._kernel_size
        flops.append(h * w * c_out * k[0] * k[1] * (layer._in_channels // layer._groups))
    handles = [m.register_forward_post_hook(hook) for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D)]
    model.eval()
    with paddle.no_grad():
        model(paddle.rand([1, 3, *size]))
    for h in handles:
        h.remove()
    return sum(flops)


@pytest.mark.parametrize('tokens', [PUBLISHED_5X5, PUBLISHED_3X3, CASES['mixed_5x5']])
def test_the_key_prices_what_the_search_builds(tmp_path, tokens):
    """From the config's BlazeNet section to the price and to the model a candidate trains: the same network."""
    size = (64, 96)
    prices, built = {}, {}
    for topology in ('original', 'paddledet'):
        setup = load_search_config(_config(tmp_path, 'topology: {}'.format(topology), size=size,
                                           name=topology + '.yml'))
        kwargs = setup.pricer.blazenet_kwargs(tokens)
        assert kwargs['topology'] == topology
        model = CandidateTrainer(setup.cfg).build(kwargs)  # what a search step trains
        assert model.backbone.plan == blazenet_plan(**kwargs) and model.backbone.plan.topology == topology
        price = setup.pricer.price(tokens)
        state = sum(int(np.prod(v.shape)) for v in model.state_dict().values())
        assert price.flops == _conv_flops_run(model, size) and price.params == state
        prices[topology], built[topology] = price, model
    original, paddledet = prices['original'], prices['paddledet']
    if tokens[8]:  # 5x5: 2.x's depthwise second 5x5 conv of each double block is cheaper than the original's dense
        plan = built['original'].backbone.plan
        dense = [c for b in plan.blocks for c in b.branch if c.kernel == 5 and c.groups == 1]
        assert len(dense) == 4
        saved = sum(c.out_channels * (c.in_channels - 1) * 25 for c in dense)
        assert original.params - paddledet.params == saved
        assert original.flops > paddledet.flops
    else:  # 3x3: the same convs; only which map feeds the stride-8 head differs (same channels and size)
        assert (original.flops, original.params) == (paddledet.flops, paddledet.params)
    taps = [m.backbone.plan.feature_blocks for m in (built['original'], built['paddledet'])]
    assert taps == [(4, 6), (3, 6)]  # after double_blaze_filters[1] / [0]


def test_default_is_the_originals(tmp_path):
    args = SPACE.blazenet_args(PUBLISHED_5X5)
    plan = BlazeNet(**args).plan
    # the original's taps: the input of the last stride-2 double block (double_blaze_1's output) and the last map
    assert plan.topology == 'original' and plan.feature_blocks == (4, 6)
    assert [plan.blocks[i].name for i in plan.feature_blocks] == ['double_blaze_1', 'double_blaze_3']
    assert plan.dense_5x5 and plan == blazenet_plan(**args, topology='original', dense_double_5x5=True)
    # a config without the key prices and builds the same
    setup = load_search_config(_config(tmp_path))
    assert 'topology' not in setup.pricer.blazenet_kwargs(PUBLISHED_5X5)
    explicit = load_search_config(_config(tmp_path, 'topology: original', name='o.yml'))
    assert setup.pricer.price(PUBLISHED_5X5) == explicit.pricer.price(PUBLISHED_5X5)
    # the stock BlazeFace (6 double blocks): 2.x's outs[-4] is the original's tap, so only the 5x5 conv differs
    stock_original, stock_2x = blazenet_plan(), blazenet_plan(topology='paddledet')
    assert stock_original.feature_blocks == stock_2x.feature_blocks == (7, 10)
    assert stock_original == blazenet_plan(dense_double_5x5=True)
    assert stock_2x.blocks == blazenet_plan(dense_double_5x5=False).blocks
    # the printed block is still the original's, line for line (tests/test_search_space.py has the lines)
    assert 'topology' not in structure_block(setup.pricer.blazenet_kwargs(PUBLISHED_5X5))


def test_the_original_features_are_its_blocks_outputs():
    """The default's maps are what running the blocks one by one gives after double_blaze_1 and double_blaze_3."""
    paddle.seed(0)
    net = _randomised(BlazeNet(**SPACE.blazenet_args(PUBLISHED_3X3)), seed=0).eval()
    image = paddle.rand([1, 3, 32, 32])
    with paddle.no_grad():
        features = net(image)
        x, outs = net.stem(image), []
        for block in net.blocks:
            x = block(x)
            outs.append(x)
    np.testing.assert_array_equal(features[0].numpy(), outs[4].numpy())
    np.testing.assert_array_equal(features[1].numpy(), outs[6].numpy())
    assert not np.allclose(outs[3].numpy(), outs[4].numpy())


@pytest.mark.parametrize('blazenet, words', [
    ('topology: paddledetection', ['BlazeNet.topology', "'paddledetection'", 'original', 'paddledet']),
    ('topology: paddledet, dense_double_5x5: true',
     ['BlazeNet.dense_double_5x5: true', 'BlazeNet.topology: paddledet']),
    ('dense_double_5x5: "no"', ['BlazeNet.dense_double_5x5', 'true or false']),
])
def test_contradictions_are_one_line_errors(tmp_path, capsys, blazenet, words):
    config = _config(tmp_path, blazenet)
    with pytest.raises(ConfigError) as e:
        load_search_config(config)  # when the config loads, before any pricing or training
    assert all(w in str(e.value) for w in words), str(e.value)
    code, out, err = run_tool_main(price_tool.main, ['-c', config, '--tokens', '2,1,3,8,2,1,2,1,1'], capsys)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1, err
    assert err.startswith('error: BlazeNet.'), err


def test_paddledet_topology_refuses_what_2x_cannot_build():
    args = SPACE.blazenet_args(PUBLISHED_5X5)
    for extra, key in ((dict(lite_edition=True), 'lite_edition'), (dict(with_extra_blocks=False), 'with_extra_blocks')):
        with pytest.raises(ConfigError, match='BlazeNet.{}'.format(key)):
            blazenet_plan(**dict(args, **extra), topology='paddledet')
    with pytest.raises(ConfigError, match='at least 4 double blocks'):
        blazenet_plan(args['blaze_filters'], args['double_blaze_filters'][:3], topology='paddledet')
    assert blazenet_plan(**args, topology='paddledet', dense_double_5x5=False) == blazenet_plan(**args,
                                                                                                 topology='paddledet')


@pytest.mark.parametrize('topology', ['original', 'paddledet'])
def test_structure_files_carry_the_key_and_rebuild_the_searched_network(tmp_path, topology):
    setup = load_search_config(_config(tmp_path, 'topology: {}'.format(topology)))
    args = searched_args(setup.pricer, PUBLISHED_5X5)
    path = str(tmp_path / 'best_structure.yml')
    write_best_structure(path, PUBLISHED_5X5, args, 0.5)
    with open(path) as f:
        text = f.read()
    block = yaml.safe_load(text)['BlazeNet']
    assert blazenet_plan(**block) == blazenet_plan(**args)  # pasting the block rebuilds what was searched
    printed = structure_block(args).splitlines()
    assert printed[-1] == STRUCTURE_END
    override = paddledet_override(PUBLISHED_5X5, args, 0.5, (64, 96))
    written = yaml.safe_load(override)
    if topology == 'paddledet':
        assert block['topology'] == 'paddledet' and printed[-2] == '  topology: paddledet'
        assert 'topology: paddledet (this tool\'s key): the network PaddleDetection 2.x builds' in text
        # the override says the search trained 2.x's own network, and lists no network difference
        assert 'topology: paddledet}: the network it built, priced and trained is' in override
        assert 'the search took it after' not in override and 'used a dense one' not in override
        assert written['BlazeNeck']['in_channel'] == blazenet_plan(**args).feature_channels
    else:
        assert 'topology' not in block and 'topology' not in printed[-2]
        assert 'the search took it after' in override and 'used a dense one' in override
        assert 'double_blaze_filters[0]; the search took it after\n#   double_blaze_filters[1]' in override
    assert written['BlazeNet'] == dict(_paddledet_kwargs(args), use_5x5kernel=True)


def test_dense_double_5x5_false_reaches_the_structure_files(tmp_path):
    """The config's dense_double_5x5: false (no topology) is what was searched: the printed block says so, and
    best_paddledet.yml no longer claims the search used a dense conv."""
    setup = load_search_config(_config(tmp_path, 'dense_double_5x5: false'))
    args = searched_args(setup.pricer, PUBLISHED_5X5)
    assert structure_block(args).splitlines()[-2] == '  dense_double_5x5: false'
    override = paddledet_override(PUBLISHED_5X5, args, 0.5, (64, 96))
    assert 'used a dense one' not in override and 'the search took it after' in override

