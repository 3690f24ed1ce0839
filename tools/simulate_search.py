"""How many candidates a search samples, skips and trains, by pricing only (no training).

    python tools/simulate_search.py -c blazeface.yml --steps 300 [-o Constraint.table_file=PATH] [--seed 0]

Replays the sampling of the original loop (PaddleSlim's SAController, ``for step in range(search_steps)``, a
candidate outside the bounds consumes its step, an unpriced one kills the run on an assert) and of ours (skips
cost no step and are never resampled), with a stand-in reward (a fixed pseudo-random number per token vector,
since no candidate is trained). Prints one JSON object per loop.
"""
import json
import logging
import os
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

from paddleslim.common import SAController  # noqa: E402

from ppdet.core.cli import ArgsParser, run_cli  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402
from ppdet.slim.nas.constraint import CandidatePricer  # noqa: E402
from ppdet.slim.nas.controller import AnnealingController  # noqa: E402
from search_space import BlazeFaceNasSpace  # noqa: E402


def stand_in_reward(tokens):
    return (zlib.crc32(str(tokens).encode()) % 10000) / 10000.0


def _controller(cls, space, settings, **kwargs):
    ranges = space.range_table()
    return cls(([0] * len(ranges), ranges), settings.reduce_rate, settings.init_temperature,
               max_try_times=50000, init_tokens=space.init_tokens(), **kwargs)


def original_loop(setup, pricer, steps, seed):
    """The original: every sampled candidate uses a step; an unpriced one is where it would have crashed.
    PaddleSlim's controller draws from numpy's global generator, seeded here as the original's driver left it."""
    np.random.seed(seed)
    controller = _controller(SAController, pricer.space, setup.settings)
    counts = {'trained': 0, 'skipped': 0, 'unpriced': 0}
    first_crash = exited = None
    for step in range(steps):
        try:
            tokens = controller.next_tokens()
        except SystemExit:  # PaddleSlim exits when every neighbour of the current tokens was tried
            exited = step
            break
        admitted = setup.constraint.admits(pricer.price(tokens))
        if admitted is None:
            counts['unpriced'] += 1
            first_crash = step if first_crash is None else first_crash
        elif not admitted:
            counts['skipped'] += 1
        else:
            counts['trained'] += 1
            controller.update(tokens, stand_in_reward(tokens), step + 1)
    return dict(counts, first_crash_step=first_crash, controller_exited_at_step=exited)


def our_loop(setup, pricer, steps, seed):
    """Ours: skips cost no step; exactly ``steps`` candidates are trained, all priced and inside the bounds; the
    controller draws from its own generator."""
    controller = _controller(AnnealingController, pricer.space, setup.settings, seed=seed)
    counts = {'trained': 0, 'skipped': 0, 'unpriced': 0}
    while counts['trained'] < steps:
        tokens = controller.next_tokens()
        admitted = setup.constraint.admits(pricer.price(tokens))
        if admitted is not True:
            counts['unpriced' if admitted is None else 'skipped'] += 1
            continue
        counts['trained'] += 1
        controller.record(tokens, stand_in_reward(tokens))
    return counts


def main():
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--steps', type=int, default=300, help='search steps to simulate')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    setup = load_search_config(args.config, args.opt)
    logging.getLogger('paddleslim.common.sa_controller').setLevel(logging.WARNING)
    as_shipped = CandidatePricer(setup.cfg, BlazeFaceNasSpace(), setup.constraint, setup.pricer.table)
    loops = [('original, as shipped (kernel token free)', original_loop, as_shipped),
             ('original, 3x3 range edited by hand as its README says', original_loop, setup.pricer),
             ('ours', our_loop, setup.pricer)]
    for name, loop, pricer in loops:
        print(json.dumps(dict(loop=name, steps=args.steps, **loop(setup, pricer, args.steps, args.seed))), flush=True)


if __name__ == '__main__':
    run_cli(main)
