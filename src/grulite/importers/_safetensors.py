"""Reading .safetensors files (no safetensors package needed).

The format (https://github.com/huggingface/safetensors)::

    8 bytes      N, unsigned little-endian: the header's length
    N bytes      UTF-8 JSON object {name: {"dtype": "F32", "shape": [..],
                 "data_offsets": [begin, end]}, "__metadata__": {str: str}}
                 (may be padded with spaces)
    the rest     the data area; offsets are relative to its start, tensors
                 are little-endian, C order

Everything is checked before use, as the reference implementation does: N
within the file and under 100 MB, valid JSON without duplicate names, known
dtypes, ``end - begin == prod(shape) * itemsize``, offsets inside the data
area and tiling it exactly (no overlaps, no holes).  Tensors are read from
the file only when used.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from grulite._errors import GruliteError, reading
from grulite.importers._lazy import LazyTensor, WeightsFile, existing_path
from grulite.importers._state_dict import EmbeddingSpec, HeadSpec, VocabSpec, build_image

__all__ = ["image", "read_safetensors"]

_MAX_HEADER = 100_000_000
_MAX_NDIM = 64

# safetensors dtype -> (numpy dtype little-endian, or None if not readable here; itemsize)
_DTYPES = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U64": ("<u8", 8), "U32": ("<u4", 4), "U16": ("<u2", 2), "U8": ("u1", 1),
    "BOOL": ("u1", 1), "C64": ("<c8", 8), "C128": ("<c16", 16),
    "F8_E4M3": (None, 1), "F8_E5M2": (None, 1), "F8_E8M0": (None, 1),
}


class _Tensor(LazyTensor):
    """One tensor of an open file, read on first use."""
    __slots__ = ("_reader", "name", "_begin", "_end")

    def __init__(self, reader: _Reader, name: str, kind: str, shape: tuple, begin: int,
                 end: int):
        self._reader, self.name, self._begin, self._end = reader, name, begin, end
        self._init(shape, _DTYPES[kind][0], "bfloat16" if kind == "BF16" else
                   "bool" if kind == "BOOL" else kind)

    def _read(self) -> np.ndarray:
        if self.code is None:
            raise GruliteError(f"tensor {self.name!r} has dtype {self.kind}, which grulite "
                               "cannot read")
        raw = self._reader.read(self._begin, self._end)
        return np.frombuffer(raw, dtype=np.dtype(self.code)).reshape(self.shape)


class _Reader(WeightsFile):
    """An open .safetensors file: its header checked, its tensors lazy."""

    def _open(self) -> None:
        self.tensors, self.metadata = self._parse()

    def _err(self, msg: str) -> GruliteError:
        return GruliteError(f"{self.path!r} is not a valid safetensors file: {msg}")

    def read(self, begin: int, end: int) -> bytes:
        if self._f.closed:
            raise GruliteError(f"{self.path!r} is closed: use read_safetensors for arrays")
        self._f.seek(self.data_start + begin)
        data = self._f.read(end - begin)
        if len(data) != end - begin:
            raise self._err("the file is shorter than its header says (truncated?)")
        return data

    def _parse(self) -> tuple:
        f = self._f
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
        head = f.read(8)
        if len(head) < 8:
            raise self._err(f"{size} bytes; a safetensors file starts with an 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise self._err(f"the header length is {n} bytes but the file has only {size - 8} "
                            "bytes after it")
        if n > _MAX_HEADER:
            raise self._err(f"the header length is {n} bytes (limit {_MAX_HEADER})")
        if n < 2:
            raise self._err(f"the header length is {n} bytes; too short for a JSON object")
        raw = f.read(n)
        if len(raw) != n:
            raise self._err("the header is truncated")
        if raw[:1] != b"{":
            raise self._err(f"the header does not start with '{{' (starts with {raw[:16]!r})")

        def no_dups(pairs):
            d = {}
            for k, v in pairs:
                if k in d:
                    raise self._err(f"the header names {k[:80]!r} twice")
                d[k] = v
            return d

        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_dups)
        except GruliteError:
            raise
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise self._err(f"the header is not valid UTF-8 JSON: {e}") from None
        if not isinstance(header, dict):
            raise self._err(f"the header is a JSON {type(header).__name__}; expected an object")
        self.data_start = 8 + n
        data_len = size - self.data_start
        meta = header.pop("__metadata__", None)
        if meta is not None and (not isinstance(meta, dict) or
                                 not all(isinstance(v, str) for v in meta.values())):
            raise self._err("__metadata__ must be an object of strings")
        tensors = {}
        spans = []
        for name, ent in header.items():
            if not isinstance(ent, dict):
                raise self._err(f"entry {name[:80]!r} is not an object")
            kind, shape, offs = ent.get("dtype"), ent.get("shape"), ent.get("data_offsets")
            if not isinstance(kind, str) or kind not in _DTYPES:
                raise self._err(f"tensor {name[:80]!r} has dtype {kind!r}; expected one of "
                                f"{', '.join(_DTYPES)}")
            if not isinstance(shape, list) or len(shape) > _MAX_NDIM or \
                    not all(type(d) is int and d >= 0 for d in shape):
                raise self._err(f"tensor {name[:80]!r} has shape {str(shape)[:80]}; expected a "
                                "list of non-negative ints")
            if not isinstance(offs, list) or len(offs) != 2 or \
                    not all(type(o) is int and o >= 0 for o in offs) or offs[0] > offs[1]:
                raise self._err(f"tensor {name[:80]!r} has data_offsets {str(offs)[:80]}; "
                                "expected [begin, end] with 0 <= begin <= end")
            begin, end = offs
            if end > data_len:
                raise self._err(f"tensor {name[:80]!r} ends at byte {end} of a data area of "
                                f"{data_len} bytes")
            count = 1
            for d in shape:
                count *= d
            want = count * _DTYPES[kind][1]
            if end - begin != want:
                raise self._err(f"tensor {name[:80]!r} ({kind}, shape {tuple(shape)}) needs "
                                f"{want} bytes; its offsets [{begin}, {end}] hold {end - begin}")
            tensors[name] = _Tensor(self, name, kind, tuple(shape), begin, end)
            spans.append((begin, end, name))
        pos = 0
        for begin, end, name in sorted(spans):
            if begin != pos:
                what = "overlaps the previous tensor" if begin < pos else \
                    f"leaves a hole at bytes [{pos}, {begin})"
                raise self._err(f"tensor {name[:80]!r} at [{begin}, {end}] {what}")
            pos = end
        if pos != data_len:
            raise self._err(f"the tensors cover {pos} bytes of a data area of {data_len} bytes")
        return tensors, meta or {}


def read_safetensors(path: Union[str, os.PathLike]) -> dict:
    """All tensors of a .safetensors file as numpy arrays (BF16 widened to
    float32), in file order."""
    with _Reader(existing_path(path)) as r:
        return {k: t.numpy() for k, t in r.tensors.items()}


def image(path: Union[str, os.PathLike], prefix: Optional[str] = None,
          reset_after: Union[bool, Sequence[bool]] = True, head: HeadSpec = None,
          batch_first: bool = True, dtype: str = "auto",
          head_from: str = "output", embedding: EmbeddingSpec = None,
          fold_embedding: Optional[bool] = None, vocab: VocabSpec = None,
          h0: Optional[str] = None, update_gate: str = "torch",
          activations: Any = None, clip: Optional[float] = None) -> tuple[bytes, dict]:
    """The .grl image and summary for a .safetensors file holding a
    state_dict (``safetensors.torch.save_file(model.state_dict(), path)``);
    arguments of :func:`grulite.from_state_dict`.  Only the tensors the
    model uses are read."""
    p = existing_path(path)
    with reading(p, "safetensors file"), _Reader(p) as r:
        return build_image(dict(r.tensors), prefix, reset_after, head, batch_first,
                           source=os.path.basename(p), dtype=dtype, head_from=head_from,
                           embedding=embedding, fold_embedding=fold_embedding, vocab=vocab,
                           h0=h0, update_gate=update_gate,
                           activations=activations, clip=clip)
