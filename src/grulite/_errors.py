"""The one exception type grulite raises for bad models and bad input."""

__all__ = ["GruliteError"]


class GruliteError(ValueError):
    """A model file, state_dict or argument that grulite cannot use.

    The message says what was expected and what was found.  I/O failures
    raise ``OSError`` (``FileNotFoundError`` for a missing path) and failed
    allocations ``MemoryError``.
    """
