"""Pricing a candidate (FLOPs, params, table latency) and the search's Constraint on it.

The arithmetic is PaddleSlim's, so numbers agree with the original search:
- FLOPs (``paddleslim.analysis.flops``, only_conv): per conv H_out*W_out*C_out*k*k*C_in/groups; the original's
  convs have no fused bias (fluid added biases as separate ops), batch ignored.
- Latency (``TableLatencyEvaluator.latency(only_conv=True)``): the sum of table entries keyed by each conv's
  ``conv,<bias>,<relu>,1,C_in,H_in,W_in,C_out,groups,k,pad,stride,dilation``. PaddleSlim's evaluator no longer
  runs on Paddle 3 and asserted on a missing key; here a missing key makes the candidate "unpriced".
Pricing reads the same description the model is built from (``ppdet.modeling.layers``) and runs no Paddle.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from ppdet.core.workspace import ConfigError, config_kwargs, register
from ppdet.modeling.architectures.blazeface import place_blazeface
from ppdet.modeling.backbones.blazenet import blazenet_plan
from ppdet.modeling.layers import conv_params

__all__ = ['Constraint', 'LatencyTable', 'Price', 'CandidatePricer', 'latency_key', 'conv_flops',
           'train_input_size']

CTYPES = ('flops', 'latency')
logger = logging.getLogger(__name__)


@dataclass
class Price:
    flops: int
    params: int
    latency_us: Optional[float] = None
    unpriced: List[str] = field(default_factory=list)


def conv_flops(placed):
    spec = placed.spec
    out_h, out_w = placed.out_size
    return out_h * out_w * spec.out_channels * spec.kernel * spec.kernel * (spec.in_channels // spec.groups)


def latency_key(placed):
    """The table key of a conv, as PaddleSlim's ``_conv_op_args`` writes it (square kernels, no dilation)."""
    s = placed.spec
    return ','.join(str(v) for v in ('conv', 0, 0, 1, s.in_channels, placed.in_height, placed.in_width,
                                     s.out_channels, s.groups, s.kernel, s.padding, s.stride, 1))


class LatencyTable:
    """A latency table file: a header ``engine<TAB>device<TAB>unit``, then ``key<TAB>value`` lines."""

    def __init__(self, path, header, entries):
        self.path, self.header, self.entries = path, header, entries

    @classmethod
    def load(cls, path):
        if not os.path.isfile(path):
            raise ConfigError('Constraint.table_file: latency table {} not found; point it at an existing table '
                              '(latency_855.txt ships at the top level of this repo) or build one for your '
                              'device with tools/build_latency_table.py'.format(path))
        with open(path) as f:
            lines = f.read().splitlines()
        header = lines[0].split('\t') if lines else []
        if len(header) != 3 or header[0].startswith('conv,'):
            raise ConfigError('{}, line 1: a latency table starts with a header "op_type<TAB>device<TAB>unit", '
                              'got {!r}'.format(path, lines[0] if lines else ''))
        entries = {}
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            parts = line.split('\t')
            try:
                key, value = parts
                entries[key.strip()] = float(value)
            except ValueError:
                raise ConfigError('{}, line {}: expected "key<TAB>latency", got {!r}'.format(
                    path, number, line)) from None
        return cls(path, tuple(header), entries)

    def price(self, placed_convs):
        """Sum over convs, or (None, missing keys) when the table cannot price them all."""
        keys = [latency_key(p) for p in placed_convs]
        missing = sorted({k for k in keys if k not in self.entries})
        if missing:
            return None, missing
        return sum(self.entries[k] for k in keys), []


