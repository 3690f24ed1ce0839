"""BlazeNet, the BlazeFace backbone (https://arxiv.org/abs/1907.05047), as PaddleDetection 0.x built it, or (with
``topology: paddledet``) as PaddleDetection 2.x builds it.

``blazenet_plan`` describes the network as conv specs; ``BlazeNet`` builds exactly that description, and the
pricing in ``ppdet.slim.nas.constraint`` reads the same description without building anything.
"""
from dataclasses import dataclass
from typing import Tuple

import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.workspace import ConfigError, register
from ppdet.modeling.layers import BlockSpec, ConvSpec, PlacedConv, build_conv, conv_units, convs_of, place_block_units

__all__ = ['BlazeNet', 'BlazeNetPlan', 'blazenet_plan', 'resolve_topology', 'TOPOLOGIES']

DEFAULT_BLAZE_FILTERS = [[24, 24], [24, 24], [24, 48, 2], [48, 48], [48, 48]]
DEFAULT_DOUBLE_BLAZE_FILTERS = [[48, 24, 96, 2], [96, 24, 96], [96, 24, 96],
                                [96, 24, 96, 2], [96, 24, 96], [96, 24, 96]]
# ``topology``: whose network the same arguments build. ``original``: PaddleDetection 0.x's (slim/nas, the published
# models): the stride-8 map is the input of the last stride-2 double block, the second 5x5 conv of a double block is
# dense. ``paddledet``: PaddleDetection 2.x's (2.6, develop), what a ``best_paddledet.yml`` trains: the maps are its
# ``[outs[-4], outs[-1]]`` (the 4th block from the end and the last) and that 5x5 conv is depthwise.
TOPOLOGIES = ('original', 'paddledet')


@dataclass(frozen=True)
class BlazeNetPlan:
    """Stem conv, residual blocks, and the indices of the blocks whose outputs feed the detection head."""
    stem: ConvSpec
    blocks: Tuple[BlockSpec, ...]
    feature_blocks: Tuple[int, ...]
    topology: str = 'original'

    @property
    def feature_channels(self):
        return [self.blocks[i].out_channels for i in self.feature_blocks]

    @property
    def dense_5x5(self):
        """Whether a 5x5 conv of a block is dense (the original's quirk in double blocks)."""
        return any(c.kernel == 5 and c.groups == 1 for b in self.blocks for c in b.branch)

    def place_units(self, height, width):
        """Every runtime unit (convs and the ops between them) in execution order at this input size, and the
        (h, w) of each feature map."""
        units = conv_units(PlacedConv(self.stem, height, width))
        size = self.stem.output_size(height, width)
        sizes = []
        for block in self.blocks:
            block_units, size = place_block_units(block, *size)
            units.extend(block_units)
            sizes.append(size)
        return units, [sizes[i] for i in self.feature_blocks]

    def place(self, height, width):
        """All convs in execution order at this input size, and the (h, w) of each feature map."""
        units, sizes = self.place_units(height, width)
        return convs_of(units), sizes


def _depthwise(name, in_channels, channels, stride, use_5x5kernel, dense=False):
    """One 5x5 depthwise conv, or two 3x3 ones (the second strided): the same receptive field (paper Sec. 3.1)."""
    if use_5x5kernel:
        return (ConvSpec(name, in_channels, channels, 5, stride, 1 if dense else channels),)
    return (ConvSpec(name + '_1', in_channels, channels, 3, 1, channels),
            ConvSpec(name + '_2', channels, channels, 3, stride, channels))


def blaze_block(name, in_channels, channels1, channels2, double_channels=None, stride=1,
                use_5x5kernel=True, dense_double_5x5=True):
    """A single or double BlazeBlock (paper Fig. 1).

    Single: depthwise on ``channels1`` then a 1x1 projection to ``channels2`` without ReLU. Double: the same
    projection with ReLU, a second depthwise part and a 1x1 projection to ``double_channels``.
    ``dense_double_5x5`` keeps the original's quirk: its second 5x5 conv of a double block was built without
    ``groups``, i.e. dense; the published model sizes include it. False gives the depthwise conv.
    """
    if stride not in (1, 2):
        raise ValueError('{}: stride must be 1 or 2, got {}'.format(name, stride))
    if in_channels % channels1:
        raise ValueError('{}: input channels {} are not a multiple of the depthwise channels {}'.format(
            name, in_channels, channels1))
    double = double_channels is not None
    out_channels = double_channels if double else channels2
    branch = _depthwise(name + '1_dw', in_channels, channels1, stride, use_5x5kernel)
    branch += (ConvSpec(name + '1_sep', channels1, channels2, 1, relu=double),)
    if double:
        branch += _depthwise(name + '2_dw', channels2, channels2, 1, use_5x5kernel, dense=dense_double_5x5)
        branch += (ConvSpec(name + '2_sep', channels2, double_channels, 1),)
    if stride == 1:
        if in_channels != out_channels:
            raise ValueError('{}: a stride-1 block needs equal input and output channels, got {} -> {}'.format(
                name, in_channels, out_channels))
        return BlockSpec(name, branch)
    return BlockSpec(name, branch, pool=stride, shortcut=ConvSpec('shortcut' + name, in_channels, out_channels, 1))


