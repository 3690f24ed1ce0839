#!/usr/bin/env python
"""Download WIDER FACE (train, val, annotations) and extract it into the layout the search's reader expects.

    python tools/download_widerface.py --out dataset/wider_face [--from DIR] [--url-base URL] [--retries N]

Fetches WIDER_train.zip, WIDER_val.zip and wider_face_split.zip from PaddlePaddle's dataset mirror (the one
PaddleDetection's download script uses), checks their md5, and extracts them into --out. Interrupted downloads
resume (rerun the same command); zips and folders already in place are not fetched or extracted again.
--from DIR uses zips downloaded by hand (e.g. from the WIDER FACE site) instead: an md5 other than the mirror's is
a warning there, since those copies are packaged independently; the zips' contents are checked instead.
Exit codes: 0 done, 1 a download failed (network, server or md5: rerun), 2 something to fix (paths, zips).
"""
import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries, setup_logging  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

from ppdet.core.cli import run_cli  # noqa: E402
from ppdet.data.download import DEFAULT_URL_BASE, DownloadError, fetch_widerface  # noqa: E402

CONFIG_DATASET_DIR = 'dataset/wider_face'  # blazeface.yml's dataset_dir, relative to the working directory


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=CONFIG_DATASET_DIR,
                        help='dataset_dir to create (default: %(default)s, the one blazeface.yml reads)')
    parser.add_argument('--from', dest='source_dir', metavar='DIR',
                        help='folder holding the three zips, downloaded by hand; nothing is downloaded')
    parser.add_argument('--url-base', default=DEFAULT_URL_BASE, metavar='URL',
                        help='mirror the zips are fetched from (default: %(default)s)')
    parser.add_argument('--retries', type=int, default=3, metavar='N',
                        help='resumed attempts after a dropped connection, per file (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.retries < 0:
        parser.error('--retries must be >= 0')
    return args


def next_command(out):
    """The search command for this dataset_dir: blazeface.yml as it is, or with both readers pointed at ``out``."""
    command = 'python -u train_nas.py -c blazeface.yml'
    if os.path.normpath(out) != CONFIG_DATASET_DIR:
        quoted = shlex.quote(out)
        command += ' -o TrainReader.dataset.dataset_dir={0} EvalReader.dataset.dataset_dir={0}'.format(quoted)
    return command


def main(argv=None):
    setup_logging()
    args = parse_args(argv)
    try:
        counts = fetch_widerface(args.out, args.source_dir, args.url_base, args.retries)
    except DownloadError as e:
        print('error: {}'.format(e), file=sys.stderr)  # the same one line run_cli prints for a ConfigError
        raise SystemExit(1)
    print('WIDER FACE is ready: {} train and {} val images'.format(counts['train'], counts['val']))
    print('dataset_dir: {}'.format(args.out))
    print('next: {}'.format(next_command(args.out)))


if __name__ == '__main__':
    run_cli(main)
