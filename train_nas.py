"""BlazeFace-NAS search driver: ``python -u train_nas.py -c blazeface.yml [-o key=value ...] [-r SAVE_DIR]
[--workers N|auto] [--gpus 0,2] [--init-storage]``.

Loads the config and runs the search with its ``strategy`` (PaddleSlim's SANAS controller by default, or an Optuna
study); everything it does lives in ``ppdet/slim/nas`` (config -> search space -> strategy -> candidate -> reward
-> report). With ``--workers N`` this process is worker 0 (and SANAS's host) and starts N-1 local workers
(``workers.py``).
"""
import argparse
import logging
import os

import optuna

from ppdet.utils.logs import quiet_libraries, setup_logging

quiet_libraries()  # before paddle is imported (glog reads its level then)

import paddle  # noqa: E402
from ppdet.core.cli import ArgsParser, run_cli  # noqa: E402
from ppdet.slim.nas.candidate import select_device  # noqa: E402
from ppdet.slim.nas.config import load_search_config  # noqa: E402
from ppdet.slim.nas.preflight import check_search_inputs  # noqa: E402
from ppdet.slim.nas.search import SearchError, build_search  # noqa: E402
from ppdet.slim.nas.strategies.study import init_storage  # noqa: E402
from ppdet.slim.nas.workers import resolve_plan, run_search  # noqa: E402
from ppdet.utils.processes import die_with_parent  # noqa: E402


def parse_args(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('-r', '--resume_checkpoint', default=None, type=str,
                        help='save_dir of an earlier search to resume (its sanas.checkpoints and history, or its '
                             'study.db)')
    parser.add_argument('--workers', default=None,
                        help='candidates trained side by side on this machine: a number, or auto (one per GPU, '
                             'else one per CPU core); default: the config key workers, else 1')
    parser.add_argument('--gpus', default=None, help='GPU ids for the workers, e.g. 0,2 (default: all Paddle sees)')
    parser.add_argument('--fp16', action='store_true', default=False,
                        help='mixed precision training (Paddle AMP; GPU only, ignored on the CPU)')
    parser.add_argument('--loss_scale', default=8., type=float, help='mixed precision initial loss scale')
    parser.add_argument('--eval', action='store_true', default=True,
                        help='evaluate each candidate (always on: the AP is the reward)')
    parser.add_argument('--init-storage', action='store_true', default=False,
                        help='create the study in the storage key\'s database and exit (optional: workers started '
                             'together on an empty database also join one study)')
    # a local worker started by the driver of a --workers search: ends with it, leaves the report to it
    parser.add_argument('--worker-of', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--worker-id', type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    os.environ.setdefault('MPLBACKEND', 'Agg')  # the report's plot is a file; no display is needed
    setup_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per candidate is the search's own
    args = parse_args(argv)
    if args.worker_of is not None:
        die_with_parent(args.worker_of)
        setup_logging(prefix='worker {}: '.format(args.worker_id))
    setup = load_search_config(args.config, args.opt)
    if args.init_storage:
        print(init_storage(setup))
        return
    try:
        if args.worker_of is not None:
            paddle.set_device(select_device(setup.settings.use_gpu))  # the host made only this worker's GPU visible
            build_search(setup, args.resume_checkpoint, args.fp16, args.loss_scale, local_worker=True).run(report=False)
            return
        plan = resolve_plan(setup.cfg, args.workers, args.gpus)
        check_search_inputs(setup)  # a missing dataset is the one line, before the device is chosen (or warned of)
        paddle.set_device(plan.slots[0].device or select_device(setup.settings.use_gpu))  # this process: worker 0
        if plan.count > 1:
            setup_logging(prefix='worker 0: ')
        run_search(setup, plan, args.config, args.opt, args.resume_checkpoint, args.fp16, args.loss_scale)
    except SearchError as e:
        logging.error('%s', e)
        raise SystemExit(1)


if __name__ == '__main__':
    run_cli(main)
