"""Whole-network pricing: the runtime units enumerated from the plan are the ops of the deployed program, every
one priced once; conv-only tables (the original's) price as before; tables that do not fit are refused."""
from collections import Counter

import paddle
import pytest

from ppdet.core.workspace import ConfigError, create
from ppdet.modeling.architectures.blazeface import place_blazeface_units
from ppdet.modeling.backbones.blazenet import BlazeNet, blazenet_plan
from ppdet.modeling.layers import PlacedConv
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.constraint import RUN_OVERHEAD_KEY, LatencyTable, unit_key
from ppdet.slim.nas.latency import DeployedBlazeFace
from search_space import BlazeFaceNasSpace

SIZE = 64
SPACE = BlazeFaceNasSpace()
PUBLISHED = [2, 1, 3, 8, 2, 1, 2, 1, 1]
CASES = {
    '3x3': (dict(SPACE.blazenet_args(PUBLISHED[:8] + [0])), {}),
    'dense 5x5 (the original)': (dict(SPACE.blazenet_args(PUBLISHED)), {}),
    'depthwise 5x5': (dict(SPACE.blazenet_args(PUBLISHED), dense_double_5x5=False), {}),
    'largest, density priors': (dict(SPACE.blazenet_args([r - 1 for r in SPACE.range_table()])),
                                {'use_density_prior_box': True}),
    'lite': ({'lite_edition': True, 'use_5x5kernel': False}, {}),
}
RUNTIME_OPS = {'pd_op.conv2d': 'conv', 'pd_op.depthwise_conv2d': 'conv', 'pd_op.batch_norm_': 'batch_norm',
               'pd_op.relu': 'relu', 'pd_op.add': 'add', 'pd_op.pool2d': 'max_pool', 'pd_op.transpose': 'head_tail'}


def _program_ops(blazenet_args, head_kwargs):
    """(kind, input shape) of every op of the network as paddle.jit traces it for export (what Paddle Inference
    runs: on this CPU path its passes fuse none of them)."""
    model = create('BlazeFace', {}, backbone=BlazeNet(**blazenet_args), **head_kwargs)
    spec = [paddle.static.InputSpec([1, 3, SIZE, SIZE], 'float32', 'image')]
    static = paddle.jit.to_static(DeployedBlazeFace(model, decoded=False).eval(), input_spec=spec, full_graph=True)
    ops = []
    for op in static.forward.concrete_program.main_program.global_block().ops:
        kind = RUNTIME_OPS.get(op.name())
        if kind == 'conv':
            filters = list(op.operand_source(1).shape)
            ops.append((kind, tuple(op.operand_source(0).shape[1:]), filters[0], filters[2],
                        op.attrs()['strides'][0], op.attrs()['groups']))
        elif kind:
            ops.append((kind, tuple(op.operand_source(0).shape[1:])))
    return Counter(ops)


def _unit_ops(units):
    ops = []
    for u in units:
        if isinstance(u, PlacedConv):
            s = u.spec
            ops.append(('conv', (s.in_channels, u.in_height, u.in_width), s.out_channels, s.kernel, s.stride,
                        s.groups))
        elif u.kind == 'head_tail':
            ops += [('head_tail', shape) for shape in u.shape]  # one NHWC transpose per head output
        else:
            ops.append((u.kind, u.shape))
    return Counter(ops)


@pytest.mark.parametrize('case', sorted(CASES))
def test_units_are_the_ops_of_the_deployed_program(case):
    blazenet_args, head_kwargs = CASES[case]
    units = place_blazeface_units(blazenet_plan(**blazenet_args), head_kwargs, SIZE, SIZE)
    assert _unit_ops(units) == _program_ops(blazenet_args, head_kwargs)
    keys = [unit_key(u) for u in units]
    assert len([u for u in units if not isinstance(u, PlacedConv) and u.kind == 'head_tail']) == 1
    assert all(k.split(',')[0] in ('conv', 'batch_norm', 'relu', 'eltwise', 'pooling', 'head_tail') for k in keys)


