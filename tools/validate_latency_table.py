"""Check a latency table against whole networks: random candidates, table sum vs Paddle Inference latency.

    python tools/validate_latency_table.py -c demo.yml --table latency_cpu_128.txt --samples 20 \
        [--rounds N] [--repeats R] [--warmup W] [--seed S] [--kernels 3[,5]] [--report PATH]

Each candidate is built at the config's input size, saved with paddle.jit.save (static [1, 3, H, W], without the
decoder, whose cost depends on the weights) and timed with Paddle Inference on the table's device and thread
count, the candidates taking turns over several rounds. The table prices convs only, so the ratio table/measured
is not 1; what the search needs is the ranking, hence the Spearman correlation. Writes the report (text) and a
PNG scatter next to it; the last stdout line is {"samples": N, "spearman": r, "median_ratio": x}.
"""
import json
import os
import random
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ppdet.core.cli import ArgsParser, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.constraint import CandidatePricer, LatencyTable, train_input_size  # noqa: E402
from ppdet.slim.nas.latency import (DeployedBlazeFace, Timer, candidate_model, load_table_setup,  # noqa: E402
                                    save_layer, with_kernels)
from tools.build_latency_table import add_timing_arguments, parse_kernels  # noqa: E402


def table_timer(table, args):
    """A Timer on the device, thread count and CPU kernels the table was built with: latencies measured under
    other settings would say nothing about the table."""
    device = table.header[1]
    cpu = re.fullmatch(r'cpu_.+_(\d+)threads(_onednn)?', device)
    if cpu:
        timer = Timer('cpu', int(cpu.group(1)), args.warmup, args.repeats, args.rounds, bool(cpu.group(2)))
    elif device.startswith('gpu_'):
        timer = Timer('gpu', 1, args.warmup, args.repeats, args.rounds)
    else:
        raise ConfigError('{}: device {!r} is not one tools/build_latency_table.py writes; only tables built on '
                          'this machine can be validated here'.format(table.path, device))
    if table.header != timer.header:
        raise ConfigError('{} was measured as {!r}; this machine and Paddle measure as {!r}, so it cannot be '
                          'validated here'.format(table.path, '\t'.join(table.header), '\t'.join(timer.header)))
    return timer


def sample_candidates(space, count, seed):
    """``count`` distinct random token vectors (fewer if the space is smaller)."""
    ranges = space.range_table()
    size = int(np.prod(ranges))
    rng = random.Random(seed)
    chosen = set()
    while len(chosen) < min(count, size):
        chosen.add(tuple(rng.randrange(r) for r in ranges))
    return [list(t) for t in sorted(chosen)]


def measure_candidates(cfg, pricer, candidates, timer):
    """Whole-network microseconds of each candidate, measured in interleaved rounds."""
    height, width = train_input_size(cfg)
    with tempfile.TemporaryDirectory() as workdir:
        models = []
        for i, tokens in enumerate(tqdm(candidates, desc='saving', unit='net', file=sys.stderr)):
            model = DeployedBlazeFace(candidate_model(cfg, pricer, tokens), decoded=False)
            shape = [1, 3, height, width]
            models.append((save_layer(model, shape, os.path.join(workdir, str(i), 'net')), shape))
        print('timing {} networks in {} rounds'.format(len(models), timer.rounds), file=sys.stderr, flush=True)
        return timer.measure(models)


def summary(rows):
    table_us = [r['table_us'] for r in rows]
    measured_us = [r['measured_us'] for r in rows]
    spearman = float(spearmanr(table_us, measured_us)[0]) if len(rows) > 2 else None
    ratio = float(np.median(np.divide(table_us, measured_us)))
    return {'samples': len(rows), 'spearman': spearman, 'median_ratio': ratio}


def write_scatter(rows, stats, path, title):
    """Table sum vs measured latency, one point per candidate, so outliers are visible at a glance."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter([r['table_us'] / 1e3 for r in rows], [r['measured_us'] / 1e3 for r in rows], s=14)
    ax.set_xlabel('table sum (ms, convs only)')
    ax.set_ylabel('measured (ms, whole network, Paddle Inference)')
    spearman = 'n/a' if stats['spearman'] is None else '{:.3f}'.format(stats['spearman'])
    ax.set_title('{}\nSpearman {}, median ratio {:.2f}'.format(title, spearman, stats['median_ratio']), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table_price(pricer, tokens):
    """The table sum of a candidate; a table without all its keys was built for another config or size."""
    price = pricer.price(tokens)
    if price.unpriced:
        raise ConfigError('{} cannot price {} ({} keys missing, e.g. {}); build the table for this config and '
                          'input size'.format(pricer.table.path, tokens, len(price.unpriced), price.unpriced[0]))
    return price.latency_us


def emit(line):
    print(line, flush=True)
    return line


def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--table', required=True, help='latency table to check (built on this machine)')
    parser.add_argument('--samples', type=int, default=20, help='random candidates to measure')
    parser.add_argument('--seed', type=int, default=0, help='seed of the candidate sample')
    parser.add_argument('--report', help='report file (default: TABLE without extension + _validation.txt)')
    add_timing_arguments(parser)
    parser.set_defaults(rounds=20, repeats=5)
    args = parser.parse_args(argv)
    if args.samples < 1:
        raise ConfigError('--samples must be at least 1, got {}'.format(args.samples))
    table = LatencyTable.load(args.table)
    timer = table_timer(table, args)
    setup = load_table_setup(args.config, args.opt)
    pricer = CandidatePricer(setup.cfg, with_kernels(setup.space, parse_kernels(args.kernels)), table=table)
    report = args.report or os.path.splitext(args.table)[0] + '_validation.txt'
    candidates = sample_candidates(pricer.space, args.samples, args.seed)
    table_us = [table_price(pricer, tokens) for tokens in candidates]
    measured_us = measure_candidates(setup.cfg, pricer, candidates, timer)
    rows = [{'tokens': tokens, 'table_us': round(t, 1), 'measured_us': round(m, 1), 'ratio': round(t / m, 3)}
            for tokens, t, m in zip(candidates, table_us, measured_us)]
    lines = [emit(json.dumps(row)) for row in rows]
    stats = summary(rows)
    lines.append(emit('{} samples at {}x{}: Spearman {}, median table/measured {:.3f}'.format(
        stats['samples'], *train_input_size(setup.cfg), stats['spearman'], stats['median_ratio'])))
    lines.append(emit(json.dumps(stats)))
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    write_scatter(rows, stats, os.path.splitext(report)[0] + '.png', os.path.basename(args.table))


if __name__ == '__main__':
    run_cli(main)
