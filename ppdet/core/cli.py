"""Command-line parsing shared by train_nas.py and tools/: ``-c config.yml -o key=value ...``."""
import sys
from argparse import ArgumentParser, RawDescriptionHelpFormatter

import yaml

from .workspace import ConfigError

__all__ = ['ArgsParser', 'run_cli']


class ArgsParser(ArgumentParser):
    """The original's parser: ``-o a.b=value`` values are read as YAML (``-o max_iters=10`` is an int)."""

    def __init__(self, **kwargs):
        kwargs.setdefault('formatter_class', RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        self.add_argument('-c', '--config', required=True, help='configuration file to use')
        self.add_argument('-o', '--opt', nargs='*', default=[],
                          help='set configuration options, e.g. -o max_iters=10 Constraint.ctype=flops')

    def parse_args(self, argv=None):
        args = super().parse_args(argv)
        args.opt = parse_overrides(args.opt)
        return args


def parse_overrides(pairs):
    overrides = {}
    for pair in pairs or []:
        if '=' not in pair:
            raise ConfigError('-o {!r}: options are written key=value, e.g. -o max_iters=10'.format(pair))
        key, text = pair.split('=', 1)
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError('-o {}: {!r} is not a valid YAML value'.format(key, text)) from None
    return overrides


def run_cli(main):
    """Run ``main()``; a ConfigError (a user mistake) becomes one line on stderr per problem and exit code 2."""
    try:
        return main()
    except ConfigError as e:
        for line in str(e).splitlines():
            print('error: {}'.format(line), file=sys.stderr)
        sys.exit(2)
