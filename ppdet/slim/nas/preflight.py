"""What a search checks before its controller starts or anything is built.

A search that cannot finish should say so in seconds, not after the controller is listening and the first
candidate is built: the datasets of both readers (directory, annotation file, image directory), bounds that no
candidate of the space can meet (or, for latency, under 1% of a priced sample), and a writable ``save_dir``. The
latency table is checked when the config loads.
Each problem is one line naming the key and the fix; all of them are reported at once.
"""
import os
import tempfile

import numpy as np

from ppdet.core.workspace import ConfigError
from ppdet.data.reader import check_reader
from ppdet.data.source.widerface import DatasetError
from ppdet.slim.nas.constraint import space_values

__all__ = ['check_search_inputs', 'check_readers', 'get_dataset_hint']

READERS = (('TrainReader', 'train'), ('EvalReader', 'eval'))
BOUNDS_SAMPLES = 500  # random candidates a latency bound is checked on (about a second of pricing)
MIN_ADMITTED = 0.01  # a bound admitting less than this share of them is a mistake, not a search


def get_dataset_hint(dataset_dir):
    """The two ways forward when WIDER FACE is not there yet."""
    return ('get WIDER FACE with: python tools/download_widerface.py --out {} (or set dataset_dir to your copy), '
            'or try the search on synthetic data first: make demo'.format(dataset_dir or '<dataset_dir>'))


def _dataset_dir(cfg, section):
    dataset = (cfg.get(section) or {}).get('dataset')
    return dataset.get('dataset_dir') if isinstance(dataset, dict) else None


def _dataset_problems(cfg):
    """One line per reader whose dataset is unusable; a directory missing for both readers is one line."""
    problems, missing_dirs = [], {}
    for section, mode in READERS:
        try:
            check_reader(cfg.get(section), mode)
        except DatasetError as e:
            if e.key == 'dataset_dir':
                missing_dirs.setdefault(e.path, []).append(section)
            elif e.path:
                problems.append('{}.dataset.{}: {} not found; {}'.format(
                    section, e.key, e.path, get_dataset_hint(_dataset_dir(cfg, section))))
            else:
                problems.append('{}.dataset: {}'.format(section, e))
        except ConfigError as e:
            problems.append(str(e))
    for directory, sections in missing_dirs.items():
        keys = ' and '.join('{}.dataset.dataset_dir'.format(s) for s in sections)
        problems.insert(0, '{}: dataset directory {} not found; {}'.format(keys, directory,
                                                                           get_dataset_hint(directory)))
    return problems


def _bounds_problem(setup):
    """Bounds outside what the space can price, e.g. latency microseconds left in place after ctype: flops."""
    if setup.constraint.ctype != 'flops':
        return _latency_bounds_problem(setup)
    constraint, space = setup.constraint, setup.space
    smallest = setup.pricer.price([0] * len(space.range_table())).flops
    largest = setup.pricer.price([r - 1 for r in space.range_table()]).flops
    if constraint.max_constraint is not None and constraint.max_constraint < smallest:
        return ('Constraint.max_constraint {} is below the FLOPs of the smallest candidate ({}), so nothing can be '
                'searched; with ctype flops the bounds are FLOPs at the train input size (the space spans {} to '
                '{})'.format(constraint.max_constraint, smallest, smallest, largest))
    if constraint.min_constraint is not None and constraint.min_constraint > largest:
        return ('Constraint.min_constraint {} is above the FLOPs of the largest candidate ({}), so nothing can be '
                'searched; lower it (the space spans {} to {})'.format(constraint.min_constraint, largest,
                                                                       smallest, largest))
    return None


def _latency_bounds_problem(setup):
    """Latency bounds that admit (almost) nothing of a priced sample: a table's latencies need not grow with every
    token, so the space's range is read from a sample rather than from its smallest and largest candidates. Such a
    search would otherwise log ``skipped`` for minutes until max_consecutive_skips."""
    constraint = setup.constraint
    values = space_values(setup.pricer, constraint, BOUNDS_SAMPLES)
    if not values:
        return None  # nothing priced: the table's problem, which the search reports as unpriced candidates
    admitted = sum(constraint.admits_value(v) for v in values)
    if admitted >= MIN_ADMITTED * len(values):
        return None
    keys = ('min_constraint', 'near_limit', 'max_constraint')
    bounds = ' and '.join('{} {}'.format(k, getattr(constraint, k)) for k in keys
                          if getattr(constraint, k) is not None)
    return ('Constraint {} us admit{} {} of {} priced random candidates ({:.1%}), as {} prices the space ({} to {} us, '
            'median {}); set a limit in that range, e.g. the one python tools/price_arch.py -c {} --quantile 0.45 '
            'prints (it admits 45% of the space), or Constraint.max_quantile: 0.45'.format(
                bounds, '' if ' and ' in bounds else 's', admitted, len(values), admitted / len(values),
                constraint.table_file, int(min(values)), int(max(values)), int(np.median(values)),
                setup.cfg.get('filename', 'CONFIG')))


def _save_dir_problem(save_dir):
    """Tried for real (root passes every permission test): create the directory and a file in it."""
    try:
        os.makedirs(save_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=save_dir, prefix='.write_check_'):
            pass
    except OSError as e:
        return 'save_dir: cannot write to {} ({}); set a writable directory with -o save_dir=PATH'.format(
            save_dir, e.strerror or e)
    return None


def check_readers(cfg):
    """Raise one ConfigError listing the readers' dataset problems (for a tool that trains without searching)."""
    problems = _dataset_problems(cfg)
    if problems:
        raise ConfigError('\n'.join(problems))


def check_search_inputs(setup):
    """Raise one ConfigError listing every problem (a line each); ``save_dir`` is created only if all else is fine."""
    problems = _dataset_problems(setup.cfg)
    bounds = _bounds_problem(setup)
    if bounds:
        problems.append(bounds)
    if not problems:
        save_dir = _save_dir_problem(setup.settings.save_dir)
        problems += [save_dir] if save_dir else []
    if problems:
        raise ConfigError('\n'.join(problems))
