import numpy as np
import paddle
import pytest

from ppdet.modeling.architectures.blazeface import BlazeFace, place_blazeface
from ppdet.modeling.backbones.blazenet import BlazeNet
from ppdet.modeling.layers import conv_params
from search_space import BlazeFaceNasSpace

TOKENS = [[2, 1, 3, 8, 2, 1, 2, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0], [6, 8, 11, 11, 5, 5, 5, 5, 0],
          [3, 4, 5, 6, 1, 2, 3, 4, 1]]


def _model(tokens, **extra):
    paddle.seed(0)
    return BlazeFace(BlazeNet(**BlazeFaceNasSpace().blazenet_args(tokens), **extra))


def _recorded_convs(model, image):
    """Every Conv2D that runs in a real forward pass, with its input size, in execution order."""
    seen = []

    def hook(layer, inputs, output):
        x = inputs[0]
        seen.append((layer._in_channels, layer._out_channels, layer._kernel_size[0], layer._stride[0],
                     layer._groups, x.shape[2], x.shape[3]))
    handles = [m.register_forward_post_hook(hook) for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D)]
    model.eval()
    with paddle.no_grad():
        model(image)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize('tokens', TOKENS)
@pytest.mark.parametrize('size', [(64, 64), (96, 80)])
def test_built_convs_are_exactly_the_description(tokens, size):
    model = _model(tokens)
    described = place_blazeface(model.backbone.plan, {}, *size)
    expected = [(p.spec.in_channels, p.spec.out_channels, p.spec.kernel, p.spec.stride, p.spec.groups,
                 p.in_height, p.in_width) for p in described]
    assert _recorded_convs(model, paddle.rand([1, 3, *size])) == expected


@pytest.mark.parametrize('tokens', TOKENS[:2])
def test_params_are_the_state_dict_size(tokens):
    model = _model(tokens)
    described = place_blazeface(model.backbone.plan, {}, 64, 64)
    assert sum(conv_params(p.spec) for p in described) == sum(int(np.prod(v.shape)) for v in
                                                             model.state_dict().values())


@pytest.mark.parametrize('size', [(64, 64), (128, 96)])
def test_output_shapes(size):
    model = _model(TOKENS[0])
    locs, confs, priors = model(paddle.rand([2, 3, *size]))
    h8, w8, h16, w16 = -(-size[0] // 8), -(-size[1] // 8), -(-size[0] // 16), -(-size[1] // 16)
    priors_count = h8 * w8 * 2 + h16 * w16 * 6
    assert locs.shape == [2, priors_count, 4]
    assert confs.shape == [2, priors_count, 2]
    assert priors.shape == [priors_count, 4]


def test_density_priors_change_the_head():
    paddle.seed(0)
    model = BlazeFace(BlazeNet(**BlazeFaceNasSpace().blazenet_args(TOKENS[0])), use_density_prior_box=True)
    locs, confs, priors = model(paddle.rand([1, 3, 64, 64]))
    assert locs.shape[1] == 8 * 8 * 8 + 4 * 4 * 9 == priors.shape[0]


def test_dense_5x5_quirk_is_default_and_fix_is_an_option():
    args = BlazeFaceNasSpace().blazenet_args(TOKENS[0])
    quirk = BlazeNet(**args).plan.blocks[3].branch
    fixed = BlazeNet(**args, dense_double_5x5=False).plan.blocks[3].branch
    # double block: dw 5x5, 1x1, dw 5x5, 1x1; the original built the second 5x5 without groups
    assert [c.groups for c in quirk] == [12, 1, 1, 1]
    assert [c.groups for c in fixed] == [12, 1, 16, 1]
    assert [c.kernel for c in quirk] == [5, 1, 5, 1]


def test_published_model_sizes_match_the_quirk():
    """Model zoo: BlazeFace 0.777 MB, BlazeFace-NAS 0.234 MB (float32 weights + BN statistics)."""
    def megabytes(**kwargs):
        model = BlazeFace(BlazeNet(**kwargs))
        return sum(int(np.prod(v.shape)) for v in model.state_dict().values()) * 4 / 2 ** 20
    assert megabytes() == pytest.approx(0.777, abs=0.01)
    assert megabytes(**BlazeFaceNasSpace().blazenet_args()) == pytest.approx(0.234, abs=0.01)


def test_lite_edition_returns_two_maps():
    net = BlazeNet(lite_edition=True)
    feats = net(paddle.rand([1, 3, 64, 64]))
    assert [f.shape[1] for f in feats] == [88, 96] == net.out_channels
    assert [f.shape[2] for f in feats] == [8, 4]


def test_without_extra_blocks_one_map():
    net = BlazeNet(**dict(BlazeFaceNasSpace().blazenet_args(TOKENS[0]), with_extra_blocks=False))
    assert [f.shape[1] for f in net(paddle.rand([1, 3, 64, 64]))] == [72]


def test_parameter_attributes_are_the_originals():
    model = _model(TOKENS[0])
    stem_weight = model.backbone.stem[0].weight
    assert stem_weight.optimize_attr['learning_rate'] == 0.1
    bias = model.loc_convs[0].bias
    assert bias.optimize_attr['learning_rate'] == 2.0
    assert bias.regularizer is not None and bias.regularizer._coeff == 0.0
