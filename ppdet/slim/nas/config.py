"""Loading a search config: YAML + ``-o`` overrides -> checked config, Constraint, search space, pricer."""
import os
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
from ppdet.slim.nas.vocabulary import setting
from search_space import search_space_name

__all__ = ['SearchSetup', 'load_search_config', 'SEARCH_KEYS']

# Top-level keys the search reads, and the sections of registered classes it builds from the config.
SEARCH_KEYS = ('architecture', 'max_iters', 'use_gpu', 'log_smooth_window', 'log_iter', 'metric', 'save_dir',
               'num_classes', 'reduce_rate', 'init_temperature', 'is_server', 'search_steps', 'server_ip',
               'server_port', 'search_space', 'TrainReader', 'EvalReader', 'max_consecutive_skips', 'seed',
               'max_client_wait', 'controller_wait', 'workers', 'inherit_weights', 'rerank_top_k', 'rerank_seeds',
               'strategy', 'storage', 'study_name', 'population_size', 'tournament_size', 'tpe_startup_trials',
               'heartbeat_interval', 'heartbeat_grace', 'client_lease', 'pruner', 'prune_interval', 'largest_sample',
               'warm_start', 'evaluator', 'supernet_weights') + tuple(SUPERNET_DEFAULTS) + ('supernet_iters',)
SEARCH_SECTIONS = ('Constraint', 'BlazeNet', 'BlazeFace', 'LearningRate', 'OptimizerBuilder')
# Whole numbers >= 1 (strategy settings; their defaults are vocabulary.DEFAULTS).
POSITIVE_KEYS = ('population_size', 'tournament_size', 'tpe_startup_trials', 'heartbeat_interval',
                 'heartbeat_grace', 'largest_sample')


@dataclass
class SearchSetup:
    cfg: dict
    constraint: Constraint
    space_name: str
    space: object
    pricer: CandidatePricer
    note: Optional[str] = None  # what the search says when it starts (the limit a quantile gave, why 3x3 only)


def load_search_config(path, overrides=None):
    """Everything a search or a pricing tool needs, with config mistakes raised before anything runs."""
    cfg = merge_config(overrides or {}, load_config(path))
    check_top_level_keys(cfg, SEARCH_KEYS, SEARCH_SECTIONS)
    for key, only in (('architecture', 'BlazeFace'), ('metric', 'WIDERFACE')):
        if cfg.get(key, only) != only:
            raise ConfigError('{}: {} is {!r}; this search supports {} only'.format(path, key, cfg[key], only))
    if int(setting(cfg, 'search_steps')) <= 0:
        raise ConfigError('{}: search_steps is {}; it must be a positive number of candidates'.format(
            path, cfg.get('search_steps')))
    for key in ('rerank_top_k', 'rerank_seeds'):
        value = cfg.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError('{}: {} is {!r}; it must be a whole number >= 0 (rerank_top_k 0 turns re-ranking '
                              'off)'.format(path, key, value))
    _check_strategy_keys(path, cfg)
    _check_evaluator_keys(path, cfg)
    lease_seconds(cfg.get('client_lease'), '{}: '.format(path))
    if not isinstance(setting(cfg, 'inherit_weights'), bool):
        raise ConfigError('{}: inherit_weights is {!r}; write true or false'.format(path, cfg['inherit_weights']))
    if 'Constraint' not in cfg:
        raise ConfigError('{}: no Constraint section; add one with ctype flops or latency'.format(path))
    constraint = create('Constraint', cfg)
    table = load_constraint_table(constraint, cfg.get('filename'))
    prices_5x5 = table is not None and 5 in table_kernels(table.entries)
    requested = setting(cfg, 'search_space')
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
    return SearchSetup(cfg, constraint, name, space, pricer, '\n'.join(n for n in notes if n) or None)


def _check_pruner(path, cfg, strategy):
    pruner = setting(cfg, 'pruner')
    if pruner not in PRUNERS:
        raise ConfigError('{}: pruner is {!r}; use one of {}'.format(path, pruner, ', '.join(PRUNERS)))
    if pruner != 'none' and strategy not in PRUNING_STRATEGIES:
        raise ConfigError('{}: pruner {} works with the single-objective study strategies ({}), not strategy {}; '
                          'set pruner: none or change the strategy'.format(path, pruner, ', '.join(PRUNING_STRATEGIES),
                                                                            strategy))
    if 'prune_interval' not in cfg:
        return
    interval, iters = cfg['prune_interval'], int(setting(cfg, 'max_iters'))
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval < iters:
        raise ConfigError('{}: prune_interval is {!r}; it must be a whole number of iterations from 1 to max_iters - '
                          '1 ({})'.format(path, interval, iters - 1))


