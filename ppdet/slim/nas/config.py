"""Loading a search config: YAML + ``-o`` overrides -> checked config, Constraint, search space, pricer."""
import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Optional

from paddleslim.nas.search_space.search_space_registry import SEARCHSPACE

import ppdet.data  # noqa: F401  (registers the dataset and transform tags)
import ppdet.optimizer  # noqa: F401  (registers LearningRate, OptimizerBuilder and their tags)
import search_space  # noqa: F401  (registers BlazeFaceNasSpace in PaddleSlim)
from ppdet.core.workspace import ConfigError, check_top_level_keys, create, load_config, merge_config
from ppdet.modeling.backbones.blazenet import blazenet_plan
from ppdet.slim.nas.constraint import (CandidatePricer, Constraint, load_constraint_table, resolve_quantile,
                                       table_kernels)
from ppdet.slim.nas.controller import lease_seconds
from ppdet.slim.nas.strategies import PRUNERS, PRUNING_STRATEGIES, STRATEGIES
from ppdet.slim.nas.supernet import EVALUATORS, META, SUPERNET_DEFAULTS, SupernetSettings, weight_dirs
from ppdet.slim.nas.vocabulary import Settings, of_type
from search_space import search_space_name

__all__ = ['SearchSetup', 'load_search_config', 'SEARCH_KEYS']

# Top-level keys the search reads (those of Settings, and the ones other parts check themselves), and the sections of
# registered classes it builds from the config.
SEARCH_KEYS = tuple(f.name for f in dataclasses.fields(Settings)) + (
    'architecture', 'metric', 'TrainReader', 'EvalReader', 'workers', 'supernet_weights') + tuple(
    SUPERNET_DEFAULTS) + ('supernet_iters',)
SEARCH_SECTIONS = ('Constraint', 'BlazeNet', 'BlazeFace', 'LearningRate', 'OptimizerBuilder')
# Whole numbers >= 1 (strategy settings; their defaults are vocabulary.Settings's).
POSITIVE_KEYS = ('population_size', 'tournament_size', 'tpe_startup_trials', 'heartbeat_interval',
                 'heartbeat_grace', 'largest_sample')


@dataclass
class SearchSetup:
    cfg: dict
    settings: Settings
    constraint: Constraint
    space_name: str
    space: object
    pricer: CandidatePricer
    supernet: SupernetSettings  # the supernet_* keys (``evaluator: supernet``; tools/supernet.py)
    note: Optional[str] = None  # what the search says when it starts (the limit a quantile gave, why 3x3 only)


def load_search_config(path, overrides=None):
    """Everything a search or a pricing tool needs, with config mistakes raised before anything runs."""
    cfg = merge_config(overrides or {}, load_config(path))
    check_top_level_keys(cfg, SEARCH_KEYS, SEARCH_SECTIONS)
    for key, only in (('architecture', 'BlazeFace'), ('metric', 'WIDERFACE')):
        if cfg.get(key, only) != only:
            raise ConfigError('{}: {} is {!r}; this search supports {} only'.format(path, key, cfg[key], only))
    lease_seconds(cfg.get('client_lease'), '{}: '.format(path))  # its own line says what the lease is for
    settings = _typed_settings(path, cfg)
    if settings.search_steps <= 0:
        raise ConfigError('{}: search_steps is {}; it must be a positive number of candidates'.format(
            path, settings.search_steps))
    for key in ('rerank_top_k', 'rerank_seeds'):
        value = getattr(settings, key)
        if value is not None and value < 0:
            raise ConfigError('{}: {} is {!r}; it must be a whole number >= 0 (rerank_top_k 0 turns re-ranking '
                              'off)'.format(path, key, value))
    _check_strategy_keys(path, cfg, settings)
    supernet = _check_evaluator_keys(path, cfg, settings)
    if 'Constraint' not in cfg:
        raise ConfigError('{}: no Constraint section; add one with ctype flops or latency'.format(path))
    constraint = create('Constraint', cfg)
    table = load_constraint_table(constraint, cfg.get('filename'))
    prices_5x5 = table is not None and 5 in table_kernels(table.entries)
    requested = settings.search_space
    name = search_space_name(requested, constraint.ctype, prices_5x5)
    space_cls = SEARCHSPACE.get(name)
    if space_cls is None:
        raise ConfigError('{}: search_space {!r} is not registered; use BlazeFaceNasSpace'.format(path, name))
    space = space_cls()
    if constraint.ctype == 'latency' and 1 in getattr(space, 'use_5x5kernel', [0]) and not prices_5x5:
        raise ConfigError('{}: search_space {} has 5x5 kernels, which Constraint.table_file {} does not price; '
                          'build a table with tools/build_latency_table.py --kernels 3,5'.format(
                              path, name, table.path))
    pricer = CandidatePricer(cfg, space, constraint, table)
    blazenet_plan(**pricer.blazenet_kwargs(space.init_tokens()))  # BlazeNet keys that contradict: one line, now
    notes = [resolve_quantile(pricer, constraint), _why_3x3(cfg, requested, name, table) if name != requested else None]
    return SearchSetup(cfg, settings, constraint, name, space, pricer, supernet,
                       '\n'.join(n for n in notes if n) or None)


# What a value of each type is called in a one-line error.
TYPE_WORDS = {int: 'a whole number', float: 'a number', bool: 'true or false', str: 'a string'}


