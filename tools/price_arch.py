"""Price candidates without training: one JSON object per line.

    python tools/price_arch.py -c blazeface.yml --tokens 2,1,3,8,2,1,2,1,0 [--tokens ...] [-o Constraint.table_file=PATH]
    python tools/price_arch.py -c demo.yml --quantile 0.45 [--samples 2000]

--quantile Q prints one number instead: the constraint's metric (FLOPs, or latency in us) at that quantile of
--samples random candidates of the space (seed 0), i.e. a max_constraint that admits a share Q of the space on the
device the table describes. `make demo` sets its limit this way, since a table of a small shared VM moves with the
machine's speed.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

from ppdet.core.cli import ArgsParser, checked_tokens, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402
from ppdet.slim.nas.constraint import space_quantile  # noqa: E402


def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--tokens', action='append', type=str,
                        help='a token vector, comma-separated; repeat for more candidates')
    parser.add_argument('--quantile', type=float, help='print the metric at this quantile of the space (0 to 1)')
    parser.add_argument('--samples', type=int, default=2000, help='random candidates for --quantile')
    args = parser.parse_args(argv)
    if bool(args.tokens) == (args.quantile is not None):
        raise ConfigError('give --tokens (candidates to price) or --quantile (a bound for the space), not both')
    setup = load_search_config(args.config, args.opt)
    if args.quantile is not None:
        if not 0 < args.quantile < 1 or args.samples < 1:
            raise ConfigError('--quantile must be between 0 and 1 and --samples positive, got {} and {}'.format(
                args.quantile, args.samples))
        print(space_quantile(setup.pricer, setup.constraint, args.quantile, args.samples), flush=True)
        return
    for text in args.tokens:
        tokens = checked_tokens(setup, text)
        price = setup.pricer.price(tokens)
        print(json.dumps({'tokens': tokens, 'flops': price.flops, 'params': price.params,
                          'latency_us': price.latency_us, 'unpriced': price.unpriced,
                          'within_constraint': setup.constraint.admits(price)}), flush=True)


if __name__ == '__main__':
    run_cli(main)
