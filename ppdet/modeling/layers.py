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


def place_block(block: BlockSpec, height, width):
    """The block's convs in execution order (branch, then shortcut) and its output size."""
    placed = []
    h, w = height, width
    for spec in block.branch:
        placed.append(PlacedConv(spec, h, w))
        h, w = spec.output_size(h, w)
    if block.shortcut is not None:
        ph, pw = -(-height // block.pool), -(-width // block.pool)
        placed.append(PlacedConv(block.shortcut, ph, pw))
    return placed, (h, w)


def conv_params(spec: ConvSpec) -> int:
    """Values a saved model holds for this conv: weights, plus BN's four vectors or the head's bias."""
    weights = spec.out_channels * (spec.in_channels // spec.groups) * spec.kernel * spec.kernel
    return weights + (4 if spec.norm else 1) * spec.out_channels
