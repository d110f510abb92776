"""The one error type of checkpoint reading, conversion and loading."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely, or whose weights do not fit the model.

    The message names the file (or URL) and the problem; the tools print it as one
    ``error:`` line.
    """
