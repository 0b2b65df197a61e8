"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class InputError(ValueError):
    """Bad input (a scenario field, a path, a CLI argument); the message names the field."""
