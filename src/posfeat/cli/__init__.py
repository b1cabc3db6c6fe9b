"""Stage 7, the command line (``posfeat``). Imports every earlier stage; nothing imports it."""

from .main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
