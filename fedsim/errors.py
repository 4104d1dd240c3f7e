"""Errors a user can cause: printed as one line by the CLI, exit code 2."""


class UserError(Exception):
    """A problem with the user's input: one line naming it and what was expected."""
