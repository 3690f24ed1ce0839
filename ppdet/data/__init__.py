"""WIDER FACE data: dataset, sample transforms and the batching reader.

Import this package before loading a config: it registers the ``!WIDERFaceDataSet`` and transform tags.
"""
from . import source, transform  # noqa: F401
from .reader import create_reader  # noqa: F401
