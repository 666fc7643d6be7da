"""How a job attempt fails, which decides what happens next.

Usage errors are the client's (bad file, bad parameters, an image the engine cannot use):
ERROR with the message, no retry. At submission (a kind's ``prepare``) they are refused
before the job exists: bad input 422, a missing reference 404, a state that does not allow
the job yet 409.
Transient errors (network, storage, a dead process) are retried until attempts run out.
Anything else is a bug: ERROR with the exception's type and message, no retry.
"""

from __future__ import annotations

from dataclasses import dataclass


class UsageError(Exception):
    """The job cannot succeed with this input; the message tells the client why."""

    def __init__(self, message: str, code: str = "usage_error") -> None:
        super().__init__(message)
        self.code = code


class NotReadyError(UsageError):
    """The input is right but the stored state does not allow it yet (no detect job on the
    exposure, no stored exposure there): the same request succeeds once it does. A conflict
    (409) at submission, where a plain `UsageError` is bad input (422)."""


class MissingError(UsageError):
    """The input names something stored that does not exist (404 at submission)."""


class TransientError(Exception):
    """The attempt failed for a reason that may pass; retry it."""

    def __init__(self, message: str, code: str = "transient_error") -> None:
        super().__init__(message)
        self.code = code


def unusable_input(error: ValueError) -> UsageError:
    """The `UsageError` for a ValueError the reader or the engine raised about its input.

    They signal input they cannot use with ValueError subclasses (``ExposureReadError``
    with a reason code, ``CharacterizeError`` when too few PSF stars are found).
    """
    code = getattr(error, "code", None)
    return UsageError(
        str(error), f"invalid_exposure_{code}" if isinstance(code, str) else "unusable_input"
    )


@dataclass(frozen=True)
class Failure:
    """A classified failure of one attempt."""

    code: str
    message: str
    retry: bool


def classify(error: BaseException) -> Failure:
    """Turn an exception from a job's compute into a `Failure`."""
    from pydantic import ValidationError

    if isinstance(error, UsageError):
        return Failure(error.code, str(error), retry=False)
    if isinstance(error, TransientError):
        return Failure(error.code, str(error), retry=True)
    if isinstance(error, ValidationError):
        return Failure("invalid_parameters", str(error), retry=False)
    if isinstance(error, OSError | MemoryError):
        return Failure("transient_error", f"{type(error).__name__}: {error}", retry=True)
    return Failure("internal_error", f"{type(error).__name__}: {error}", retry=False)
