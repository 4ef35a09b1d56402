"""User-facing errors: each says what was wrong and what to do about it."""


class AdaStateError(Exception):
    """An error caused by user input (a file, a setting); its message is meant to be shown as is."""


class CheckpointError(AdaStateError, ValueError):
    """A model file that cannot be used as the requested model."""
