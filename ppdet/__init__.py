"""The part of PaddleDetection this search needs, rebuilt on Paddle 3."""
from ppdet.utils.logs import quiet_libraries

quiet_libraries()
