"""BlazeFace-NAS search driver: ``python -u train_nas.py -c blazeface.yml [-o key=value ...] [-r SAVE_DIR]``.

Loads the config, registers the search space with PaddleSlim's controller and runs the search; everything it
does lives in ``ppdet/slim/nas`` (config -> search space -> controller -> candidate -> reward -> report).
"""
import logging

from ppdet.core.cli import ArgsParser, run_cli
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.search import NasSearch, SearchError
from ppdet.utils.logs import setup_logging


def parse_args(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('-r', '--resume_checkpoint', default=None, type=str,
                        help='save_dir of an earlier search to resume (its sanas.checkpoints and history)')
    parser.add_argument('--fp16', action='store_true', default=False,
                        help='mixed precision training (Paddle AMP; GPU only, ignored on the CPU)')
    parser.add_argument('--loss_scale', default=8., type=float, help='mixed precision initial loss scale')
    parser.add_argument('--eval', action='store_true', default=True,
                        help='evaluate each candidate (always on: the AP is the reward)')
    return parser.parse_args(argv)


def main(argv=None):
    setup_logging()
    args = parse_args(argv)
    setup = load_search_config(args.config, args.opt)
    try:
        NasSearch(setup, args.resume_checkpoint, args.fp16, args.loss_scale).run()
    except SearchError as e:
        logging.error('%s', e)
        raise SystemExit(1)


if __name__ == '__main__':
    run_cli(main)
