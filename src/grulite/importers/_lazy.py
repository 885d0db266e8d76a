"""Weights files and their tensors, read on first use.

The torch.save, safetensors and npz readers open a file, check its table of
tensors (names, shapes, dtypes, where the bytes are) and hand out one
:class:`LazyTensor` per entry.  The state_dict mapping checks shapes and
dtypes on these, and only then reads the tensors the model uses.
"""
from __future__ import annotations

import abc
import os
from typing import Any, Optional, Union

import numpy as np

__all__ = ["LazyTensor", "WeightsFile", "existing_path"]


def existing_path(path: Union[str, os.PathLike]) -> str:
    """`path` as a str; FileNotFoundError when nothing is there."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such file: {p!r}")
    return p


class WeightsFile:
    """A weights file open for reading (``self._f``), its table parsed by
    the subclass's :meth:`_open`; closed if that fails.  A context manager;
    tensors are read while it is open."""

    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "rb")
        try:
            self._open()
        except BaseException:
            self._f.close()
            raise

    def _open(self) -> None:
        """Reads and checks the file's table of tensors."""

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LazyTensor(abc.ABC):
    """A tensor whose shape and stored dtype are known; its data are read
    from the file by :meth:`numpy` (or ``np.asarray``) and kept.

    Subclasses set ``shape`` (a tuple of ints), ``code`` (the numpy dtype of
    the stored elements with their byte order, or None when grulite cannot
    read them) and ``kind`` (``"bfloat16"`` and ``"bool"`` are decoded;
    anything else is the numpy type as stored), and implement
    :meth:`_read`, which returns the stored elements.
    """
    __slots__ = ("shape", "code", "kind", "_cache")
    shape: tuple
    code: Optional[str]
    kind: str
    _cache: Optional[np.ndarray]

    def _init(self, shape: tuple, code: Optional[str], kind: str) -> None:
        # object.__setattr__: subclasses may refuse attribute assignment
        for k, v in (("shape", shape), ("code", code), ("kind", kind), ("_cache", None)):
            object.__setattr__(self, k, v)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """The dtype :meth:`numpy` returns: bfloat16 widens to float32;
        object when the stored type cannot be read."""
        if self.code is None:
            return np.dtype(object)
        if self.kind == "bfloat16":
            return np.dtype(np.float32)
        if self.kind == "bool":
            return np.dtype(bool)
        return np.dtype(self.code).newbyteorder("=")

    @abc.abstractmethod
    def _read(self) -> np.ndarray:
        """The stored elements, shape ``self.shape``, dtype ``self.code``:
        each format's reader implements it."""

    def _finish(self, a: np.ndarray) -> np.ndarray:
        """Whatever the format applies after decoding (none by default)."""
        return a

    def numpy(self) -> np.ndarray:
        """The tensor as a C-contiguous array in native byte order."""
        if self._cache is None:
            a = self._read()
            a = np.array(a, dtype=a.dtype.newbyteorder("="), order="C")
            if self.kind == "bfloat16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            elif self.kind == "bool":
                a = a != 0
            object.__setattr__(self, "_cache", self._finish(a))
        return self._cache

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.kind})"