def _check_strategy_keys(path, cfg):
    strategy = setting(cfg, 'strategy')
    if strategy not in STRATEGIES:
        raise ConfigError('{}: strategy is {!r}; use one of {}'.format(path, strategy, ', '.join(STRATEGIES)))
    for key in POSITIVE_KEYS:
        value = cfg.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError('{}: {} is {!r}; it must be a whole number >= 1'.format(path, key, value))
    grace, interval = setting(cfg, 'heartbeat_grace'), setting(cfg, 'heartbeat_interval')
    if grace <= interval:
        raise ConfigError('{}: heartbeat_grace ({}) must exceed heartbeat_interval ({}), or every worker looks '
                          'dead'.format(path, grace, interval))
    for key in ('storage', 'study_name'):
        if key in cfg and not (isinstance(cfg[key], str) and cfg[key]):
            raise ConfigError('{}: {} is {!r}; give a non-empty string{}'.format(
                path, key, cfg[key], ' (e.g. postgresql://user:password@host/db)' if key == 'storage' else ''))
    _check_pruner(path, cfg, strategy)
    _check_warm_start(path, cfg, strategy)
    if strategy != 'sanas' and (setting(cfg, 'is_server') is False or cfg.get('server_ip')):
        raise ConfigError('{}: is_server: false / server_ip join the host of a sanas search, but strategy is {}, whose '
                          'machines join one study through storage: give every machine the same storage='
                          'postgresql://user:password@host/db (README, Many machines)'.format(path, strategy))
    if 'storage' in cfg and strategy == 'sanas':
        raise ConfigError('{}: storage is set but strategy is sanas, whose record is its controller; choose a '
                          'strategy of {} to search on a storage'.format(path, ', '.join(STRATEGIES[1:])))


def _check_warm_start(path, cfg, strategy):
    value = setting(cfg, 'warm_start')
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError('{}: warm_start is {!r}; it must be a whole number >= 0 (0: no warm start)'.format(
            path, value))
    if value and strategy in ('sanas', 'largest'):
        raise ConfigError('{}: warm_start seeds a study strategy (random, evolution, tpe, nsga2) with the most '
                          'expensive admitted candidates; strategy {} does not take it: set warm_start: 0 or change '
                          'the strategy'.format(path, strategy))


def _check_evaluator_keys(path, cfg):
    evaluator = setting(cfg, 'evaluator')
    if evaluator not in EVALUATORS:
        raise ConfigError('{}: evaluator is {!r}; use train (each candidate trained, the original) or supernet (each '
                          'scored by a supernet trained once)'.format(path, evaluator))
    SupernetSettings.from_config(cfg, path)
    weights = cfg.get('supernet_weights')
    dirs = weight_dirs(weights) if isinstance(weights, (str, list)) else []
    if weights is not None and not (dirs and all(isinstance(d, str) and d for d in dirs)):
        raise ConfigError('{}: supernet_weights is {!r}; give the directory tools/supernet.py train wrote, or a list '
                          'of them (their scores are averaged)'.format(path, weights))
    if evaluator == 'train':
        if weights is not None:
            raise ConfigError('{}: supernet_weights is set but evaluator is train; add evaluator: supernet to search '
                              'on its scores'.format(path))
        return
    for folder in dirs:
        if not os.path.isfile(os.path.join(folder, META)):
            raise ConfigError('{}: supernet_weights {}: no trained supernet there ({}); train one with python '
                              'tools/supernet.py train -c {} --out {}'.format(path, folder, META, path, folder))
    for key, off in (('pruner', 'none'), ('inherit_weights', False)):
        if cfg.get(key, off) != off:
            raise ConfigError('{}: {} trains candidates; with evaluator: supernet a step is a scoring, so set {}: '
                              '{}'.format(path, key, key, str(off).lower()))


def _why_3x3(cfg, requested, name, table):
    """Why the kernel token is fixed, naming the 5x5 keys the starting structure would need."""
    full = SEARCHSPACE.get(requested)()
    tokens = full.init_tokens()
    tokens[-1] = full.use_5x5kernel.index(1)
    missing = [k for k in CandidatePricer(cfg, full, table=table).price(tokens).unpriced if ',5,' in k]
    return ('{} has no 5x5 keys (the starting structure with 5x5 kernels needs {}, e.g. {}): this latency search '
            'uses {}; a table built with --kernels 3,5 keeps the kernel token free'.format(
                table.path, len(missing), missing[0] if missing else '-', name))
