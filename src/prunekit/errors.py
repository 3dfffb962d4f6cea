"""Errors raised for bad user input; the CLI turns them into one-line messages with exit code 2."""


class PrunekitError(ValueError):
    """A problem with what the user asked for (bad path, bad value, bad data): not a bug."""
