"""Train and evaluate one candidate exactly as a search step does: what would this structure score?

    python tools/train_candidate.py -c demo.yml --tokens 2,1,3,8,2,1,2,1,0 [--seed S] [--out DIR]
        [--parent W --parent-tokens T] [-o max_iters=600]

Builds the token vector's BlazeFace with the config's seed (or --seed: initial weights and data order), trains it
``max_iters`` iterations with the config's schedule and optimizer, saves ``model_final.pdparams`` under --out and
evaluates AP@0.5 on the EvalReader. ``--parent W --parent-tokens T`` starts it from the trained weights W of the
structure T, as a search with ``inherit_weights: true`` does. The log goes to stderr; the last stdout line is one
JSON object: tokens, seed, ap, flops, params, latency_us, train_seconds, status, weights and inherited. No
constraint is applied: a structure outside the bounds still trains (``within_constraint`` says whether a search
would have admitted it).
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
from ppdet.slim.nas.candidate import CandidateTrainer, select_device  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402
from ppdet.slim.nas.inherit import Parent  # noqa: E402
from ppdet.slim.nas.preflight import check_readers  # noqa: E402
from ppdet.utils.logs import setup_logging  # noqa: E402


def main(argv=None):
    setup_logging()
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--tokens', required=True, help='the token vector, comma-separated')
    parser.add_argument('--seed', type=int, default=None, help='seed of the initial weights and data order '
                        '(default: the config key seed)')
    parser.add_argument('--parent', default=None, help='start from these trained weights (a model_final.pdparams), '
                        'as a search with inherit_weights: true does; with --parent-tokens')
    parser.add_argument('--parent-tokens', default=None, help='the token vector the --parent weights were trained as')
    parser.add_argument('--out', default=None, help='folder for model_final.pdparams (default: '
                        'SAVE_DIR/train_candidate/<tokens>_seed<S>)')
    args = parser.parse_args(argv)
    setup = load_search_config(args.config, args.opt)
    tokens = checked_tokens(setup, args.tokens)
    price = setup.pricer.price(tokens)
    check_readers(setup.cfg)
    parent = None
    if args.parent or args.parent_tokens:
        if not (args.parent and args.parent_tokens):
            raise ConfigError('--parent and --parent-tokens go together: the weights and the tokens they were '
                              'trained as')
        if not os.path.isfile(args.parent):
            raise ConfigError('--parent {}: no such file; give a model_final.pdparams of a trained candidate'.format(
                args.parent))
        parent = Parent(setup.pricer.blazenet_kwargs(checked_tokens(setup, args.parent_tokens, '--parent-tokens')),
                        args.parent)
    seed = setup.settings.seed if args.seed is None else args.seed
    out = args.out or os.path.join(setup.settings.save_dir, 'train_candidate',
                                   '{}_seed{}'.format('-'.join(map(str, tokens)), seed))
    paddle.set_device(select_device(setup.settings.use_gpu))  # this process's device: the entry point's choice
    trainer = CandidateTrainer(setup.cfg, seed=seed)
    result = trainer.candidate(setup.pricer.blazenet_kwargs(tokens), out, seed, parent=parent)
    print(json.dumps({'tokens': tokens, 'seed': seed, 'ap': result.ap, 'flops': price.flops, 'params': price.params,
                      'latency_us': price.latency_us, 'train_seconds': round(result.train_seconds, 2),
                      'status': result.status, 'weights': result.weights,
                      'within_constraint': setup.constraint.admits(price),
                      'inherited': result.inherited.summary() if result.inherited else None}), flush=True)


if __name__ == '__main__':
    run_cli(main)
