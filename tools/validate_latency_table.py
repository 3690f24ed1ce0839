"""Check a latency table against whole networks: random candidates, table sum vs Paddle Inference latency.

    python tools/validate_latency_table.py -c demo.yml --table latency_cpu_128.txt --samples 20 \
        [--rounds N] [--repeats R] [--warmup W] [--seed S] [--kernels 3[,5]] [--report PATH]

Each candidate is built at the config's input size and saved as tools/export_model.py --without-decoder saves it
(DeployedBlazeFace + paddle.jit.save, static [1, 3, H, W]; the decoder is left out, its cost depends on the
weights), then timed with Paddle Inference (IR optimisation on, as deployed) on the table's device, thread count
and CPU kernels, the candidates taking turns over several rounds. A whole-network table should predict the
measured time (ratio near 1). Writes the report (text) and a PNG scatter with the +-10% band next to it; the last
stdout line is {"samples": N, "spearman": r, "median_ratio": x, "within_10pct": share, "worst_ratio": x,
"speed_factor": f, "median_ratio_adjusted": x, "within_10pct_adjusted": share} (worst: the ratio farthest from 1).

Machine speed: a small VM runs the same network 20% faster or slower from one minute to the next, which no table
can predict. So the table's own calibration networks (tools/build_latency_table.py times them when it builds the
table, and the table prices them at that moment's speed) are timed again here, interleaved with the candidates:
speed_factor is the median of their table price / measured now (1: the machine runs as fast as at the build), and
the _adjusted figures compare the table with measured times scaled to the build's speed. The raw figures come
first and stay the measure of what a user sees.
"""
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries(static_graphs=True)  # before paddle is imported (glog reads its level then)

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ppdet.core.cli import ArgsParser, add_timing_arguments, int_list, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.constraint import CandidatePricer, LatencyTable, table_kernels, train_input_size  # noqa: E402
from ppdet.slim.nas.latency import (CALIBRATION_NETWORKS, CALIBRATION_SEED, Timer, candidate_model,  # noqa: E402
                                    load_table_setup, sample_candidates, save_network, with_kernels)


def table_timer(table, args):
    """A Timer on the device, thread count and CPU kernels the table was built with: latencies measured under
    other settings would say nothing about the table."""
    device = table.header[1]
    cpu = re.fullmatch(r'cpu_.+_(\d+)threads(_onednn)?_network', device)
    if cpu:
        timer = Timer('cpu', int(cpu.group(1)), args.warmup, args.repeats, args.rounds, bool(cpu.group(2)))
    elif device.startswith('gpu_'):
        timer = Timer('gpu', 1, args.warmup, args.repeats, args.rounds)
    else:
        raise ConfigError('{}: device {!r} is not one tools/build_latency_table.py writes; only tables it built '
                          'on this machine can be validated here (rebuild older tables: they priced convs '
                          'only)'.format(table.path, device))
    if table.header != timer.header:
        raise ConfigError('{} was measured as {!r}; this machine and Paddle measure as {!r}, so it cannot be '
                          'validated here'.format(table.path, '\t'.join(table.header), '\t'.join(timer.header)))
    return timer


def measure_candidates(cfg, candidates, timer):
    """Whole-network microseconds of each candidate (given as (pricer, tokens)), measured in interleaved rounds."""
    height, width = train_input_size(cfg)
    with tempfile.TemporaryDirectory() as workdir:
        models = []
        for i, (space_pricer, tokens) in enumerate(tqdm(candidates, desc='saving', unit='net', file=sys.stderr)):
            prefix = save_network(candidate_model(cfg, space_pricer, tokens), height, width,
                                  os.path.join(workdir, str(i), 'net'))
            models.append((prefix, [[1, 3, height, width]]))
        print('timing {} networks in {} rounds'.format(len(models), timer.rounds), file=sys.stderr, flush=True)
        return timer.measure(models)


BAND = 0.10  # a prediction within +-10% of the measured time counts as right (nn-Meter's accuracy measure)


