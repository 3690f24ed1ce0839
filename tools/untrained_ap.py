"""AP of a search's trained candidates next to the same networks untrained: did training work?

    python tools/untrained_ap.py -c demo.yml [--history demo_output/search_history.csv]

Builds each trained candidate of the history afresh (the search's seed, so the same initial weights), evaluates it
without training and prints one JSON object per candidate: tokens, trained AP (from the history), untrained AP.
"""
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.core.cli import ArgsParser, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.candidate import CandidateTrainer  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402


def main():
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--history', default=None, help='search_history.csv (default: save_dir of the config)')
    args = parser.parse_args()
    setup = load_search_config(args.config, args.opt)
    path = args.history or os.path.join(setup.cfg.get('save_dir', 'nas_checkpoint'), 'search_history.csv')
    if not os.path.isfile(path):
        raise ConfigError('{} not found; run the search first or pass --history'.format(path))
    with open(path, newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['status'] == 'trained']
    trainer = CandidateTrainer(setup.cfg, seed=int(setup.cfg.get('seed', 0)))
    for row in rows:
        tokens = [int(t) for t in row['tokens'].split()]
        untrained = trainer.evaluate(trainer.build(setup.pricer.blazenet_kwargs(tokens)))
        print(json.dumps({'tokens': tokens, 'trained_ap': float(row['ap']), 'untrained_ap': untrained}), flush=True)


if __name__ == '__main__':
    run_cli(main)
