"""Errors of the generation layer; all are StoryloomErrors a person can read."""

from storage.errors import StoryloomError


class ModelUnavailable(StoryloomError):
    """The model could not be found or loaded."""


class GenerationFailed(StoryloomError):
    """The model's output stayed unusable after the allowed retries; nothing was written."""


class ParseError(StoryloomError):
    """One output did not have the expected shape (caught and retried by the loop)."""
