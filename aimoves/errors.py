"""Errors that the CLI turns into a clear message and a non-zero exit."""

from __future__ import annotations


class AimovesError(Exception):
    """A problem the user can fix: bad config, bad input file, nothing to do."""


class ConfigError(AimovesError):
    """A configuration file (universe, ...) is invalid; the message names file, line and field."""


class InputFileError(AimovesError):
    """An input file cannot be read as what it claims to be; the message names file and line."""
