"""The one exception type a person should see, and its kinds.

Every layer raises a subclass of StoryloomError for problems the person can act on;
the CLI and the UI turn it into a one-line message in one place."""


class StoryloomError(Exception):
    """A problem to show the person as one clear line."""


class NotFound(StoryloomError):
    pass


class InvalidInput(StoryloomError):
    pass


class Conflict(StoryloomError):
    """Another action changed the story first; nothing was written."""


class Busy(StoryloomError):
    """The story is in the middle of another action; try again when it is done. Nothing changed."""


class DatabaseUnavailable(StoryloomError):
    pass