def _whole_network_table(tmp_path, setup, drop=None):
    """A whole-network table holding exactly the units of the init tokens (values: 1 us each, run 5 us)."""
    units = setup.pricer.describe_units(setup.space.init_tokens())
    keys = sorted({unit_key(u) for u in units} - {drop})
    path = tmp_path / 'whole.txt'
    path.write_text('engine\tcpu_test_network\tus\n{}\t5\n'.format(RUN_OVERHEAD_KEY) +
                    ''.join('{}\t1\n'.format(k) for k in keys))
    return str(path), units


def _config(tmp_path, table, size=64, ctype='latency'):
    path = tmp_path / 'c.yml'
    path.write_text('Constraint: {{ctype: {}, table_file: {}}}\n'
                    'TrainReader: {{inputs_def: {{image_shape: [3, {}, {}]}}}}\n'.format(ctype, table, size, size))
    return str(path)


def test_a_whole_network_table_prices_every_unit_once_and_the_run_once(tmp_path, latency_855):
    setup = load_search_config(_config(tmp_path, latency_855, 640))
    table, units = _whole_network_table(tmp_path, setup)
    priced = load_search_config(_config(tmp_path, table, 640)).pricer.price(setup.space.init_tokens())
    assert priced.unpriced == [] and priced.latency_us == len(units) + 5


def test_a_missing_unit_key_makes_the_candidate_unpriced_naming_it(tmp_path, latency_855):
    setup = load_search_config(_config(tmp_path, latency_855, 640))
    bn_key = next(unit_key(u) for u in setup.pricer.describe_units(setup.space.init_tokens())
                  if not isinstance(u, PlacedConv) and u.kind == 'batch_norm')
    table, _ = _whole_network_table(tmp_path, setup, drop=bn_key)
    priced = load_search_config(_config(tmp_path, table, 640)).pricer.price(setup.space.init_tokens())
    assert priced.latency_us is None and priced.unpriced == [bn_key]


def test_the_original_table_still_prices_convs_only(tmp_path, latency_855):
    """latency_855.txt has no run_overhead: its sums stay the original's (21117 us for the 3x3 published)."""
    table = LatencyTable.load(latency_855)
    assert not table.whole_network
    setup = load_search_config(_config(tmp_path, latency_855, 640))
    assert setup.pricer.price(PUBLISHED[:8] + [0]).latency_us == 21117.0


def test_a_table_of_another_input_size_is_refused_for_latency_and_dropped_for_flops(tmp_path, latency_855, caplog):
    with pytest.raises(ConfigError, match='measured for 160x160, 320x320, 640x640 inputs.*prices at 96x96'):
        load_search_config(_config(tmp_path, latency_855, 96))
    setup = load_search_config(_config(tmp_path, latency_855, 96, ctype='flops'))
    assert setup.pricer.table is None and 'ignored, since Constraint.ctype is flops' in caplog.text


def test_5x5_kernels_are_searched_only_with_a_table_that_has_them(tmp_path, latency_855):
    setup = load_search_config(_config(tmp_path, latency_855, 640))
    assert setup.space_name == 'BlazeFaceNasSpace3x3'
    assert 'has no 5x5 keys (the starting structure with 5x5 kernels needs 11, e.g. conv,' in setup.note
    setup = load_search_config(_config(tmp_path, latency_855, 640, ctype='flops'))
    units = setup.pricer.describe_units(PUBLISHED)  # the published structure, 5x5, as a table would hold it
    path = tmp_path / 'with5x5.txt'
    path.write_text('e\tcpu_test_network\tus\n{}\t5\n'.format(RUN_OVERHEAD_KEY) +
                    ''.join('{}\t1\n'.format(k) for k in sorted({unit_key(u) for u in units})))
    setup = load_search_config(_config(tmp_path, str(path), 640))
    assert setup.space_name == 'BlazeFaceNasSpace' and 1 in setup.space.use_5x5kernel and setup.note is None
    assert setup.pricer.price(PUBLISHED).latency_us == len(units) + 5
