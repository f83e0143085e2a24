"""Exceptions molfold raises for bad input.

Every problem a user can cause (a corrupt file, an unknown element, NaN coordinates, a bad config
value) is reported as a subclass of :class:`MolfoldError` whose message names the problem and where
it is, instead of a traceback from deep inside torch or numpy.
"""

from __future__ import annotations


class MolfoldError(Exception):
    """Base class of every error molfold raises on purpose."""


class DataError(MolfoldError, ValueError):
    """A dataset file or a structure is unusable: corrupt, truncated, wrong shapes, NaN values."""


class MissingFileError(MolfoldError, FileNotFoundError):
    """A file the user named does not exist."""


class UnknownElementError(MolfoldError, ValueError):
    """A structure contains an element the model was not trained on."""


class ConfigError(MolfoldError, ValueError):
    """A configuration key or value is missing, unknown or invalid."""


class CheckpointError(MolfoldError, ValueError):
    """A checkpoint file is missing, corrupt or was not written by molfold."""
