"""Build a latency table for this machine: every conv of the search space, timed with Paddle Inference.

    python tools/build_latency_table.py -c demo.yml --out latency_cpu_128.txt [--device cpu|gpu] [--threads N]
        [--repeats R] [--warmup W] [--kernels 3[,5]] [-o TrainReader.inputs_def.image_shape=[3,160,160]]

Convs are enumerated at the config's TrainReader.inputs_def.image_shape (what the search prices at). The table is
PaddleSlim's format (header engine<TAB>device<TAB>us, then key<TAB>median microseconds) and plugs into
Constraint.table_file. Rerun the same command after an interruption: only the missing keys are measured.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm  # noqa: E402

from ppdet.core.cli import ArgsParser, run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.slim.nas.constraint import CandidatePricer, train_input_size  # noqa: E402
from ppdet.slim.nas.latency import (TableWriter, Timer, load_table_setup, measure_conv, space_convs,  # noqa: E402
                                    with_kernels)


def parse_kernels(text):
    try:
        return [int(k) for k in text.split(',')]
    except ValueError:
        raise ConfigError('--kernels {!r}: write kernel sizes as comma-separated integers, e.g. 3,5'.format(
            text)) from None


def add_timing_arguments(parser):
    """Options shared with validate_latency_table.py, so both time the same way."""
    parser.add_argument('--repeats', type=int, default=30, help='timed runs per model (per round in validation); the median is kept')
    parser.add_argument('--warmup', type=int, default=10, help='untimed runs before timing')
    parser.add_argument('--kernels', default='3', help='depthwise kernel sizes to cover: 3 (default) or 3,5')


def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--out', required=True, help='table file to write (appended to when it exists)')
    parser.add_argument('--device', default='cpu', help='cpu or gpu')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='CPU math threads (pinned)')
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    timer = Timer(args.device, args.threads, args.warmup, args.repeats)
    setup = load_table_setup(args.config, args.opt)
    convs = space_convs(CandidatePricer(setup.cfg, with_kernels(setup.space, parse_kernels(args.kernels))))
    writer = TableWriter(args.out, timer.header)
    todo = [(key, convs[key]) for key in sorted(convs) if key not in writer.measured]
    print('{} convs at {}x{}: {} already in {}, measuring {} ({})'.format(
        len(convs), *train_input_size(setup.cfg), len(convs) - len(todo), args.out, len(todo),
        '\t'.join(timer.header)), flush=True)
    start = time.time()
    try:
        measure_all(todo, timer, writer, len(convs))
    except KeyboardInterrupt:
        print('interrupted; rerun the same command to measure the remaining keys', file=sys.stderr)
        sys.exit(130)
    print('wrote {} ({} convs) in {:.1f} s'.format(args.out, len(convs), time.time() - start), flush=True)


def measure_all(todo, timer, writer, total):
    """Time each conv and append it at once, under a progress bar counting the whole table (count and eta)."""
    with tempfile.TemporaryDirectory() as workdir, \
            tqdm(total=total, initial=total - len(todo), unit='conv', file=sys.stderr) as bar:
        for key, placed in todo:
            writer.add(key, measure_conv(timer, placed, workdir))
            bar.update()


if __name__ == '__main__':
    run_cli(main)
