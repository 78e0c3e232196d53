"""Errors the user can fix: they are reported as one line, without a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message names the culprit and what was expected."""


class TrainingDiverged(UserError):
    """The loss became non-finite."""
