"""The one exception type a person should see, and its kinds.

Every layer raises a subclass of StoryloomError for problems the person can act on; the CLI and
the UI turn it into a one-line message in one place. This module is at the bottom of the
layers: it imports nothing of the project, and every layer may import it."""


class StoryloomError(Exception):
    """A problem to show the person as one clear line."""


class NotFound(StoryloomError):
    pass


class InvalidInput(StoryloomError):
    pass


class Conflict(StoryloomError):
    """Another action changed the story first; nothing was written. `version`: when the refusal is
    about one thing the person edits, its version now (what the message says it is)."""

    def __init__(self, message: str, version: str | None = None):
        super().__init__(message)
        self.version = version


class Busy(StoryloomError):
    """The story is in the middle of another action; try again when it is done. Nothing changed."""


class Cancelled(StoryloomError):
    """The person stopped the action; nothing half-done was kept."""


class DatabaseUnavailable(StoryloomError):
    """The database could not be reached or opened; the action's change was not saved."""


class ModelUnavailable(StoryloomError):
    """The model could not be found or loaded."""


class GenerationFailed(StoryloomError):
    """The model's output stayed unusable after the allowed retries; nothing was written."""


class ParseError(StoryloomError):
    """One output did not have the expected shape (caught and retried by the loop)."""
