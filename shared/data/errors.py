"""The data layer's errors: one class per way data can be unusable.

Every message names the data set, where the layer looked, and the exact
command that fixes it, so that a user never needs the traceback.  Entry points
print ``str(error)`` and exit non-zero (see ``shared.data.prepare.main``).
"""

from __future__ import annotations


class DataError(Exception):
    """Base class: the requested data cannot be provided as asked."""


class DataNotPreparedError(DataError):
    """The data set was never prepared into the data directory (or its source is missing)."""


class DataCorruptedError(DataError):
    """A file exists but its size or sha256 differs from the recorded one."""
