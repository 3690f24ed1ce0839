"""Pricing a candidate (FLOPs, params, table latency) and the search's Constraint on it.

The arithmetic is PaddleSlim's, so numbers agree with the original search:
- FLOPs (``paddleslim.analysis.flops``, only_conv): per conv H_out*W_out*C_out*k*k*C_in/groups; the original's
  convs have no fused bias (fluid added biases as separate ops), batch ignored.
- Latency (``TableLatencyEvaluator.latency(only_conv=True)``): the sum of table entries keyed by each conv's
  ``conv,<bias>,<relu>,1,C_in,H_in,W_in,C_out,groups,k,pad,stride,dilation``. PaddleSlim's evaluator no longer
  runs on Paddle 3 and asserted on a missing key; here a missing key makes the candidate "unpriced".
- A whole-network table (built by tools/build_latency_table.py; it holds ``run_overhead,1``) also prices every
  other op the deployed network runs, keyed in PaddleSlim's style (``batch_norm,None,1,C,H,W``, ``relu,1,C,H,W``,
  ``eltwise,2,1,C,H,W``, ``pooling,0,1,C,H,W,k,pad,stride,ceil,1``) plus ``head_tail,...``, and adds the runtime's
  fixed cost of one run once: its entries are net of that cost, so that they add up to the network.
Pricing reads the same description the model is built from (``ppdet.modeling.layers``) and runs no Paddle.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ppdet.core.workspace import ConfigError, config_kwargs, register
from ppdet.modeling.architectures.blazeface import place_blazeface_units
from ppdet.modeling.backbones.blazenet import blazenet_plan
from ppdet.modeling.layers import PlacedConv, conv_params, convs_of
from ppdet.slim.nas.tokens import sample_candidates
from ppdet.slim.nas.vocabulary import Settings, of_type

__all__ = ['Constraint', 'LatencyTable', 'Price', 'CandidatePricer', 'latency_key', 'unit_key', 'conv_flops',
           'train_input_size', 'load_constraint_table', 'table_kernels', 'RUN_OVERHEAD_KEY']

CTYPES = ('flops', 'latency')
RUN_OVERHEAD_KEY = 'run_overhead,1'  # the runtime's fixed cost of one run (batch 1), paid once per network
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


def unit_key(unit):
    """The table key of a runtime unit: a conv's as PaddleSlim writes it, the other ops in PaddleSlim's key style
    (``TableLatencyEvaluator``'s batch_norm, activation, eltwise and pooling keys), and ``head_tail``."""
    if isinstance(unit, PlacedConv):
        return latency_key(unit)
    if unit.kind == 'batch_norm':
        fields = ('batch_norm', 'None', 1) + unit.shape
    elif unit.kind == 'relu':
        fields = ('relu', 1) + unit.shape
    elif unit.kind == 'add':
        fields = ('eltwise', 2, 1) + unit.shape
    elif unit.kind == 'max_pool':
        fields = ('pooling', 0, 1) + unit.shape + (unit.pool, 0, unit.pool, 1, 1)
    elif unit.kind == 'head_tail':
        fields = ('head_tail', 1) + sum(unit.shape, ()) + unit.last_dims
    else:
        raise ValueError('no table key for runtime op {!r}'.format(unit.kind))
    return ','.join(str(v) for v in fields)


def table_kernels(entries):
    """The depthwise kernel sizes a table's conv keys cover (3, and 5 for a table built with --kernels 3,5)."""
    kernels = set()
    for key in entries:
        fields = key.split(',')
        if fields[0] == 'conv' and len(fields) > 9 and fields[4] == fields[8]:  # groups == C_in: depthwise
            kernels.add(int(fields[9]))
    return kernels


def stem_input_sizes(entries):
    """The (H, W) the table's first convs (3 input channels) were measured at: the input size it prices."""
    sizes = set()
    for key in entries:
        fields = key.split(',')
        if fields[0] == 'conv' and len(fields) > 6 and fields[4] == '3':
            sizes.add((int(fields[5]), int(fields[6])))
    return sizes


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

    @property
    def whole_network(self):
        """A table of every runtime op (it holds the run's fixed cost), or a conv-only one such as latency_855.txt."""
        return RUN_OVERHEAD_KEY in self.entries

    def price(self, units):
        """Sum over the units it prices, or (None, missing keys) when it cannot price them all.

        A conv-only table sums the convs (what the original's numbers mean: about 0.6 to 0.7 of a network on the
        CPUs measured here); a whole-network table sums every unit plus the run's fixed cost once.
        """
        keys = [unit_key(u) for u in (units if self.whole_network else convs_of(units))]
        keys += [RUN_OVERHEAD_KEY] if self.whole_network else []
        missing = sorted({k for k in keys if k not in self.entries})
        if missing:
            return None, missing
        return sum(self.entries[k] for k in keys), []


def _check_bound(key, bound, ctype):
    """A bound is a plain number (or absent): ``20ms`` or ``"20000"`` would load, then fail on the first comparison
    mid-search, after the controller started."""
    if bound is None or (isinstance(bound, (int, float)) and not isinstance(bound, bool)):
        return
    unit = 'microseconds, e.g. 20000 for 20 ms' if ctype == 'latency' else 'FLOPs, e.g. 250000000'
    raise ConfigError('Constraint.{} is {!r}; write a plain number in {}'.format(key, bound, unit))


@register
class Constraint:
    """The search's limit: ``ctype`` flops or latency (us, from ``table_file``), inclusive [min, max].

    ``max_quantile`` (not in the original): instead of ``max_constraint``, the limit that admits that share of the
    space as this config prices it (``resolve_quantile``), so that one config serves machines whose tables differ.
    ``near_limit`` (not in the original): admit only candidates within that fraction below the limit (0.05: from
    95% of ``max_constraint`` up), where the best are under a latency limit (issue 28, docs/strategies.md).
    """

    def __init__(self, ctype, max_constraint=None, min_constraint=None, table_file=None, max_quantile=None,
                 near_limit=None):
        if ctype not in CTYPES:
            raise ConfigError('Constraint.ctype is {!r}; use one of {}'.format(ctype, ', '.join(CTYPES)))
        if ctype == 'latency' and not table_file:
            raise ConfigError('Constraint.ctype is latency but Constraint.table_file is not set; point it at a '
                              'latency table')
        for key, bound in (('max_constraint', max_constraint), ('min_constraint', min_constraint)):
            _check_bound(key, bound, ctype)
        if None not in (min_constraint, max_constraint) and min_constraint > max_constraint:
            raise ConfigError('Constraint.min_constraint ({}) is above Constraint.max_constraint ({})'.format(
                min_constraint, max_constraint))
        if max_quantile is not None:
            if max_constraint is not None:
                raise ConfigError('Constraint has both max_constraint ({}) and max_quantile ({}); keep one'.format(
                    max_constraint, max_quantile))
            if not (of_type(max_quantile, float) and 0 < max_quantile < 1):
                raise ConfigError('Constraint.max_quantile is {!r}; write a share of the space between 0 and 1, e.g. '
                                  '0.45'.format(max_quantile))
        if near_limit is not None and not (of_type(near_limit, float) and 0 < near_limit < 1 and
                                           (max_constraint is not None or max_quantile is not None)):
            raise ConfigError('Constraint.near_limit is {!r}; write a fraction between 0 and 1 (0.05: from 95% of the '
                              'limit up), with max_constraint or max_quantile set'.format(near_limit))
        self.near_limit = near_limit
        self.ctype, self.table_file = ctype, table_file
        self.max_constraint, self.min_constraint = max_constraint, min_constraint
        self.max_quantile = max_quantile

    @property
    def metric(self):
        """The price (and history column) the bounds apply to: 'flops' or 'latency_us'."""
        return 'flops' if self.ctype == 'flops' else 'latency_us'

    def value(self, price):
        return getattr(price, self.metric)

    def admits(self, price):
        """True inside the bounds, False outside, None when the value is unknown (unpriced)."""
        value = self.value(price)
        return None if value is None else self.admits_value(value)

    @property
    def lower_bound(self):
        """``min_constraint``, raised to ``near_limit`` below the limit where that is set (None: no lower bound)."""
        bounds = [] if self.min_constraint is None else [self.min_constraint]
        if self.near_limit is not None and self.max_constraint is not None:
            bounds.append((1 - self.near_limit) * self.max_constraint)
        return max(bounds) if bounds else None

    def admits_value(self, value):
        low = self.lower_bound
        return not ((self.max_constraint is not None and value > self.max_constraint) or
                    (low is not None and value < low))


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
        self.head_kwargs.setdefault('num_classes', Settings.from_config(cfg).num_classes)
        if constraint is not None:  # ``table``: load_constraint_table's, for the constraint's own pricing
            table = self._check_table_size(table, constraint.ctype)
        self.table = table

    def _check_table_size(self, table, ctype):
        """A table measured at another input size cannot price a single candidate: an error for a latency search,
        a warning (and no latency column) for a FLOPs search."""
        sizes = stem_input_sizes(table.entries) if table is not None else set()
        if not sizes or self.input_size in sizes:
            return table
        message = ('Constraint.table_file {} was measured for {} inputs (its first convs), but the config prices '
                   'at {}x{} (TrainReader.inputs_def.image_shape); build a table at this size with '
                   'tools/build_latency_table.py -c CONFIG --out TABLE').format(
            table.path, ', '.join('{}x{}'.format(*s) for s in sorted(sizes)), *self.input_size)
        if ctype == 'latency':
            raise ConfigError(message)
        logger.warning('%s; ignored, since Constraint.ctype is flops', message)
        return None

    def blazenet_kwargs(self, tokens):
        """The BlazeNet arguments of a candidate: the config's BlazeNet section overlaid by the tokens."""
        return dict(self.backbone_defaults, **self.space.blazenet_args(tokens))

    def describe_units(self, tokens):
        """Every runtime unit of the candidate's deployed network, in execution order."""
        plan = blazenet_plan(**self.blazenet_kwargs(tokens))
        return place_blazeface_units(plan, self.head_kwargs, *self.input_size)

    def describe(self, tokens):
        """The candidate's convs, in execution order."""
        return convs_of(self.describe_units(tokens))

    def price(self, tokens):
        units = self.describe_units(tokens)
        convs = convs_of(units)
        price = Price(flops=sum(conv_flops(p) for p in convs), params=sum(conv_params(p.spec) for p in convs))
        if self.table is not None:
            price.latency_us, price.unpriced = self.table.price(units)
        return price


QUANTILE_SAMPLES = 2000  # random candidates (seed 0) a quantile of the space is read from


def space_values(pricer, constraint, samples=QUANTILE_SAMPLES, seed=0):
    """The constraint's metric of ``samples`` random candidates of the space (the priced ones)."""
    values = [constraint.value(pricer.price(t)) for t in sample_candidates(pricer.space, samples, seed)]
    return [v for v in values if v is not None]


def space_quantile(pricer, constraint, quantile, samples=QUANTILE_SAMPLES):
    """The constraint's metric at ``quantile`` of the space (rounded): a max_constraint that admits that share."""
    values = space_values(pricer, constraint, samples)
    if not values:
        raise ConfigError('Constraint.table_file prices none of {} random candidates; build it for this config with '
                          'tools/build_latency_table.py'.format(samples))
    return int(round(float(np.quantile(values, quantile))))


def resolve_quantile(pricer, constraint):
    """Set ``max_constraint`` from ``max_quantile`` (once, when the config loads); returns the line to log."""
    if constraint.max_quantile is None:
        return None
    constraint.max_constraint = space_quantile(pricer, constraint, constraint.max_quantile)
    return 'Constraint.max_quantile {}: max_constraint {} {} (admits {:.0%} of the space as {} prices it)'.format(
        constraint.max_quantile, constraint.max_constraint, 'us' if constraint.ctype == 'latency' else 'FLOPs',
        constraint.max_quantile, constraint.table_file if constraint.ctype == 'latency' else 'the FLOPs count')