def lite_block(name, in_channels, out_channels, stride=1):
    """BlazeFace-lite's block: 3x3 depthwise + 1x1 (both with ReLU); a 1x1 shortcut when channels change."""
    branch = (ConvSpec(name + '_dw', in_channels, in_channels, 3, stride, in_channels),
              ConvSpec(name + '_sep', in_channels, out_channels, 1))
    shortcut = ConvSpec('shortcut' + name, in_channels, out_channels, 1) if in_channels != out_channels else None
    if stride != 1 and shortcut is None:
        raise ValueError('{}: a stride-2 lite block must change channels'.format(name))
    return BlockSpec(name, branch, pool=stride, shortcut=shortcut)


def _lite_plan():
    """The fixed BlazeFace-lite backbone of the original (its ``lite_edition``)."""
    stem = ConvSpec('conv1', 3, 24, 5, 2)
    widths = [(24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2)]
    widths += [(48 + 8 * i, 56 + 8 * i, 1) for i in range(5)]
    widths += [(88, 96, 2)] + [(96, 96, 1)] * 4
    blocks = tuple(lite_block('conv{}'.format(i + 2), *w) for i, w in enumerate(widths))
    return BlazeNetPlan(stem, blocks, (10, len(blocks) - 1))


def resolve_topology(topology='original', dense_double_5x5=None, with_extra_blocks=True, lite_edition=False):
    """Check ``topology`` against the other keys; returns whether double blocks' second 5x5 conv is dense.

    ``dense_double_5x5`` left out (None) follows the topology: dense for ``original`` (the quirk the published
    models have), depthwise for ``paddledet``. Contradictions are one-line ``ConfigError``s naming the keys.
    """
    if topology not in TOPOLOGIES:
        raise ConfigError('BlazeNet.topology is {!r}; use original (PaddleDetection 0.x\'s network, the default) or '
                          'paddledet (the network PaddleDetection 2.x builds from best_paddledet.yml)'.format(topology))
    if dense_double_5x5 is not None and not isinstance(dense_double_5x5, bool):
        raise ConfigError('BlazeNet.dense_double_5x5 is {!r}; write true or false (or leave it out: the topology '
                          'decides)'.format(dense_double_5x5))
    if topology == 'original':
        return True if dense_double_5x5 is None else dense_double_5x5
    if dense_double_5x5:
        raise ConfigError('BlazeNet.dense_double_5x5: true contradicts BlazeNet.topology: paddledet (PaddleDetection '
                          '2.x builds that 5x5 conv depthwise); leave dense_double_5x5 out')
    for key, value, builds in (('lite_edition', lite_edition, False), ('with_extra_blocks', with_extra_blocks, True)):
        if bool(value) != builds:
            raise ConfigError('BlazeNet.{}: {} contradicts BlazeNet.topology: paddledet (PaddleDetection 2.x has no '
                              '{}: it builds the full network and returns two maps)'.format(
                                  key, str(bool(value)).lower(), key))
    return False


