"""Price candidates without training: one JSON object per line.

    python tools/price_arch.py -c blazeface.yml --tokens 2,1,3,8,2,1,2,1,0 [--tokens ...] [-o Constraint.table_file=PATH]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.core.cli import ArgsParser, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402


def parse_tokens(text):
    try:
        return [int(t) for t in text.split(',')]
    except ValueError:
        raise ConfigError('--tokens {!r}: write the tokens as comma-separated integers, e.g. 2,1,3,8,2,1,2,1,0'
                          .format(text)) from None


def main():
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--tokens', action='append', required=True, type=str,
                        help='a token vector, comma-separated; repeat for more candidates')
    args = parser.parse_args()
    setup = load_search_config(args.config, args.opt)
    for text in args.tokens:
        tokens = parse_tokens(text)
        try:
            price = setup.pricer.price(tokens)
        except ValueError as e:
            raise ConfigError('--tokens {}: {}'.format(text, e)) from None
        print(json.dumps({'tokens': tokens, 'flops': price.flops, 'params': price.params,
                          'latency_us': price.latency_us, 'unpriced': price.unpriced,
                          'within_constraint': setup.constraint.admits(price)}), flush=True)


if __name__ == '__main__':
    run_cli(main)
