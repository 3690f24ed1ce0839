"""Search spaces registered in PaddleSlim's SEARCHSPACE on import."""
from .blazefacespace_nas import BlazeFaceNasSpace, BlazeFaceNasSpace3x3, search_space_name  # noqa: F401
