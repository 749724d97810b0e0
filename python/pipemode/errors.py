"""The exceptions pipemode raises, defined once; the native module raises these same classes.

`PipeModeError` is the base of every error about bad input or bad configuration. Errors about
data also subclass `ValueError`, and timeouts `TimeoutError`, so code that catches the
built-in kinds keeps working.
"""

from __future__ import annotations

__all__ = [
    "CorruptRecordError",
    "JobConfigError",
    "PipeModeDatasetException",
    "PipeModeError",
    "PipeTimeoutError",
    "RecordDecodeError",
]


class PipeModeError(Exception):
    """Base of every pipemode error about bad input or bad configuration."""


class PipeModeDatasetException(PipeModeError, ValueError):
    """Bad configuration: a missing or File-mode channel, options that do not go together.

    Kept under the name `sagemaker_tensorflow` raises for the same faults, so a drop-in's
    `except PipeModeDatasetException` keeps working.
    """


class JobConfigError(PipeModeError, ValueError):
    """A training job the runner cannot start: a bad channel, source, name or option."""


class CorruptRecordError(PipeModeError, ValueError):
    """A stream whose framing is broken: bad magic or CRC, truncation, an absurd length.

    `path` names the file (and channel, when known) and `offset` the byte in the stream where the
    broken record starts.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class RecordDecodeError(CorruptRecordError):
    """A well-framed record whose content does not decode (e.g. an Example lacking a feature)."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        offset: int | None = None,
        record: int | None = None,
    ) -> None:
        super().__init__(message, path, offset)
        self.record = record


class PipeTimeoutError(PipeModeError, TimeoutError):
    """A FIFO or file that did not appear, or whose writer did not open it, in time."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
