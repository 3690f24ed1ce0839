"""The conv description that both the model builder and the pricing read.

A network here is described before it is built: every conv is a ``ConvSpec`` and ``place_convs`` walks a
description at a given input size. ``conv_norm``/``head_conv`` turn a spec into layers, so a candidate's
price (FLOPs, params, latency keys) and the built ``nn.Layer`` cannot disagree.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import KaimingNormal, KaimingUniform
from paddle.regularizer import L2Decay


@dataclass(frozen=True)
class ConvSpec:
    """One conv as the original builds it.

    ``norm``: conv (no bias, MSRA init, lr x0.1) + batch norm, the original's ``_conv_norm``; otherwise a head
    conv (fluid's default init, bias with lr x2 and no L2). ``relu``: ReLU after the batch norm.
    """
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    groups: int = 1
    relu: bool = True
    norm: bool = True

    @property
    def padding(self):
        return self.kernel // 2

    def output_size(self, height, width):
        pad, k, s = self.padding, self.kernel, self.stride
        return (height + 2 * pad - k) // s + 1, (width + 2 * pad - k) // s + 1


@dataclass(frozen=True)
class BlockSpec:
    """A residual block: ``relu(shortcut(x) + branch(x))``.

    The shortcut is the identity, optionally after a ``pool``-sized max pool (ceil mode) and a 1x1 conv_norm
    that matches the channels (BlazeFace paper, Sec. 3.2: stride-2 blocks pool the residual path).
    """
    name: str
    branch: Tuple[ConvSpec, ...]
    pool: int = 1
    shortcut: Optional[ConvSpec] = None

    @property
    def out_channels(self):
        return self.branch[-1].out_channels


@dataclass(frozen=True)
class PlacedConv:
    """A conv at the size it runs at: what FLOPs and latency tables are keyed on."""
    spec: ConvSpec
    in_height: int
    in_width: int

    @property
    def out_size(self):
        return self.spec.output_size(self.in_height, self.in_width)


@dataclass(frozen=True)
class PlacedOp:
    """A runtime op other than a conv, at the size it runs at: what whole-network latency tables price.

    ``kind``: ``batch_norm`` (after a conv_norm's conv), ``relu``, ``add`` (a residual add, or a head conv's bias),
    ``max_pool`` (a stride-2 block's shortcut pool, ``pool`` x ``pool``, ceil mode), or ``head_tail`` (the head's
    NHWC transposes, reshapes and two concats). ``shape``: its input (C, H, W); for ``head_tail`` the (C, H, W) of
    every head conv output in order (loc, conf per map) and ``last_dims`` their per-prior sizes (4, classes).
    """
    kind: str
    shape: Tuple
    pool: int = 0
    last_dims: Tuple[int, ...] = ()


def conv_units(placed: PlacedConv):
    """A conv and what runs after it, as ``build_conv`` builds it: conv_norm is conv, batch norm (+ ReLU); a head
    conv is conv + its bias add."""
    c = placed.spec.out_channels
    out = (c,) + tuple(placed.out_size)
    if not placed.spec.norm:
        return [placed, PlacedOp('add', out)]
    return [placed, PlacedOp('batch_norm', out)] + ([PlacedOp('relu', out)] if placed.spec.relu else [])


def conv_norm(spec: ConvSpec) -> nn.Sequential:
    """Conv + BN (+ ReLU): MSRA (uniform, fan-in) init and a 0.1 learning-rate multiplier, as the original."""
    conv = nn.Conv2D(spec.in_channels, spec.out_channels, spec.kernel, stride=spec.stride,
                     padding=spec.padding, groups=spec.groups,
                     weight_attr=ParamAttr(learning_rate=0.1, initializer=KaimingUniform()), bias_attr=False)
    layers = [conv, nn.BatchNorm2D(spec.out_channels)]
    if spec.relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def head_conv(spec: ConvSpec) -> nn.Conv2D:
    """A prediction conv: fluid's default weight init (normal, std sqrt(2/fan_in)); bias lr x2, no L2."""
    return nn.Conv2D(spec.in_channels, spec.out_channels, spec.kernel, stride=spec.stride,
                     padding=spec.padding, groups=spec.groups,
                     weight_attr=ParamAttr(initializer=KaimingNormal()),
                     bias_attr=ParamAttr(learning_rate=2.0, regularizer=L2Decay(0.0)))


def build_conv(spec: ConvSpec) -> nn.Layer:
    return conv_norm(spec) if spec.norm else head_conv(spec)


def place_block_units(block: BlockSpec, height, width):
    """Every runtime unit of the block in execution order, as ``Block.forward`` runs them (branch, pool,
    shortcut, residual add, ReLU), and its output size."""
    units = []
    h, w = height, width
    for spec in block.branch:
        units += conv_units(PlacedConv(spec, h, w))
        h, w = spec.output_size(h, w)
    if block.pool > 1:
        units.append(PlacedOp('max_pool', (block.branch[0].in_channels, height, width), pool=block.pool))
    if block.shortcut is not None:
        ph, pw = -(-height // block.pool), -(-width // block.pool)
        units += conv_units(PlacedConv(block.shortcut, ph, pw))
    units += [PlacedOp('add', (block.out_channels, h, w)), PlacedOp('relu', (block.out_channels, h, w))]
    return units, (h, w)


def convs_of(units):
    """The convs among runtime units: what FLOPs, parameters and conv-only latency tables price."""
    return [u for u in units if isinstance(u, PlacedConv)]


def conv_params(spec: ConvSpec) -> int:
    """Values a saved model holds for this conv: weights, plus BN's four vectors or the head's bias."""
    weights = spec.out_channels * (spec.in_channels // spec.groups) * spec.kernel * spec.kernel
    return weights + (4 if spec.norm else 1) * spec.out_channels
