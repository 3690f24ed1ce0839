"""Sample transforms; importing registers their YAML tags (``!DecodeImage`` ...)."""
from .operators import *  # noqa: F401,F403
from .operators import __all__  # noqa: F401
