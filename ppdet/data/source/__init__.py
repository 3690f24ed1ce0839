"""Dataset readers; importing registers their YAML tags (``!WIDERFaceDataSet``)."""
from .widerface import DatasetError, WIDERFaceDataSet, widerface_label  # noqa: F401
