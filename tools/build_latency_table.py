"""Build a latency table for this machine: every runtime unit of the search space, timed with Paddle Inference.

    python tools/build_latency_table.py -c demo.yml --out latency_cpu_128.txt [--device cpu|gpu] [--threads N]
        [--onednn] [--rounds N] [--repeats R] [--warmup W] [--kernels 3[,5]]
        [-o TrainReader.inputs_def.image_shape=[3,160,160]]

Units (every conv, batch norm, ReLU, add and pool of the deployed network, and the head's tail) are enumerated at
the config's TrainReader.inputs_def.image_shape (what the search prices at), from the same plan the model is built
from. The table is PaddleSlim's format (header engine<TAB>device<TAB>us, then key<TAB>median microseconds; conv
keys as PaddleSlim writes them, the other ops in its key style) and plugs into Constraint.table_file. Entries are
net of the runtime's fixed cost per run, which the table holds once as run_overhead,1, so that their sum is the
whole network's latency. Units are timed in batches against reference convs that cancel the drift of the
machine's speed. Rerun the same command after an interruption: only the missing keys are measured.

CPU tables default to one thread and Paddle's own kernels, the setting whose per-op times add up to whole
networks (docs/latency.md); --threads and --onednn measure other settings, recorded in the header.
"""
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries(static_graphs=True)  # before paddle is imported (glog reads its level then)

from tqdm import tqdm  # noqa: E402

from ppdet.core.cli import ArgsParser, add_timing_arguments, int_list, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.constraint import CandidatePricer, train_input_size  # noqa: E402
from ppdet.slim.nas.latency import (TableWriter, Timer, calibrate_table, load_table_setup,  # noqa: E402
                                    measure_table, missing_keys, space_units, with_kernels)


NOISY_SPREAD = 1.25  # calibration ratios of one quiet build here spread x1.07; loaded ones x1.5 and more


def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--out', required=True, help='table file to write (appended to when it exists)')
    parser.add_argument('--device', default='cpu', help='cpu or gpu')
    parser.add_argument('--threads', type=int, default=1, help='CPU math threads (pinned; default 1, the '
                        'single-core latency mobile work reports)')
    parser.add_argument('--onednn', action='store_true', help="time with oneDNN's CPU kernels (Paddle Inference's "
                        'x86 default) instead of Paddle\'s own; their per-conv times rank networks less well')
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    timer = Timer(args.device, args.threads, args.warmup, args.repeats, args.rounds, args.onednn)
    setup = load_table_setup(args.config, args.opt)
    pricer = CandidatePricer(setup.cfg, with_kernels(setup.space, int_list(args.kernels, '--kernels', '3,5')))
    units = space_units(pricer)
    writer = TableWriter(args.out, timer.header)
    missing = len(missing_keys(units, writer))
    if missing and writer.finished:
        raise ConfigError('{} is a finished (calibrated) table without {} of the units this config needs (another '
                          'size, kernel set or BlazeFace section?); write to another --out'.format(args.out, missing))
    print('{} runtime units at {}x{} ({} convs): {} already in {}, measuring {} ({})'.format(
        len(units), *train_input_size(setup.cfg), sum(k.startswith('conv,') for k in units), len(units) - missing,
        args.out, missing, '\t'.join(timer.header)), flush=True)
    start = time.time()
    try:
        with tqdm(total=len(units), initial=len(units) - missing, unit='unit', file=sys.stderr) as bar:
            for count in measure_table(timer, writer, units):
                bar.update(count)
        if not writer.finished:
            fit = calibrate_table(timer, writer, units, setup.cfg, pricer)
            print('calibrated on {} networks: run fixed cost (run_overhead) {:.1f} us, units x {:.3f} (the networks\' '
                  'ratios spread x{:.3f})'.format(fit.networks, fit.fixed_cost, fit.slope, fit.spread), flush=True)
            if fit.spread > NOISY_SPREAD:
                logging.warning('the calibration networks disagree by x%.2f: the machine\'s speed changed during the '
                                'build (other load?); for absolute latencies rebuild on a quieter machine (the '
                                'ranking is less affected)', fit.spread)
    except KeyboardInterrupt:
        print('interrupted; rerun the same command to measure the remaining keys', file=sys.stderr)
        sys.exit(130)
    print('wrote {} ({} units) in {:.1f} s'.format(args.out, len(units), time.time() - start), flush=True)


if __name__ == '__main__':
    run_cli(main)
