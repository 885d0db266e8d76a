"""Reading ``np.savez`` archives of a PyTorch state_dict.

``np.savez("model.npz", **{k: v.numpy() for k, v in model.state_dict().items()})``
makes such a file.  Opening the archive reads the .npy header of every
member, never its data: the shape and dtype must account for exactly the
member's declared (uncompressed) size, and object arrays are refused (no
pickles).  Members are then lazy tensors: only those the model uses are
inflated, once every shape is checked, so an optimizer state (or a
compressed member declaring gigabytes) is never read.
"""
from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np

from grulite._errors import GruliteError
from grulite.importers._lazy import LazyTensor, existing_path
from grulite.importers._state_dict import EmbeddingSpec, HeadSpec, VocabSpec, build_image

__all__ = ["image"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")      # what np.load takes for an .npz


class _Counted:
    """A file object that counts the bytes read through it."""

    def __init__(self, f: Any):
        self.f, self.n = f, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.n += len(data)
        return data


class _Member(LazyTensor):
    """One .npy member of an open archive."""
    __slots__ = ("_archive", "_key")

    def __init__(self, archive: _NpzArchive, key: str, shape: tuple, dtype: Optional[np.dtype]):
        self._archive, self._key = archive, key
        if dtype is None:
            self._init(shape, None, "bytes (not a .npy array)")
        else:
            self._init(shape, dtype.str if dtype.kind in "fiu" else None, str(dtype))

    def _read(self) -> np.ndarray:
        return self._archive.read(self._key)


class _NpzArchive:
    """The members of an ``np.savez`` archive, read on demand.

    Opening reads every member's .npy header, never its data (see the
    module docstring).  Members that are not .npy files (np.load gives
    their raw bytes) are not read at all.
    """

    def __init__(self, path: str):
        self.path = path
        self._zip: Optional[zipfile.ZipFile] = None
        # key -> (member, shape, dtype); shape and dtype are None for a non-.npy member
        self._members: dict[str, tuple[zipfile.ZipInfo, Optional[tuple], Optional[np.dtype]]] = {}
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _error(self, what: Any, key: Optional[str] = None) -> GruliteError:
        where = f"member {key!r}: " if key is not None else ""
        return GruliteError(f"{self.path!r} is not a readable .npz of arrays: {where}{what}")

    @contextlib.contextmanager
    def _guard(self, key: Optional[str] = None) -> Iterator[None]:
        """Anything a damaged archive makes zipfile, zlib or numpy raise
        (BadZipFile, zlib.error, EOFError, ValueError, OSError, ...) becomes
        a GruliteError naming the file; MemoryError passes through."""
        try:
            yield
        except (GruliteError, MemoryError):
            raise
        except Exception as e:                  # noqa: BLE001 - the point of this guard
            raise self._error(e, key) from None

    def _open(self) -> None:
        prefix = np.lib.format.MAGIC_PREFIX
        with self._guard():
            with open(self.path, "rb") as f:
                magic = f.read(len(prefix))
        if magic == prefix:
            raise GruliteError(f"{self.path!r} holds a single array, not a state_dict (save with "
                               "np.savez(path, **state_dict), one keyword per tensor)")
        if not magic.startswith(_ZIP_MAGIC):
            raise self._error("it is not a zip archive (np.savez writes one)" if magic
                              else "the file is empty")
        with self._guard():
            self._zip = zipfile.ZipFile(self.path)
            infos: dict[str, zipfile.ZipInfo] = {}
            for info in self._zip.infolist():   # of a repeated name, the last one counts
                name = info.filename
                infos[name[:-4] if name.endswith(".npy") else name] = info
        for key, info in infos.items():
            with self._guard(key):
                self._members[key] = (info,) + self._header(key, info)

    def _header(self, key: str, info: zipfile.ZipInfo) -> tuple:
        """(shape, dtype) from a member's .npy header, checked against the
        member's size; (None, None) for a member that is not a .npy file."""
        assert self._zip is not None
        fmt = np.lib.format
        with self._zip.open(info) as raw:
            f = _Counted(raw)
            if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
                return None, None
            version = tuple(f.read(2))
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):       # 3.0 is 2.0 with a UTF-8 header
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise self._error(f"unsupported or truncated .npy format version {version}", key)
        if dtype.hasobject:
            raise self._error(f"Object arrays cannot be loaded when allow_pickle=False "
                              f"(dtype {dtype})", key)
        count = 1
        for n in shape:
            count *= int(n)
        size, held = count * dtype.itemsize, info.file_size - f.n
        if size != held:
            raise self._error(f"its header declares shape {shape} of {dtype} ({size} bytes) but "
                              f"the member holds {held} bytes of data", key)
        return tuple(int(n) for n in shape), dtype

    def tensors(self) -> dict[str, LazyTensor]:
        """A state_dict of lazy tensors, one per member (a non-.npy member,
        or one of a non-numeric dtype, is refused if used)."""
        return {key: _Member(self, key, shape or (), dtype)
                for key, (_, shape, dtype) in self._members.items()}

    def read(self, key: str) -> np.ndarray:
        """The array of one member, read in full; its shape and dtype are
        those its header showed when the archive was opened."""
        if self._zip is None:
            raise GruliteError(f"{self.path!r} is closed: its tensors are read while it is open")
        info, shape, dtype = self._members[key]
        if shape is None:
            raise self._error("not a .npy array", key)
        with self._guard(key):
            with self._zip.open(info) as f:
                arr = np.lib.format.read_array(f, allow_pickle=False)
        if arr.shape != shape or arr.dtype != dtype:
            raise self._error("the member changed while it was read", key)
        return arr

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> _NpzArchive:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def image(path: Union[str, os.PathLike], prefix: Optional[str] = None,
          reset_after: Union[bool, Sequence[bool]] = True, head: HeadSpec = None,
          batch_first: bool = True, dtype: str = "auto",
          head_from: str = "output", embedding: EmbeddingSpec = None,
          fold_embedding: Optional[bool] = None, vocab: VocabSpec = None,
          h0: Optional[str] = None, update_gate: str = "torch",
          activations: Any = None, clip: Optional[float] = None) -> tuple[bytes, dict]:
    """The .grl image and summary for an ``np.savez``'d state_dict
    (arguments of :func:`grulite.from_state_dict`); only the members the
    model uses are read, after every shape is checked on the headers."""
    p = existing_path(path)
    with _NpzArchive(p) as npz:
        return build_image(npz.tensors(), prefix, reset_after, head, batch_first,
                           source=os.path.basename(p), dtype=dtype, head_from=head_from,
                           embedding=embedding, fold_embedding=fold_embedding, vocab=vocab,
                           h0=h0, update_gate=update_gate,
                           activations=activations, clip=clip)
