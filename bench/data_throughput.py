#!/usr/bin/env python
"""Decode + augment throughput of the blazeface.yml training pipeline at 640, with 1 and 2 worker processes.

    python bench/data_throughput.py [--data DIR] [--images 200 --size 1024] [--workers 1 2] [--batches 40]

Without ``--data`` it first writes a synthetic WIDER-format set of ``--images`` images whose long side is ``--size``
(1024, like WIDER FACE's images) to a temporary directory. It then runs slim/nas/blazeface.yml's TrainReader (or
``--config``'s, with its dataset pointed at the data) through ``ppdet.data.create_reader`` and reports images per
second after ``--warmup`` batches, and the CPU time per image of all its processes, which other load on the machine
barely changes. The training-step side of the comparison is not measured here.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

from ppdet.core.workspace import load_config  # noqa: E402
from ppdet.data import create_reader  # noqa: E402

# slim/nas/blazeface.yml's TrainReader, unchanged but for the dataset directory
TRAIN_READER = """\
TrainReader:
  inputs_def:
    image_shape: [3, 640, 640]
    fields: ['image', 'gt_bbox', 'gt_class']
  dataset:
    !WIDERFaceDataSet
    dataset_dir: {data}
    anno_path: wider_face_split/wider_face_train_bbx_gt.txt
    image_dir: WIDER_train/images
  sample_transforms:
  - !DecodeImage
    to_rgb: true
  - !NormalizeBox {{}}
  - !RandomDistort
    brightness_lower: 0.875
    brightness_upper: 1.125
    is_order: true
  - !ExpandImage
    max_ratio: 4
    prob: 0.5
  - !RandomInterpImage
    target_size: 640
  - !RandomFlipImage
    is_normalized: true
  - !Permute {{}}
  - !NormalizeImage
    is_scale: false
    mean: [104, 117, 123]
    std: [127.502231, 127.502231, 127.502231]
  batch_size: 8
  use_process: True
  worker_num: 8
  shuffle: true
  memsize: 6G
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', help='a WIDER-layout dataset directory (default: make a synthetic one)')
    parser.add_argument('--images', type=int, default=200, help='synthetic images to make (default 200)')
    parser.add_argument('--size', type=int, default=1024, help='long side of the synthetic images (default 1024)')
    parser.add_argument('--config', help='take TrainReader from this config instead of the built-in copy')
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2], help='worker counts to try (default 1 2)')
    parser.add_argument('--batches', type=int, default=40, help='timed batches per worker count (default 40)')
    parser.add_argument('--warmup', type=int, default=5, help='batches before timing starts (default 5)')
    return parser.parse_args()


def make_data(directory, images, size):
    subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'make_synthetic_widerface.py'), '--out', directory,
                    '--train', str(images), '--val', '0', '--size', str(size)], check=True)


def train_reader(config, data, scratch):
    """The TrainReader section to measure, reading from ``data``."""
    if config:
        section = load_config(config)['TrainReader']
        section['dataset']['dataset_dir'] = data
        return section
    path = os.path.join(scratch, 'reader.yml')
    with open(path, 'w') as f:
        f.write(TRAIN_READER.format(data=data))
    return load_config(path)['TrainReader']


def _cpu_seconds():
    """CPU time of this process and of its finished (joined) children, the DataLoader workers."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(section, workers, batches, warmup):
    """Images per second over ``batches`` batches after ``warmup`` (worker start-up, first files), and the CPU
    seconds all processes spent per image over the whole run (workers included, start-up and prefetch too), which
    other load on the machine barely changes: what one free core decodes is about 1 / that."""
    reader = create_reader(section, 'train', max_iters=warmup + batches, worker_num=workers)
    cpu_start = _cpu_seconds()
    images, start = 0, None
    for i, batch in enumerate(reader):
        if i == warmup:
            start = time.perf_counter()
        if i >= warmup:
            images += len(batch['image'])
    rate = images / (time.perf_counter() - start)
    return rate, (_cpu_seconds() - cpu_start) / (images * (warmup + batches) / batches)


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or os.path.join(scratch, 'wider_face')
        if not args.data:
            make_data(data, args.images, args.size)
        section = train_reader(args.config, data, scratch)
        load = ' '.join('{:.2f}'.format(v) for v in os.getloadavg())
        rates = {w: measure(section, w, args.batches, args.warmup) for w in args.workers}
    print('\n| workers | decode+augment images/s (640, blazeface.yml TrainReader) | CPU ms/image, all processes |')
    print('|---|---|---|')
    for workers, (rate, cpu) in rates.items():
        print('| {} | {:.1f} | {:.1f} |'.format(workers, rate, 1000 * cpu))
    print('\ncpus: {}; load average before: {}; after: {}\ncommand: python {}'.format(
        os.cpu_count(), load, ' '.join('{:.2f}'.format(v) for v in os.getloadavg()), ' '.join(sys.argv)))


if __name__ == '__main__':
    main()