def _typed_settings(path, cfg):
    """``cfg``'s search keys as the one ``Settings`` the search reads; a value of the wrong type is one line."""
    hints = typing.get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        if field.name not in cfg:
            continue
        value, kind = cfg[field.name], hints[field.name]
        optional = typing.get_origin(kind) is typing.Union
        kind = typing.get_args(kind)[0] if optional else kind
        if not (of_type(value, kind) or optional and value is None):
            raise ConfigError('{}: {} is {!r}; {} {}'.format(
                path, field.name, value, 'write' if kind is bool else 'it must be', TYPE_WORDS[kind]))
    return Settings.from_config(cfg)


def _check_pruner(path, settings, strategy):
    pruner = settings.pruner
    if pruner not in PRUNERS:
        raise ConfigError('{}: pruner is {!r}; use one of {}'.format(path, pruner, ', '.join(PRUNERS)))
    if pruner != 'none' and strategy not in PRUNING_STRATEGIES:
        raise ConfigError('{}: pruner {} works with the single-objective study strategies ({}), not strategy {}; '
                          'set pruner: none or change the strategy'.format(path, pruner, ', '.join(PRUNING_STRATEGIES),
                                                                            strategy))
    interval, iters = settings.prune_interval, settings.max_iters
    if interval is not None and not 1 <= interval < iters:
        raise ConfigError('{}: prune_interval is {!r}; it must be a whole number of iterations from 1 to max_iters - '
                          '1 ({})'.format(path, interval, iters - 1))


def _check_strategy_keys(path, cfg, settings):
    strategy = settings.strategy
    if strategy not in STRATEGIES:
        raise ConfigError('{}: strategy is {!r}; use one of {}'.format(path, strategy, ', '.join(STRATEGIES)))
    for key in POSITIVE_KEYS:
        value = getattr(settings, key)
        if value < 1:
            raise ConfigError('{}: {} is {!r}; it must be a whole number >= 1'.format(path, key, value))
    grace, interval = settings.heartbeat_grace, settings.heartbeat_interval
    if grace <= interval:
        raise ConfigError('{}: heartbeat_grace ({}) must exceed heartbeat_interval ({}), or every worker looks '
                          'dead'.format(path, grace, interval))
    for key in ('storage', 'study_name'):
        if key in cfg and not getattr(settings, key):
            raise ConfigError('{}: {} is {!r}; give a non-empty string{}'.format(
                path, key, cfg[key], ' (e.g. postgresql://user:password@host/db)' if key == 'storage' else ''))
    _check_pruner(path, settings, strategy)
    _check_warm_start(path, settings, strategy)
    if strategy != 'sanas' and (settings.is_server is False or settings.server_ip):
        raise ConfigError('{}: is_server: false / server_ip join the host of a sanas search, but strategy is {}, whose '
                          'machines join one study through storage: give every machine the same storage='
                          'postgresql://user:password@host/db (README, Many machines)'.format(path, strategy))
    if settings.storage is not None and strategy == 'sanas':
        raise ConfigError('{}: storage is set but strategy is sanas, whose record is its controller; choose a '
                          'strategy of {} to search on a storage'.format(path, ', '.join(STRATEGIES[1:])))


def _check_warm_start(path, settings, strategy):
    value = settings.warm_start
    if value < 0:
        raise ConfigError('{}: warm_start is {!r}; it must be a whole number >= 0 (0: no warm start)'.format(
            path, value))
    if value and strategy in ('sanas', 'largest'):
        raise ConfigError('{}: warm_start seeds a study strategy (random, evolution, tpe, nsga2) with the most '
                          'expensive admitted candidates; strategy {} does not take it: set warm_start: 0 or change '
                          'the strategy'.format(path, strategy))


def _check_evaluator_keys(path, cfg, settings):
    """The evaluator's keys checked; returns the supernet's settings."""
    evaluator = settings.evaluator
    if evaluator not in EVALUATORS:
        raise ConfigError('{}: evaluator is {!r}; use train (each candidate trained, the original) or supernet (each '
                          'scored by a supernet trained once)'.format(path, evaluator))
    supernet = SupernetSettings.from_config(cfg, path)
    weights = cfg.get('supernet_weights')
    dirs = weight_dirs(weights) if isinstance(weights, (str, list)) else []
    if weights is not None and not (dirs and all(isinstance(d, str) and d for d in dirs)):
        raise ConfigError('{}: supernet_weights is {!r}; give the directory tools/supernet.py train wrote, or a list '
                          'of them (their scores are averaged)'.format(path, weights))
    if evaluator == 'train':
        if weights is not None:
            raise ConfigError('{}: supernet_weights is set but evaluator is train; add evaluator: supernet to search '
                              'on its scores'.format(path))
        return supernet
    for folder in dirs:
        if not os.path.isfile(os.path.join(folder, META)):
            raise ConfigError('{}: supernet_weights {}: no trained supernet there ({}); train one with python '
                              'tools/supernet.py train -c {} --out {}'.format(path, folder, META, path, folder))
    for key, off in (('pruner', 'none'), ('inherit_weights', False)):
        if getattr(settings, key) != off:
            raise ConfigError('{}: {} trains candidates; with evaluator: supernet a step is a scoring, so set {}: '
                              '{}'.format(path, key, key, str(off).lower()))
    return supernet


def _why_3x3(cfg, requested, name, table):
    """Why the kernel token is fixed, naming the 5x5 keys the starting structure would need."""
    full = SEARCHSPACE.get(requested)()
    tokens = full.init_tokens()
    tokens[-1] = full.use_5x5kernel.index(1)
    missing = [k for k in CandidatePricer(cfg, full, table=table).price(tokens).unpriced if ',5,' in k]
    return ('{} has no 5x5 keys (the starting structure with 5x5 kernels needs {}, e.g. {}): this latency search '
            'uses {}; a table built with --kernels 3,5 keeps the kernel token free'.format(
                table.path, len(missing), missing[0] if missing else '-', name))
