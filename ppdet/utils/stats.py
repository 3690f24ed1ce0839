"""Median-smoothed training statistics for the log line, as PaddleDetection 0.x printed them.

The median over a window keeps one odd batch (a huge loss from a hard image) from dominating the log.
"""
import collections
import datetime

import numpy as np

__all__ = ['SmoothedValue', 'TrainingStats', 'eta_string']


class SmoothedValue(object):
    """The last ``window`` values of one statistic."""

    def __init__(self, window):
        self.values = collections.deque(maxlen=window)

    def add_value(self, value):
        self.values.append(float(value))

    def median(self):
        return float(np.median(self.values))


class TrainingStats(object):
    """Smoothed values of the statistics named in ``keys``; other keys given to ``update`` are ignored."""

    def __init__(self, window, keys):
        self.smoothed = collections.OrderedDict((k, SmoothedValue(window)) for k in keys)

    def update(self, stats):
        """Add one iteration's values; ``stats`` must hold every key (numbers, numpy or 1-element tensors)."""
        for key, smoothed in self.smoothed.items():
            smoothed.add_value(np.mean(np.asarray(stats[key])))

    def get(self):
        return collections.OrderedDict((k, v.median()) for k, v in self.smoothed.items())

    def log(self):
        """``'loss: 1.234567, ...'``: the window medians with six decimals."""
        return ', '.join('{}: {:.6f}'.format(k, v) for k, v in self.get().items())


def eta_string(seconds):
    """Whole seconds as ``H:MM:SS`` (``1 day, H:MM:SS`` beyond a day), the original's ETA format."""
    return str(datetime.timedelta(seconds=int(seconds)))