@register
class Constraint:
    """The search's limit: ``ctype`` flops or latency (us, from ``table_file``), inclusive [min, max]."""

    def __init__(self, ctype, max_constraint=None, min_constraint=None, table_file=None):
        if ctype not in CTYPES:
            raise ConfigError('Constraint.ctype is {!r}; use one of {}'.format(ctype, ', '.join(CTYPES)))
        if ctype == 'latency' and not table_file:
            raise ConfigError('Constraint.ctype is latency but Constraint.table_file is not set; point it at a '
                              'latency table')
        if None not in (min_constraint, max_constraint) and min_constraint > max_constraint:
            raise ConfigError('Constraint.min_constraint ({}) is above Constraint.max_constraint ({})'.format(
                min_constraint, max_constraint))
        self.ctype, self.table_file = ctype, table_file
        self.max_constraint, self.min_constraint = max_constraint, min_constraint

    def value(self, price):
        return price.flops if self.ctype == 'flops' else price.latency_us

    def admits(self, price):
        """True inside the bounds, False outside, None when the value is unknown (unpriced)."""
        value = self.value(price)
        if value is None:
            return None
        return not ((self.max_constraint is not None and value > self.max_constraint) or
                    (self.min_constraint is not None and value < self.min_constraint))


def train_input_size(cfg):
    """(H, W) the original priced at: TrainReader.inputs_def.image_shape."""
    try:
        _, height, width = cfg['TrainReader']['inputs_def']['image_shape']
    except (KeyError, TypeError, ValueError):
        raise ConfigError('{}: TrainReader.inputs_def.image_shape should be [3, H, W]'.format(
            cfg.get('filename', '<config>'))) from None
    return int(height), int(width)


def resolve_table_path(path, config_file):
    """A relative table path is read from the working directory, else next to the config file."""
    if os.path.isabs(path) or os.path.exists(path) or not config_file:
        return path
    beside = os.path.join(os.path.dirname(os.path.abspath(config_file)), path)
    return beside if os.path.exists(beside) else path


def load_constraint_table(constraint, config_file):
    """The constraint's latency table, or None.

    A FLOPs search never needs one (the original never read ``table_file`` then): a missing table is ignored with
    one warning, and an existing one still fills the history's latency column. A latency search needs it.
    """
    if not constraint.table_file:
        return None
    path = resolve_table_path(constraint.table_file, config_file)
    if constraint.ctype == 'flops' and not os.path.isfile(path):
        logger.warning('Constraint.table_file %s not found; ignored, since Constraint.ctype is flops (the history '
                       'will have no latency values)', path)
        return None
    return LatencyTable.load(path)


class CandidatePricer:
    """Prices token vectors of a search space under a config (its BlazeNet/BlazeFace sections and input size)."""

    def __init__(self, cfg, space, constraint=None, table=None):
        self.space = space
        self.constraint = constraint
        self.input_size = train_input_size(cfg)
        self.backbone_defaults = config_kwargs('BlazeNet', cfg) if 'BlazeNet' in cfg else {}
        head = config_kwargs('BlazeFace', cfg) if 'BlazeFace' in cfg else {}
        keep = ('num_classes', 'min_sizes', 'use_density_prior_box', 'densities')
        self.head_kwargs = {k: v for k, v in head.items() if k in keep}
        self.head_kwargs.setdefault('num_classes', cfg.get('num_classes', 2))
        if table is None and constraint is not None:
            table = load_constraint_table(constraint, cfg.get('filename'))
        self.table = table

    def blazenet_kwargs(self, tokens):
        """The BlazeNet arguments of a candidate: the config's BlazeNet section overlaid by the tokens."""
        return dict(self.backbone_defaults, **self.space.blazenet_args(tokens))

    def describe(self, tokens):
        plan = blazenet_plan(**self.blazenet_kwargs(tokens))
        return place_blazeface(plan, self.head_kwargs, *self.input_size)

    def price(self, tokens):
        placed = self.describe(tokens)
        price = Price(flops=sum(conv_flops(p) for p in placed), params=sum(conv_params(p.spec) for p in placed))
        if self.table is not None:
            price.latency_us, price.unpriced = self.table.price(placed)
        return price