def summary(rows, speed_factor):
    table_us = [r['table_us'] for r in rows]
    measured_us = [r['measured_us'] for r in rows]
    ratios = np.divide(table_us, measured_us)
    spearman = float(spearmanr(table_us, measured_us)[0]) if len(rows) > 2 else None
    adjusted = ratios / speed_factor
    return {'samples': len(rows), 'spearman': spearman, 'median_ratio': float(np.median(ratios)),
            'within_10pct': float(np.mean(np.abs(ratios - 1) <= BAND)),
            'worst_ratio': float(ratios[np.argmax(np.abs(ratios - 1))]), 'speed_factor': speed_factor,
            'median_ratio_adjusted': float(np.median(adjusted)),
            'within_10pct_adjusted': float(np.mean(np.abs(adjusted - 1) <= BAND))}


def calibration_candidates(setup, table):
    """The networks tools/build_latency_table.py calibrated this table on: the same seed, over the kernels the
    table covers (the space it was built for)."""
    kernels = sorted(table_kernels(table.entries)) or [3]  # an empty table fails on its first price below
    pricer = CandidatePricer(setup.cfg, with_kernels(setup.space, kernels), table=table)
    return [(pricer, tokens) for tokens in sample_candidates(pricer.space, CALIBRATION_NETWORKS, CALIBRATION_SEED)]


def write_scatter(rows, stats, path, title):
    """Table sum vs measured latency, one point per candidate, so outliers are visible at a glance."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    measured = [r['measured_us'] / 1e3 for r in rows]
    ax.scatter([r['table_us'] / 1e3 for r in rows], measured, s=14, zorder=3)
    line = np.linspace(0, max(measured + [r['table_us'] / 1e3 for r in rows]) * 1.05, 2)
    ax.plot(line, line, color='#555555', lw=0.8, label='table = measured')
    ax.fill_between(line, line / (1 + BAND), line / (1 - BAND), color='#8aa4c8', alpha=0.3,
                    label='within +-10% of measured')
    ax.set_xlabel('table sum (ms)')
    ax.set_ylabel('measured (ms, whole network, Paddle Inference)')
    ax.legend(loc='upper left', fontsize=8)
    spearman = 'n/a' if stats['spearman'] is None else '{:.3f}'.format(stats['spearman'])
    ax.set_title('{}\nSpearman {}, median ratio {:.2f}, {:.0%} within +-10%'.format(
        title, spearman, stats['median_ratio'], stats['within_10pct']), fontsize=9)
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
    pricer = CandidatePricer(setup.cfg, with_kernels(setup.space, int_list(args.kernels, '--kernels', '3,5')), table=table)
    report = args.report or os.path.splitext(args.table)[0] + '_validation.txt'
    candidates = sample_candidates(pricer.space, args.samples, args.seed)
    yardsticks = calibration_candidates(setup, table)
    table_us = [table_price(p, tokens) for p, tokens in [(pricer, t) for t in candidates] + yardsticks]
    measured_us = measure_candidates(setup.cfg, [(pricer, t) for t in candidates] + yardsticks, timer)
    speed_factor = float(np.median(np.divide(table_us[len(candidates):], measured_us[len(candidates):])))
    rows = [{'tokens': tokens, 'table_us': round(t, 1), 'measured_us': round(m, 1), 'ratio': round(t / m, 3)}
            for tokens, t, m in zip(candidates, table_us, measured_us)]
    lines = [emit(json.dumps(row)) for row in rows]
    stats = summary(rows, speed_factor)
    lines.append(emit('{} samples at {}x{}: Spearman {}, median table/measured {:.3f}, {:.0%} within +-10%, worst '
                      'ratio {:.3f}; machine speed vs the build x{:.3f}, adjusted: median {:.3f}, {:.0%} within '
                      '+-10%'.format(stats['samples'], *train_input_size(setup.cfg), stats['spearman'],
                                     stats['median_ratio'], stats['within_10pct'], stats['worst_ratio'],
                                     speed_factor, stats['median_ratio_adjusted'],
                                     stats['within_10pct_adjusted'])))
    lines.append(emit(json.dumps(stats)))
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    write_scatter(rows, stats, os.path.splitext(report)[0] + '.png', os.path.basename(args.table))


if __name__ == '__main__':
    run_cli(main)
