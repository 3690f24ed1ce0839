"""The BlazeFace supernet of a search config (one-shot search, ``ppdet/slim/nas/supernet.py``): train it once, then
score any candidate of the space in seconds.

    python tools/supernet.py train -c demo.yml --out supernet_demo [-o supernet_iters=1200 seed=0 ...]
    python tools/supernet.py score -c demo.yml --weights supernet_demo --tokens 2,1,3,8,2,1,2,1,0 [--tokens ...]

``train`` goes on from the checkpoint in ``--out`` if a training there was stopped (the same config), and loads a
finished one instead of training it again. ``score`` prints one JSON line per candidate: tokens, ap (the sub-network's
AP on the eval set, batch norm recalibrated on supernet_calib_batches training batches), flops, params, latency_us
(the config's Constraint table; null without one), seconds. The same weights and candidate give the same AP.
``--weights`` repeated averages several supernets' APs (each is also in ``aps``).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries, setup_logging  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

import paddle  # noqa: E402
from ppdet.core.cli import ArgsParser, checked_tokens, parse_overrides, run_cli  # noqa: E402
from ppdet.slim.nas.candidate import CandidateTrainer, select_device  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402
from ppdet.slim.nas.supernet import SupernetScorer, load_supernet, train_supernet  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True, parser_class=ArgsParser)
    train = commands.add_parser('train', help='train the supernet of the config\'s search space')
    train.add_argument('--out', required=True, help='directory for its checkpoints and final weights')
    score = commands.add_parser('score', help='score candidates with a trained supernet')
    score.add_argument('--weights', action='append', required=True,
                       help='a directory tools/supernet.py train wrote; repeat it to average several supernets\' '
                            'scores')
    score.add_argument('--tokens', action='append', required=True,
                       help='a token vector, comma-separated; repeat for more candidates')
    args = parser.parse_args(argv)
    args.opt = parse_overrides(args.opt)
    return args


def main(argv=None):
    setup_logging()
    args = parse_args(argv)
    setup = load_search_config(args.config, args.opt)
    cfg, settings = setup.cfg, setup.supernet
    tokens = [checked_tokens(setup, t) for t in args.tokens] if args.command == 'score' else []
    paddle.set_device(select_device(setup.settings.use_gpu))  # this process's device: the entry point's choice
    trainer = CandidateTrainer(cfg)
    if args.command == 'train':
        train_supernet(trainer, setup.pricer, args.out, settings, constraint=setup.constraint)
        print(os.path.abspath(args.out), flush=True)
        return
    supernets = [load_supernet(cfg, setup.pricer, folder) for folder in args.weights]
    scorer = SupernetScorer(trainer, supernets, settings.calib_batches)
    for t in tokens:
        score, price = scorer.score(t), setup.pricer.price(t)
        row = {'tokens': t, 'ap': score.ap, 'flops': price.flops, 'params': price.params,
               'latency_us': price.latency_us, 'seconds': round(score.seconds, 3)}
        if len(supernets) > 1:
            row['aps'] = score.aps
        print(json.dumps(row), flush=True)


if __name__ == '__main__':
    run_cli(main)
