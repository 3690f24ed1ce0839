"""Command-line parsing shared by train_nas.py and tools/: ``-c config.yml -o key=value ...``."""
import sys
from argparse import ArgumentParser, RawDescriptionHelpFormatter

import yaml

from .workspace import ConfigError

__all__ = ['ArgsParser', 'run_cli', 'int_list', 'checked_tokens', 'add_timing_arguments']


class ArgsParser(ArgumentParser):
    """The original's parser: ``-o a.b=value`` values are read as YAML (``-o max_iters=10`` is an int)."""

    def __init__(self, **kwargs):
        kwargs.setdefault('formatter_class', RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        self.add_argument('-c', '--config', required=True, help='configuration file to use')
        # extend: repeated -o accumulate (with the default 'store' a second -o silently replaced the first)
        self.add_argument('-o', '--opt', nargs='*', action='extend', default=[],
                          help='set configuration options, e.g. -o max_iters=10 Constraint.ctype=flops; repeatable')

    def parse_args(self, argv=None):
        args = super().parse_args(argv)
        args.opt = parse_overrides(args.opt)
        return args


def parse_overrides(pairs, option='-o'):
    """``key=value`` pairs as a dict, values read as YAML; a one-line ConfigError naming ``option`` otherwise."""
    overrides = {}
    for pair in pairs or []:
        if '=' not in pair:
            raise ConfigError('{0} {1!r}: options are written key=value, e.g. {0} max_iters=10'.format(option, pair))
        key, text = pair.split('=', 1)
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError('{} {}: {!r} is not a valid YAML value'.format(option, key, text)) from None
    return overrides


def int_list(text, option, example):
    """``"2,1,3"`` as ``[2, 1, 3]``, or a one-line ConfigError naming ``option`` (--tokens, --kernels)."""
    try:
        return [int(t) for t in text.split(',')]
    except ValueError:
        raise ConfigError('{} {!r}: write comma-separated integers, e.g. {}'.format(option, text, example)) from None


def checked_tokens(setup, text, option='--tokens'):
    """``text`` as tokens of the search space of ``setup`` (a ``SearchSetup``), or a one-line ConfigError naming the
    option: what every tool taking a token vector on its command line needs."""
    try:
        return setup.space.check_tokens(int_list(text, option, '2,1,3,8,2,1,2,1,0'))
    except ValueError as e:
        raise ConfigError('{} {}: {}'.format(option, text, e)) from None


def add_timing_arguments(parser):
    """The timing options of build_latency_table.py and validate_latency_table.py, so both time the same way."""
    parser.add_argument('--rounds', type=int, default=3,
                        help='timing rounds; in each, every model of a batch runs --repeats times')
    parser.add_argument('--repeats', type=int, default=10, help='timed runs per model and round; the median of '
                        'all is kept')
    parser.add_argument('--warmup', type=int, default=10, help='untimed runs before timing')
    parser.add_argument('--kernels', default='3', help='depthwise kernel sizes to cover: 3 (default) or 3,5')


def run_cli(main):
    """Run ``main()``; a ConfigError (a user mistake) becomes one line on stderr per problem and exit code 2."""
    try:
        return main()
    except ConfigError as e:
        for line in str(e).splitlines():
            print('error: {}'.format(line), file=sys.stderr)
        sys.exit(2)
