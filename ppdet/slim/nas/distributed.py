"""Training one candidate on several processes (``python -m paddle.distributed.launch``), the original's
``PADDLE_TRAINER_ID`` path: rank 0 talks to the controller and writes outputs; every rank trains the candidate
rank 0 broadcasts, on its own shuffle of the data, with gradients all-reduced by ``paddle.DataParallel``.
"""
import os

import paddle
import paddle.distributed as dist

from ppdet.utils.processes import die_with_parent

__all__ = ['Ranks']


class Ranks:
    def __init__(self, rank=0, world_size=1):
        self.rank, self.world_size = rank, world_size

    @classmethod
    def from_env(cls):
        world_size = int(os.environ.get('PADDLE_TRAINERS_NUM', 1))
        if world_size <= 1:
            return cls()
        die_with_parent(os.getppid())  # a rank ends with its launcher, however the launcher ends
        dist.init_parallel_env()
        return cls(dist.get_rank(), world_size)

    @property
    def is_main(self):
        return self.rank == 0

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (tokens to train, or None to stop)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, layer, find_unused=False):
        """The layer whose forward returns the loss, with gradients all-reduced across ranks. ``find_unused``: some
        parameters may get no gradient in a step (a supernet's sub-networks leave some layers out)."""
        if self.world_size == 1:
            return layer
        return paddle.DataParallel(layer, find_unused_parameters=find_unused)
