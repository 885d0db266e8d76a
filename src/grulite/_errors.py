"""The one exception type grulite raises for bad models and bad input."""

import contextlib

__all__ = ["GruliteError", "reading"]


class GruliteError(ValueError):
    """A model file, state_dict or argument that grulite cannot use.

    The message says what was expected and what was found.  I/O failures
    raise ``OSError`` (``FileNotFoundError`` for a missing path) and failed
    allocations ``MemoryError``.
    """


@contextlib.contextmanager
def reading(path, what: str):
    """Turns any unexpected exception raised while parsing the file at
    ``path`` (a hostile or damaged file can make third-party parsers raise
    almost anything) into a GruliteError naming the file; GruliteError,
    OSError and MemoryError pass through."""
    try:
        yield
    except (GruliteError, OSError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:                      # noqa: BLE001 - the point of this guard
        raise GruliteError(f"{str(path)!r} is not a valid {what} ({type(e).__name__}: "
                           f"{str(e)[:200]})") from None
