"""Errors the user can fix: they are reported as one line, without a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message names the culprit and what was expected."""


class TrainingDiverged(UserError):
    """The loss became non-finite."""


class Stopped(KeyboardInterrupt):
    """The caller asked to stop (the trainer's `should_stop`, between two steps). A
    KeyboardInterrupt, so that whatever cleans up after Ctrl-C cleans up after it too."""
