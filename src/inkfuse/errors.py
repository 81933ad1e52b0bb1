"""The few exception types inkfuse raises on bad input.

Each carries a one-line message that names the problem and the fix; the CLI prints it and exits
non-zero, so users never see a traceback for a mistake they can correct.
"""


class InkfuseError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""


class ConfigError(InkfuseError):
    """A recipe, override or argument is unknown, malformed or out of range."""


class DataError(InkfuseError):
    """A dataset or image file is missing, corrupt or of the wrong shape."""


class CheckpointError(InkfuseError):
    """A run directory or checkpoint is missing, truncated or belongs to another model."""


class TrainingError(InkfuseError):
    """Training cannot go on (for example the loss became non-finite)."""
