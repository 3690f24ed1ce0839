"""A candidate's token vector and the one place that knows how it is spelled.

A vector is written four ways, each where its readers expect it: ``2,1,3`` on the controller's wire (PaddleSlim's
protocol), ``2 1 3`` in CSV files, ``2-1-3`` in folder names, and ``[2, 1, 3]`` as the keys of PaddleSlim's
``SAController._searched``. ``Tokens.parse`` reads any of them back.
"""
import random
import re

import numpy as np

__all__ = ['Tokens', 'sample_candidates']

_SPELLING = re.compile(r'^\s*(\[\s*)?\d+(\s*[,\s-]\s*\d+)*\s*\]?\s*$')  # tokens are never negative


class Tokens(tuple):
    """An immutable token vector (a tuple of ints) with its spellings."""

    def __new__(cls, values):
        return super().__new__(cls, (int(v) for v in values))

    @classmethod
    def parse(cls, text):
        """Tokens from any of the four spellings; ValueError for anything else (say, an empty cell)."""
        if not isinstance(text, str) or not _SPELLING.match(text) or text.count('[') != text.count(']'):
            raise ValueError('not a token vector: {!r}'.format(text))
        return cls(re.findall(r'\d+', text))

    @property
    def wire(self):
        return ','.join(map(str, self))

    @property
    def csv(self):
        return ' '.join(map(str, self))

    @property
    def folder(self):
        return '-'.join(map(str, self))

    @property
    def key(self):
        """PaddleSlim's ``str(list)`` spelling, the keys of its controller's record of sampled tokens."""
        return str(list(self))

    def __repr__(self):
        return self.key


def sample_candidates(space, count, seed):
    """``count`` distinct random token vectors of ``space`` (fewer if the space is smaller), sorted."""
    ranges = space.range_table()
    size = int(np.prod(ranges))
    rng = random.Random(seed)
    chosen = set()
    while len(chosen) < min(count, size):
        chosen.add(tuple(rng.randrange(r) for r in ranges))
    return [list(t) for t in sorted(chosen)]