def blazenet_plan(blaze_filters=DEFAULT_BLAZE_FILTERS, double_blaze_filters=DEFAULT_DOUBLE_BLAZE_FILTERS,
                  with_extra_blocks=True, lite_edition=False, use_5x5kernel=True, dense_double_5x5=None,
                  topology='original'):
    """Describe BlazeNet from the original's arguments (the ``BlazeNet:`` block a search prints) and ``topology``."""
    dense_double_5x5 = resolve_topology(topology, dense_double_5x5, with_extra_blocks, lite_edition)
    if lite_edition:
        return _lite_plan()
    stem = ConvSpec('conv1', 3, int(blaze_filters[0][0]), 3, 2)
    blocks, taps = [], []
    channels = stem.out_channels
    for k, v in enumerate(blaze_filters):
        if len(v) not in (2, 3):
            raise ValueError('blaze_filters[{}] = {} should have 2 or 3 numbers'.format(k, v))
        v = [int(x) for x in v]
        blocks.append(blaze_block('blaze_{}'.format(k), channels, v[0], v[1], stride=v[2] if len(v) == 3 else 1,
                                  use_5x5kernel=use_5x5kernel))
        channels = blocks[-1].out_channels
    for k, v in enumerate(double_blaze_filters):
        if len(v) not in (3, 4):
            raise ValueError('double_blaze_filters[{}] = {} should have 3 or 4 numbers'.format(k, v))
        v = [int(x) for x in v]
        if len(v) == 4:
            taps.append(len(blocks) - 1)  # the map entering a stride-2 double block is a detection feature
        blocks.append(blaze_block('double_blaze_{}'.format(k), channels, v[0], v[1], v[2],
                                  stride=v[3] if len(v) == 4 else 1, use_5x5kernel=use_5x5kernel,
                                  dense_double_5x5=dense_double_5x5))
        channels = blocks[-1].out_channels
    taps.append(len(blocks) - 1)
    if topology == 'paddledet':
        # 2.x returns [outs[-4], outs[-1]] over all blocks, and sizes its neck from the 4th-last double block
        if len(double_blaze_filters) < 4:
            raise ConfigError('BlazeNet.topology: paddledet needs at least 4 double blocks (PaddleDetection 2.x taps '
                              'the 4th block from the end), got {}'.format(len(double_blaze_filters)))
        return BlazeNetPlan(stem, tuple(blocks), (len(blocks) - 4, len(blocks) - 1), topology)
    features = tuple(taps[-2:]) if with_extra_blocks else (taps[-1],)
    return BlazeNetPlan(stem, tuple(blocks), features)


class Block(nn.Layer):
    """Builds a ``BlockSpec``, its convs made by ``build`` (a ``ConvSpec`` -> layer)."""

    def __init__(self, spec: BlockSpec, build=build_conv):
        super().__init__()
        self.branch = nn.Sequential(*[build(s) for s in spec.branch])
        self.pool = nn.MaxPool2D(spec.pool, spec.pool, ceil_mode=True) if spec.pool > 1 else None
        self.shortcut = build(spec.shortcut) if spec.shortcut is not None else None

    def forward(self, x):
        y = self.branch(x)
        if self.pool is not None:
            x = self.pool(x)
        if self.shortcut is not None:
            x = self.shortcut(x)
        return F.relu(x + y)


@register
class BlazeNet(nn.Layer):
    """BlazeFace backbone; returns the feature maps the head predicts on (two, or one without extra blocks).

    Args:
        blaze_filters (list): [channels, out_channels(, stride)] per single block.
        double_blaze_filters (list): [channels, mid_channels, out_channels(, stride)] per double block.
        with_extra_blocks (bool): return the stride-8 map as well as the last one.
        lite_edition (bool): the fixed BlazeFace-lite backbone instead.
        use_5x5kernel (bool): 5x5 depthwise convs, else two 3x3 ones.
        dense_double_5x5 (bool): keep the original's dense second 5x5 conv in double blocks (the default of the
            original topology, to match the published models); false makes it depthwise as the paper and
            PaddleDetection 2.x do. Left out, the topology decides.
        topology (str): ``original`` (default): PaddleDetection 0.x's network, the stride-8 map taken at the input
            of the last stride-2 double block. ``paddledet``: the network PaddleDetection 2.x builds from the same
            keys (``best_paddledet.yml``): its maps are the 4th block from the end and the last (in this search
            space the stride-8 map is one double block earlier) and double blocks' second 5x5 conv is depthwise.
    """

    def __init__(self, blaze_filters=DEFAULT_BLAZE_FILTERS, double_blaze_filters=DEFAULT_DOUBLE_BLAZE_FILTERS,
                 with_extra_blocks=True, lite_edition=False, use_5x5kernel=True, dense_double_5x5=None,
                 topology='original'):
        super().__init__()
        self._build(blazenet_plan(blaze_filters, double_blaze_filters, with_extra_blocks, lite_edition,
                                  use_5x5kernel, dense_double_5x5, topology), build_conv)

    @classmethod
    def from_plan(cls, plan: BlazeNetPlan, build):
        """The network of ``plan`` with its convs made by ``build``: a supernet's sub-network, whose layers are
        slices of the supernet's (``ppdet.slim.nas.supernet``). The head built on it uses the same ``build``."""
        net = cls.__new__(cls)
        nn.Layer.__init__(net)
        net._build(plan, build)
        return net

    def _build(self, plan, build):
        self.plan = plan
        self.conv_builder = build
        self.stem = build(plan.stem)
        self.blocks = nn.LayerList([Block(b, build) for b in plan.blocks])

    @property
    def out_channels(self):
        return self.plan.feature_channels

    def forward(self, image):
        x = self.stem(image)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.plan.feature_blocks:
                features.append(x)
        return features
