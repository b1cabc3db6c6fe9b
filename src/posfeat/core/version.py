"""The package version, recorded in every output (kept here so every stage can read it)."""

__version__ = "0.2.0"
