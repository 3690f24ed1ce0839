"""Why there is no ``strategy: gp`` (issue 28): Optuna's GPSampler, put in a study strategy's place on the demo's
space and limit, proposes the same candidate over the limit again and again once its random start is over.

    pip install torch          # into the venv; GPSampler needs it, the product does not
    python bench/gp_sampler_check.py [--seconds 240]

The search loop's contract with a sampler: a proposal over the limit is priced out before any training and hidden
from the sampler (a PRUNED trial it does not see, ``strategies/study.py``), because TPE shown such trials as poor
candidates found worse structures. GPSampler's next proposal is the argmax of its acquisition function over a model
that has not changed, so it is the same candidate each time. Here each training's reward is a fixed function of the
tokens (no network is trained); the script counts trainings, priced-out proposals and how often the most repeated
one came back, until 14 trainings or ``--seconds``.
"""
import argparse
import collections
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import common  # noqa: E402,F401  (it puts the repository on sys.path, quiets the libraries)

from bench.ground_truth import DEFAULT_TABLE, demo_limit, load_setup  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=float, default=240)
    args = parser.parse_args()
    import optuna
    import torch
    torch.set_num_threads(1)
    from ppdet.slim.nas.strategies.study import PricedOutHidden, StudyStrategy
    setup = load_setup(os.path.join(common.REPO, 'demo.yml'), DEFAULT_TABLE, {'strategy': 'random'})
    limit = demo_limit(setup)
    setup = load_setup(os.path.join(common.REPO, 'demo.yml'), DEFAULT_TABLE, {
        'strategy': 'random', 'search_steps': 30, 'Constraint.max_constraint': limit, 'Constraint.max_quantile': None})
    strategy = StudyStrategy(setup, tempfile.mkdtemp())
    strategy.study.sampler = strategy.sampler = PricedOutHidden(optuna.samplers.GPSampler(seed=0))
    trained, skipped, start = 0, collections.Counter(), time.time()
    while trained < 14 and time.time() - start < args.seconds:
        job = strategy.ask()
        price = setup.pricer.price(list(job.tokens))
        row = {'tokens': job.tokens, 'status': 'priced', 'flops': price.flops, 'params': price.params,
               'latency_us': price.latency_us}
        if not setup.constraint.admits(price):
            strategy.skip(job, dict(row, status='skipped'))
            skipped[tuple(job.tokens)] += 1
            continue
        strategy.claim(job, row)
        strategy.tell(job, dict(row, status='trained', ap=sum(job.tokens) / 60))
        trained += 1
    strategy.close()
    tokens, count = skipped.most_common(1)[0] if skipped else (None, 0)
    print('GPSampler, demo limit {:.0f} us: {} trainings, {} proposals priced out ({} distinct; {} came back {} '
          'times) in {:.0f} s'.format(limit, trained, sum(skipped.values()), len(skipped), list(tokens or []), count,
                                      time.time() - start))


if __name__ == '__main__':
    main()
