"""AP of candidates untrained, next to their trained AP: did training work?

    python tools/untrained_ap.py -c demo.yml [--history demo_output/search_history.csv]
    python tools/untrained_ap.py -c demo.yml --tokens 2,1,3,8,2,1,2,1,0 [--tokens ...]

Builds each trained candidate of the history (or each --tokens vector) afresh with the config's seed, so with the
initial weights its training started from, evaluates it without training and prints one JSON object per candidate:
tokens, trained AP (from the history; null for --tokens), untrained AP.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

import paddle  # noqa: E402
from ppdet.core.cli import ArgsParser, checked_tokens, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.candidate import CandidateTrainer  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402
from ppdet.slim.nas.files import History, row_tokens  # noqa: E402
from ppdet.slim.nas.vocabulary import HISTORY_NAME, Status  # noqa: E402


def _history_candidates(setup, path):
    path = path or os.path.join(setup.settings.save_dir, HISTORY_NAME)
    if not os.path.isfile(path):
        raise ConfigError('{} not found; run the search first or pass --history'.format(path))
    return [(row_tokens(r), float(r['ap'])) for r in History(path).rows if r['status'] == Status.TRAINED]


def main():
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--history', default=None, help='search_history.csv (default: save_dir of the config)')
    parser.add_argument('--tokens', action='append', help='a token vector instead of a history; repeat for more')
    args = parser.parse_args()
    setup = load_search_config(args.config, args.opt)
    if args.tokens and args.history:
        raise ConfigError('give --history (a search\'s candidates) or --tokens, not both')
    candidates = ([(checked_tokens(setup, t), None) for t in args.tokens] if args.tokens
                  else _history_candidates(setup, args.history))
    paddle.set_device('cpu')  # an untrained network's AP: no GPU needed
    trainer = CandidateTrainer(setup.cfg)
    for tokens, trained in candidates:
        untrained = trainer.evaluate(trainer.build(setup.pricer.blazenet_kwargs(tokens)))
        print(json.dumps({'tokens': tokens, 'trained_ap': trained, 'untrained_ap': untrained}), flush=True)


if __name__ == '__main__':
    run_cli(main)
