"""The search's vocabulary, in one place: what a candidate's status may be, the files and folders a search writes in
its save_dir, how its tokens are named as parameters, and the default of every config key the search loop and its
strategies read. A module that writes or reads one of these names it from here, so that two sides cannot drift
apart (a status written by one module and refused by another, a parameter spelled one way on the re-ranking board
and read another)."""
import enum
import os

__all__ = ['Status', 'HISTORY_STATUSES', 'REWARDED', 'PRICED_OUT', 'CLAIMED', 'HISTORY_NAME', 'CHECKPOINT_NAME',
           'STUDY_FILE', 'SUPERNET_DIR', 'CANDIDATES_DIR', 'WEIGHTS_NAME', 'RERANK_NAME', 'PARETO_NAME',
           'BEST_STRUCTURE_NAME', 'candidate_dir', 'candidate_weights', 'study_param', 'board_param', 'DEFAULTS',
           'setting']


class Status(enum.StrEnum):
    """A candidate's status: in the history CSV, an Optuna trial's ``status`` attribute and the log."""
    PRICED = 'priced'  # admitted by the constraint, not trained yet
    TRAINING = 'training'  # claimed by a worker (a study's trial), in training
    TRAINED = 'trained'
    FAILED = 'failed'  # trained, with a non-finite loss: reward 0
    PRUNED = 'pruned'  # stopped part way by the pruner: its last intermediate AP
    SKIPPED = 'skipped'  # outside the constraint: never trained, no step used
    UNPRICED = 'unpriced'  # the latency table cannot price it: never trained, no step used
    DUPLICATE = 'duplicate'  # proposed again after it was trained (a study gives it back)
    SURPLUS = 'surplus'  # claimed when every step was taken (a study gives it back)
    SCORED = 'scored'  # the log's word for a candidate scored by a supernet (``evaluator: supernet``)


HISTORY_STATUSES = (Status.TRAINED, Status.FAILED, Status.SKIPPED, Status.UNPRICED, Status.PRUNED)
REWARDED = (Status.TRAINED, Status.FAILED)  # trained, and their reward sent
PRICED_OUT = (Status.SKIPPED, Status.UNPRICED)  # never trained, no step used
CLAIMED = (Status.TRAINING, Status.TRAINED, Status.FAILED, Status.PRUNED)  # a study's trial that holds a step

# save_dir's files and folders
HISTORY_NAME = 'search_history.csv'
CHECKPOINT_NAME = 'sanas.checkpoints'  # the SANAS controller's
STUDY_FILE = 'study.db'  # an Optuna study's, where no storage is given
SUPERNET_DIR = 'supernet'  # a search's own supernet
CANDIDATES_DIR = 'candidates'
WEIGHTS_NAME = 'model_final.pdparams'  # a trained candidate's weights, in its folder
RERANK_NAME = 'rerank.csv'
PARETO_NAME = 'pareto.csv'
BEST_STRUCTURE_NAME = 'best_structure.yml'


def candidate_dir(save_dir, step, tokens):
    """A trained candidate's folder: its step and its tokens (``Tokens``), e.g. candidates/0003_2-1-3-8-2-1-2-1-0."""
    return os.path.join(save_dir, CANDIDATES_DIR, '{:04d}_{}'.format(step, tokens.folder))


def candidate_weights(folder):
    return os.path.join(folder, WEIGHTS_NAME)


def study_param(index, name):
    """An Optuna study's name of token ``index`` (``name``: the search space's name of that token)."""
    return 't{}_{}'.format(index, name)


def board_param(index):
    """The re-ranking board's name of token ``index`` (its trials also hold a ``seed``)."""
    return 't{}'.format(index)


# The default of every config key the search loop and its strategies read (config.py checks the values).
DEFAULTS = {'search_steps': 300, 'max_iters': 5000, 'seed': 0, 'save_dir': 'nas_checkpoint', 'strategy': 'sanas',
            'evaluator': 'train', 'max_consecutive_skips': 10000, 'inherit_weights': False, 'use_gpu': False,
            'log_iter': 20, 'log_smooth_window': 20, 'search_space': 'BlazeFaceNasSpace', 'num_classes': 2,
            'is_server': True, 'server_ip': '', 'server_port': 8999, 'reduce_rate': 0.85, 'max_client_wait': 86400,
            'study_name': 'blazeface-nas', 'population_size': 20, 'tournament_size': 5, 'tpe_startup_trials': 10,
            'heartbeat_interval': 10, 'heartbeat_grace': 60, 'pruner': 'none', 'largest_sample': 2000,
            'warm_start': 0}
# (the re-ranking's defaults depend on the evaluator: rerank.py's RerankPlan)


def setting(cfg, key):
    """``cfg``'s value of ``key``, or its default."""
    return cfg.get(key, DEFAULTS[key])
