"""The search's vocabulary, in one place: what a candidate's status may be, the files and folders a search writes in
its save_dir, how its tokens are named as parameters, and the typed settings (every config key the search loop and
its strategies read, with its default). A module that writes or reads one of these names it from here, so that two
sides cannot drift apart (a status written by one module and refused by another, a parameter spelled one way on the
re-ranking board and read another)."""
import dataclasses
import enum
import os
from typing import Optional

__all__ = ['Status', 'HISTORY_STATUSES', 'REWARDED', 'PRICED_OUT', 'CLAIMED', 'HISTORY_NAME', 'CHECKPOINT_NAME',
           'STUDY_FILE', 'SUPERNET_DIR', 'CANDIDATES_DIR', 'WEIGHTS_NAME', 'RERANK_NAME', 'PARETO_NAME',
           'BEST_STRUCTURE_NAME', 'BEST_PADDLEDET_NAME', 'candidate_dir', 'candidate_weights', 'study_param',
           'board_param', 'Settings', 'of_type']


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
BEST_PADDLEDET_NAME = 'best_paddledet.yml'  # the same structure for PaddleDetection 2.x


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


@dataclasses.dataclass(frozen=True)
class Settings:
    """The top-level keys the search loop and its strategies read, typed, each with its default (the original's
    where it had one). ``config.load_search_config`` makes the one instance a search uses (``SearchSetup.settings``)
    and checks it; nothing else holds a default. ``None``: the default depends on another key (see the property)."""
    search_steps: int = 300
    max_iters: int = 5000
    seed: int = 0
    save_dir: str = 'nas_checkpoint'
    strategy: str = 'sanas'
    evaluator: str = 'train'
    max_consecutive_skips: int = 10000
    inherit_weights: bool = False
    use_gpu: bool = False
    log_iter: int = 20
    log_smooth_window: int = 20
    search_space: str = 'BlazeFaceNasSpace'
    num_classes: int = 2
    # sanas: the controller and its clients
    is_server: bool = True
    server_ip: str = ''
    server_port: int = 8999
    reduce_rate: float = 0.85
    init_temperature: Optional[float] = None  # None: PaddleSlim's
    max_client_wait: float = 86400
    controller_wait: float = 300  # seconds a client waits for a controller that stopped answering
    client_lease: Optional[float] = None  # None: adaptive (controller.ClientLease)
    # the study strategies
    storage: Optional[str] = None  # None: save_dir/study.db
    study_name: str = 'blazeface-nas'
    population_size: int = 20
    tournament_size: int = 5
    tpe_startup_trials: int = 10
    heartbeat_interval: int = 10
    heartbeat_grace: int = 60
    pruner: str = 'none'
    prune_interval: Optional[int] = None  # None: max_iters // 3
    largest_sample: int = 2000
    warm_start: int = 0
    # the re-ranking
    rerank_top_k: Optional[int] = None  # None: 0 (off) with evaluator train, rerank.SUPERNET_RERANK with supernet
    rerank_seeds: int = 2

    @classmethod
    def from_config(cls, cfg):
        """The values ``cfg`` gives, the defaults for the rest (unchecked: config.py checks them)."""
        return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg})

    @property
    def pruning_interval(self):
        """Iterations between a pruned search's intermediate evaluations: ``prune_interval``, else a third of
        ``max_iters`` (two looks before the end)."""
        return self.prune_interval if self.prune_interval is not None else max(self.max_iters // 3, 1)


def of_type(value, kind):
    """Whether a config value is of ``kind`` as a setting reads it: ``bool`` only for true/false (which Python also
    counts as int), ``float`` for any number, ``int`` for whole numbers, ``str`` for strings."""
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float) if kind is float else kind)
