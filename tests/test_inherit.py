"""Weight inheritance: which tensors a child takes from its parent, sliced or padded by name, on real candidates."""
import numpy as np
import paddle
import pytest

import ppdet.modeling.architectures.blazeface  # noqa: F401
import ppdet.modeling.backbones.blazenet  # noqa: F401
from ppdet.core.workspace import create
from ppdet.slim.nas.inherit import inherit_state, inherit_weights, parent_weights, plan_names
from search_space import BlazeFaceNasSpace

SPACE = BlazeFaceNasSpace()
PARENT = [2, 1, 3, 8, 2, 1, 2, 1, 0]
WIDER = [2, 1, 3, 9, 2, 1, 2, 1, 0]      # tokens[3]: the second pair of double blocks gets 80 channels, not 72
NARROWER = [2, 1, 3, 7, 2, 1, 2, 1, 0]   # ... and 64 here
FIVE = [2, 1, 3, 8, 2, 1, 2, 1, 1]       # the kernel token: depthwise 5x5 instead of 3x3


def build(tokens, seed):
    paddle.seed(seed)
    cfg = {'BlazeFace': {'min_sizes': [[12., 20.], [24., 32., 40., 48., 64., 80.]]}}
    return create('BlazeFace', cfg, backbone=create('BlazeNet', cfg, **SPACE.blazenet_args(tokens)))


@pytest.fixture(scope='module')
def parent():
    return build(PARENT, 1)


def _arrays(model):
    """The state dict by plan name: the names inheritance matches on."""
    names = plan_names(model)
    return {names[k]: v.numpy() for k, v in model.state_dict().items()}


def test_rules_on_plain_arrays():
    rng = np.random.default_rng(0)
    parent = {'same': rng.normal(size=(4, 3, 3, 3)), 'grow': rng.normal(size=(4, 2, 1, 1)),
              'shrink': rng.normal(size=(6,)), 'kernel': rng.normal(size=(4, 1, 3, 3))}
    child = {'same': np.zeros((4, 3, 3, 3)), 'grow': np.full((6, 3, 1, 1), 7.), 'shrink': np.zeros(4),
             'kernel': np.full((4, 1, 5, 5), 7.), 'new': np.full(2, 7.)}
    out, report = inherit_state(child, parent)
    assert report.copied == ['same'] and sorted(report.sliced) == ['grow', 'shrink']
    assert sorted(report.fresh) == ['kernel', 'new']
    np.testing.assert_array_equal(out['same'], parent['same'])
    np.testing.assert_array_equal(out['grow'][:4, :2], parent['grow'])       # the parent's channels...
    assert (out['grow'][4:] == 7).all() and (out['grow'][:, 2:] == 7).all()  # ... the rest the child's own
    np.testing.assert_array_equal(out['shrink'], parent['shrink'][:4])
    assert (out['kernel'] == 7).all() and (out['new'] == 7).all()


def test_plan_names_follow_the_plan_not_the_position():
    names3, names5 = plan_names(build(PARENT, 0)), plan_names(build(FIVE, 0))
    assert names3['backbone.blocks.3.branch.1.0.weight'] == 'double_blaze_01_dw_2.0.weight'
    assert names5['backbone.blocks.3.branch.1.0.weight'] == 'double_blaze_01_sep.0.weight'  # one 5x5 before it
    assert len(set(names3.values())) == len(names3) and len(set(names5.values())) == len(names5)


def test_same_structure_inherits_everything(parent):
    child = build(PARENT, 2)
    report = inherit_weights(child, parent)
    assert not report.sliced and not report.fresh and len(report.copied) == len(child.state_dict())
    expected = _arrays(parent)
    for name, value in _arrays(child).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


@pytest.mark.parametrize('tokens', [WIDER, NARROWER])
def test_channel_change_slices_or_pads_only_the_changed_tensors(parent, tokens):
    fresh = _arrays(build(tokens, 2))
    child = build(tokens, 2)
    report = inherit_weights(child, parent)
    before = _arrays(parent)
    after = _arrays(child)
    assert report.sliced and not report.fresh
    assert all(n.split('_')[0] in ('double', 'shortcutdouble', 'head0', 'head1') for n in report.sliced), report.sliced
    for name in report.sliced:  # the changed channels: the overlap is the parent's, the rest the child's own
        region = tuple(slice(0, min(a, b)) for a, b in zip(after[name].shape, before[name].shape))
        np.testing.assert_array_equal(after[name][region], before[name][region], err_msg=name)
        assert after[name].shape == fresh[name].shape != before[name].shape
        mask = np.ones(after[name].shape, bool)
        mask[region] = False
        np.testing.assert_array_equal(after[name][mask], fresh[name][mask], err_msg=name)
    for name in report.copied:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert 'conv1.0.weight' in report.copied and 'blaze_01_sep.0.weight' in report.copied  # unchanged widths
    out = child(paddle.rand([1, 3, 64, 64]))  # and the result is a working network
    assert all(np.isfinite(o.numpy()).all() for o in out)


def test_kernel_change_starts_the_depthwise_convs_fresh(parent):
    fresh = _arrays(build(FIVE, 2))
    child = build(FIVE, 2)
    report = inherit_weights(child, parent)
    after, before = _arrays(child), _arrays(parent)
    assert report.fresh and all('_dw.' in n for n in report.fresh), report.fresh  # the 5x5 layers, BN included
    assert all(after[n].shape[2:] == (5, 5) for n in report.fresh if n.endswith('.0.weight'))
    for name in report.fresh:
        np.testing.assert_array_equal(after[name], fresh[name], err_msg=name)
    seps = [n for n in after if '_sep.' in n]
    assert seps and all(n in report.copied for n in seps)  # the 1x1 projections keep the parent's weights
    for name in seps:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_parent_weights_finds_a_candidate_by_its_exact_tokens(tmp_path):
    for folder in ('0001_12-1-3', '0002_2-1-3', '0003_2-1-3-4'):
        (tmp_path / 'candidates' / folder).mkdir(parents=True)
        (tmp_path / 'candidates' / folder / 'model_final.pdparams').write_bytes(b'x')
    assert parent_weights(str(tmp_path), [2, 1, 3]).endswith('0002_2-1-3/model_final.pdparams')
    assert parent_weights(str(tmp_path), [1, 3]) is None
    assert parent_weights(str(tmp_path / 'nothing'), [2, 1, 3]) is None
