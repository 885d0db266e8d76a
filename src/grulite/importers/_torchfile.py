"""Reading ``torch.save`` files without torch, and without running their pickle.

A ``torch.save`` file (torch >= 1.6) is a zip archive::

    <name>/data.pkl          the pickled object (state_dict, checkpoint dict)
    <name>/data/<key>        raw bytes of each tensor storage (uncompressed)
    <name>/byteorder         "little" or "big" (absent in old files: little)
    <name>/version, <name>/.format_version, <name>/.storage_alignment, ...

``<name>`` is the stem of the file name torch wrote to ("archive" for a
buffer); any single top-level directory holding ``data.pkl`` is accepted.
Tensors appear in the pickle as calls of ``torch._utils._rebuild_tensor_v2``
on storages given by persistent ids ``('storage', torch.FloatStorage, key,
location, numel)``.

Safety.  ``pickle`` runs whatever callables a file names, so the pickle is
read by a restricted unpickler whose ``find_class`` hands out only inert
stand-ins written here: the tensor rebuild functions (they make lazy numpy
views, checked against their storage), ``collections.OrderedDict``, storage
and dtype names, ``torch.Size`` / ``torch.device``, ``set`` / ``frozenset``
/ ``complex`` / ``bytearray``, ``_codecs.encode`` (latin-1 only, as
protocol 2 uses for bytes) and plain-number numpy scalars and arrays.  Any
other global (``os.system``, ``builtins.eval``, a pickled ``nn.Module``
class...) raises :class:`GruliteError` before anything is called.  None of
the stand-ins is a class that pickle could instantiate or give attributes
to (``BUILD`` on them is refused).  Before unpickling, the opcodes are
scanned (``pickletools.genops``, which executes nothing) for truncated
arguments and out-of-order memo indices (CPython's unpickler allocates the
memo up to the largest index it is given).

Every size is checked before it is used: a storage's declared element
count against its zip entry, a tensor's offset / shape / strides against
its storage, zip entries against the file.  Storages are read only when a
tensor is used (a checkpoint's optimizer state is never read), straight
from the file for stored entries (torch may write CRC 0 when
``torch.serialization.set_crc32_options(False)``: such entries are not
CRC-checked; others are).  A deflated storage (torch.save never deflates;
a re-zipped or crafted file) is inflated only as far as each tensor's view
reaches, keeping only the bytes the view spans, so a tensor of a few
elements never inflates a whole storage (CRC-checked when a view spans it
all).

The legacy (pre-1.6) format and TorchScript archives are refused with a
message saying what to do instead.
"""
from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import re
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from grulite._errors import GruliteError, reading
from grulite.importers._lazy import LazyTensor, WeightsFile, existing_path
from grulite.importers._state_dict import CHECKPOINT_KEYS, EmbeddingSpec, HeadSpec, VocabSpec, build_image, has_gru_keys

__all__ = ["image", "read_torch_file"]

_MAX_PICKLE_BYTES = 64 << 20       # data.pkl: ~100 bytes per tensor in a state_dict
_MAX_PICKLE_OPS = 8_000_000        # bounds the objects (memory) a small pickle can make
_MAX_SMALL_RECORD = 64             # byteorder, version
_MAX_DEFLATE_RATIO = 1100          # deflate cannot expand more than ~1032:1
_MAX_EXPAND = 1 << 24              # elements a stride-0 (expanded) view may materialize
_MAX_NDIM = 64
_MAX_DEPTH = 200                   # container nesting walked by this module
_MAX_DIM = 1 << 62

# torch dtype name -> (numpy dtype, little-endian; None if not readable here, itemsize)
_DTYPES = {
    "float32": ("<f4", 4), "float64": ("<f8", 8), "float16": ("<f2", 2),
    "bfloat16": ("<u2", 2),                         # widened to float32 on read
    "int64": ("<i8", 8), "int32": ("<i4", 4), "int16": ("<i2", 2), "int8": ("i1", 1),
    "uint8": ("u1", 1), "uint16": ("<u2", 2), "uint32": ("<u4", 4), "uint64": ("<u8", 8),
    "bool": ("u1", 1),                              # any nonzero byte is True
    "complex64": ("<c8", 8), "complex128": ("<c16", 16),
    "complex32": (None, 4), "float8_e5m2": (None, 1), "float8_e4m3fn": (None, 1),
    "float8_e5m2fnuz": (None, 1), "float8_e4m3fnuz": (None, 1), "float8_e8m0fnu": (None, 1),
    "float4_e2m1fn_x2": (None, 1), "bits8": (None, 1), "bits16": (None, 2),
    "bits1x8": (None, 1), "bits2x4": (None, 1), "bits4x2": (None, 1),
}
_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
                  "int": "int32", "short": "int16", "cfloat": "complex64",
                  "cdouble": "complex128", "chalf": "complex32"}
_STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
             "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
             "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
             "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
             "ComplexDoubleStorage": "complex128", "UntypedStorage": "untyped"}

_LEGACY_MAGIC = (0x1950a86a20f9469cfc6c).to_bytes(10, "little")
_KEY_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_NP_CODE_RE = re.compile(r"(?:[fiuc]\d{1,2}|b1|\?)")


def _short(obj: Any, n: int = 120) -> str:
    try:
        s = repr(obj)
    except Exception:                                   # noqa: BLE001 (RecursionError, ...)
        s = f"<{type(obj).__name__}>"
    return s if len(s) <= n else s[:n] + "..."


def _ints(value: Any, what: str) -> tuple:
    """A tuple of non-negative Python ints (torch.Size, tuple or list)."""
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_NDIM:
        raise GruliteError(f"tensor {what} must be a tuple of at most {_MAX_NDIM} ints; "
                           f"got {_short(value)}")
    out = []
    for v in value:
        if type(v) is not int or v < 0 or v > _MAX_DIM:
            raise GruliteError(f"tensor {what} must hold non-negative ints; got {_short(value)}")
        out.append(v)
    return tuple(out)


# ---------------------------------------------------------------------------
# Inert stand-ins.  None of them is a class (pickle cannot instantiate them
# with NEWOBJ), none has a __dict__, and BUILD on them is refused.


class _Frozen:
    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __setstate__(self, state):
        raise GruliteError(f"refusing to set the state of {_short(self)} from a pickle")

    def __reduce_ex__(self, protocol):
        raise TypeError(f"{type(self).__name__} cannot be pickled")


class _Token(_Frozen):
    """A torch / numpy name that is data, not code: a storage type, a dtype,
    torch.Tensor / nn.Parameter (as _rebuild_from_type_v2's type)."""
    __slots__ = ("kind", "name", "dtype")

    def __init__(self, kind: str, name: str, dtype: Optional[str] = None):
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __call__(self, *args):
        raise GruliteError(f"refusing to call {self.name} from a pickle: only tensors and "
                           "plain containers are allowed")

    def __repr__(self):
        return self.name


class _Callable(_Frozen):
    """An allowed global: a safe function of this module, positional args only."""
    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self):
        return f"<{self.name}>"


class _StateDict(dict):
    """What collections.OrderedDict unpickles to: a dict (ordered) without
    instance attributes; the state torch attaches with BUILD (``_metadata``,
    module versions) is dropped."""
    __slots__ = ()

    def __setstate__(self, state):
        if not isinstance(state, (dict, tuple, type(None))):
            raise GruliteError(f"unexpected state for an OrderedDict in the pickle: {_short(state)}")


class _Opaque(_Frozen):
    """A value that was loaded but is not a plain number or array (e.g. a
    numpy string array); kept as a placeholder."""
    __slots__ = ("what",)

    def __init__(self, what: str):
        object.__setattr__(self, "what", what)

    def __repr__(self):
        return f"<{self.what}, not loaded>"


class _Storage(_Frozen):
    """One storage record of the archive (validated, read on demand)."""
    __slots__ = ("archive", "key", "dtype_name", "numel", "nbytes")

    def __init__(self, archive, key, dtype_name, numel, nbytes):
        for k, v in zip(self.__slots__, (archive, key, dtype_name, numel, nbytes)):
            object.__setattr__(self, k, v)

    def read_range(self, lo: int, hi: int, useful: int) -> Any:
        """Bytes [lo, hi) of the storage, of which a view reads `useful`."""
        return self.archive.read_storage_range(self, lo, hi, useful)

    def __repr__(self):
        return f"<storage {self.key!r}: {self.numel} x {self.dtype_name}>"


class _TorchTensor(_Frozen, LazyTensor):
    """A tensor of a torch.save file: shape and dtype known, data read from
    the archive on first use (``numpy()`` / ``np.asarray``)."""
    __slots__ = ("_storage", "_offset", "_stride", "_neg", "_conj", "_error")

    def __init__(self, storage, dtype_name, offset, shape, stride, neg=False, conj=False,
                 error=None):
        for k, v in zip(self.__slots__, (storage, offset, stride, neg, conj, error)):
            object.__setattr__(self, k, v)
        code = _DTYPES[dtype_name][0]
        if code is not None and storage.archive.big_endian:
            code = np.dtype(code).newbyteorder(">").str
        self._init(shape, code, dtype_name)

    def _read(self) -> np.ndarray:
        if self._error:
            raise GruliteError(self._error)
        st = self._storage
        itemsize = _DTYPES[self.kind][1]
        n = int(np.prod(self.shape, dtype=object)) if self.shape else 1
        if n == 0:
            return np.zeros(self.shape, dtype=self.code)
        _check_view(self.shape, self._stride, self._offset, st.nbytes // itemsize)  # again: cheap
        # the elements [lo, hi) of the storage the view reaches (strides are >= 0)
        lo = self._offset
        hi = lo + sum((d - 1) * s for d, s in zip(self.shape, self._stride)) + 1
        raw = st.read_range(lo * itemsize, hi * itemsize, n * itemsize)
        base = np.frombuffer(raw, dtype=np.dtype(self.code), count=hi - lo)
        return np.lib.stride_tricks.as_strided(
            base, shape=self.shape, strides=tuple(s * itemsize for s in self._stride),
            writeable=False)

    def _finish(self, a: np.ndarray) -> np.ndarray:
        if self._conj:
            a = np.conj(a)
        if self._neg:
            a = np.negative(a)
        return a


def _check_view(shape: tuple, stride: tuple, offset: int, avail: int) -> None:
    if any(d == 0 for d in shape):
        return
    last = offset + sum((d - 1) * s for d, s in zip(shape, stride))
    if last >= avail:
        raise GruliteError(f"tensor of shape {shape}, strides {stride}, offset {offset} reaches "
                           f"element {last} of a storage of {avail} elements")
    n = 1
    for d in shape:
        n *= d
    if n > max(avail, _MAX_EXPAND):
        raise GruliteError(f"tensor of shape {shape} ({n} elements) expands a storage of {avail} "
                           f"elements past the limit of {_MAX_EXPAND}")


# ---------------------------------------------------------------------------
# the allowed globals


def _make_tensor(storage, dtype_name, offset, size, stride, metadata):
    size = _ints(size, "size")
    stride = _ints(stride, "stride")
    if len(stride) != len(size):
        raise GruliteError(f"tensor size {size} and stride {stride} differ in length")
    if type(offset) is not int or offset < 0 or offset > _MAX_DIM:
        raise GruliteError(f"tensor storage offset must be a non-negative int; got {_short(offset)}")
    code, itemsize = _DTYPES[dtype_name]
    _check_view(size, stride, offset, storage.nbytes // itemsize)
    error = None
    if code is None:
        error = f"a tensor has dtype torch.{dtype_name}, which grulite cannot read"
    neg = conj = False
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise GruliteError(f"tensor metadata must be a dict; got {_short(metadata)}")
        neg = bool(metadata.get("neg", False))
        conj = bool(metadata.get("conj", False))
        other = [k for k, v in metadata.items() if k not in ("neg", "conj") and v]
        if other and error is None:
            error = f"a tensor has metadata {_short(metadata)} that grulite cannot apply"
    return _TorchTensor(storage, dtype_name, offset, size, stride, neg, conj, error)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage) or storage.dtype_name == "untyped":
        raise GruliteError(f"_rebuild_tensor_v2 needs a typed storage; got {_short(storage)}")
    return _make_tensor(storage, storage.dtype_name, storage_offset, size, stride, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(storage, _Storage) or storage.dtype_name != "untyped":
        raise GruliteError(f"_rebuild_tensor_v3 needs an untyped storage; got {_short(storage)}")
    if not isinstance(dtype, _Token) or dtype.kind != "dtype":
        raise GruliteError(f"_rebuild_tensor_v3 needs a torch dtype; got {_short(dtype)}")
    return _make_tensor(storage, dtype.dtype, storage_offset, size, stride, metadata)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, _TorchTensor):
        raise GruliteError(f"_rebuild_parameter needs a tensor; got {_short(data)}")
    return data


_REBUILDERS = frozenset(("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
                         "torch._utils._rebuild_tensor", "torch._utils._rebuild_parameter",
                         "torch._utils._rebuild_parameter_with_state"))


def _rebuild_from_type_v2(func, new_type, args, state=None):
    if not (isinstance(func, _Callable) and func.name in _REBUILDERS):
        raise GruliteError(f"_rebuild_from_type_v2 with {_short(func)}: only the tensor rebuild "
                           "functions are allowed")
    if not (isinstance(new_type, _Token) and new_type.kind == "tensortype"):
        raise GruliteError(f"_rebuild_from_type_v2 to type {_short(new_type)}: only torch.Tensor "
                           "and nn.Parameter are allowed")
    if not isinstance(args, tuple):
        raise GruliteError(f"_rebuild_from_type_v2 arguments must be a tuple; got {_short(args)}")
    out = func(*args)
    if not isinstance(out, _TorchTensor):
        raise GruliteError("_rebuild_from_type_v2 did not produce a tensor")
    return out


def _ordered_dict(items=()):
    if not isinstance(items, (list, tuple, dict)):
        raise GruliteError(f"OrderedDict from {_short(items)}: expected a list of pairs")
    return _StateDict(items)


def _torch_size(dims=()):
    return _ints(dims, "size")


def _torch_device(kind, index=None):
    if not isinstance(kind, str) or len(kind) > 64 or not (index is None or type(index) is int):
        raise GruliteError(f"torch.device({_short(kind)}, {_short(index)}): bad arguments")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(obj, encoding="utf-8"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise GruliteError(f"_codecs.encode({_short(obj, 40)}, {_short(encoding, 40)}): only "
                           "latin-1 strings (pickle's form of bytes) are allowed")
    return obj.encode("latin-1")


def _plain_iterable(value, what):
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise GruliteError(f"{what} from {_short(value)}: expected a list")
    return value


def _set(items=()):
    return set(_plain_iterable(items, "set"))


def _frozenset(items=()):
    return frozenset(_plain_iterable(items, "frozenset"))


def _complex(real=0.0, imag=0.0):
    if not all(type(v) in (int, float) for v in (real, imag)):
        raise GruliteError(f"complex({_short(real)}, {_short(imag)}): expected numbers")
    return complex(real, imag)


def _bytes(data=b"", encoding=None):
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return data.encode("latin-1")
    if not isinstance(data, (bytes, bytearray)) or encoding is not None:
        raise GruliteError(f"bytes({_short(data, 40)}): only bytes or latin-1 strings are allowed")
    return bytes(data)


def _bytearray(data=b"", encoding=None):
    return bytearray(_bytes(data, encoding))


class _NpDtype(_Frozen):
    """numpy.dtype(code, align, copy) of a plain number type; numpy pickles
    the byte order with BUILD, which is allowed here (once, checked)."""
    __slots__ = ("code", "order")

    def __init__(self, code: Optional[str]):
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "order", "<")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise GruliteError(f"unexpected numpy dtype state in the pickle: {_short(state)}")
        if self.code is not None and any(v is not None for v in state[2:5]):
            raise GruliteError("structured numpy dtypes are not supported in a pickle")
        object.__setattr__(self, "order", "<" if state[1] in ("|", "=") else state[1])

    def np(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)

    def __repr__(self):
        return f"numpy.dtype({self.code!r})"


def _np_dtype(code, align=False, copy=True):
    if not isinstance(code, str):
        raise GruliteError(f"numpy.dtype({_short(code)}): expected a type code")
    return _NpDtype(code if _NP_CODE_RE.fullmatch(code) else None)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, _NpDtype):
        raise GruliteError(f"numpy scalar of {_short(dtype)}: expected a numpy dtype")
    if dtype.code is None:
        return _Opaque("numpy scalar of a non-numeric dtype")
    dt = dtype.np()
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise GruliteError(f"numpy scalar of dtype {dtype.code}: expected {dt.itemsize} bytes")
    return np.frombuffer(data, dtype=dt)[0].item()


class _NpArray(_Frozen):
    """numpy's ndarray pickle: _reconstruct(ndarray, (0,), b'b') then BUILD
    with (version, shape, dtype, is_fortran, raw bytes)."""
    __slots__ = ("_array", "_error")

    def __init__(self):
        object.__setattr__(self, "_array", None)
        object.__setattr__(self, "_error", "a numpy array in the pickle has no data")

    def __setstate__(self, state):
        if self._array is not None:
            raise GruliteError("a numpy array in the pickle is set twice")
        if not isinstance(state, tuple) or len(state) != 5:
            raise GruliteError(f"unexpected numpy array state in the pickle: {_short(state)}")
        _, shape, dtype, fortran, raw = state
        shape = _ints(shape, "shape")
        if not isinstance(dtype, _NpDtype):
            raise GruliteError(f"numpy array of {_short(dtype)}: expected a numpy dtype")
        if dtype.code is None:
            object.__setattr__(self, "_error", "a numpy array in the pickle has a non-numeric "
                                               "dtype, which grulite does not load")
            return
        dt = dtype.np()
        n = 1
        for d in shape:
            n *= d
        if not isinstance(raw, bytes) or len(raw) != n * dt.itemsize:
            raise GruliteError(f"numpy array of shape {shape}, dtype {dtype.code}: expected "
                               f"{n * dt.itemsize} bytes of data")
        arr = np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")
        object.__setattr__(self, "_array", np.array(arr, dtype=dt.newbyteorder("="), order="C"))
        object.__setattr__(self, "_error", None)

    @property
    def shape(self):
        return self.numpy().shape

    @property
    def ndim(self):
        return self.numpy().ndim

    @property
    def dtype(self):
        return self.numpy().dtype

    def numpy(self) -> np.ndarray:
        if self._array is None:
            raise GruliteError(self._error)
        return self._array

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self):
        return "numpy array" if self._array is None else f"numpy array {self._array.shape}"


def _np_reconstruct(subtype, shape=(0,), typecode=b"b"):
    if not (isinstance(subtype, _Token) and subtype.kind == "ndarray"):
        raise GruliteError(f"numpy _reconstruct of {_short(subtype)}: only numpy.ndarray is allowed")
    return _NpArray()


def _np_frombuffer(buf, dtype, shape, order="C"):
    """numpy's pickle of an array under protocol 5 (in-band buffer)."""
    if not isinstance(buf, (bytes, bytearray)):
        raise GruliteError(f"numpy _frombuffer of {_short(buf, 40)}: expected bytes")
    arr = _NpArray()
    arr.__setstate__((1, shape, dtype, order == "F", bytes(buf)))
    return arr


def _allowed() -> dict:
    table: dict = {}

    def fn(qualnames, f):
        for q in qualnames.split():
            table[q] = _Callable(q, f)

    fn("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2)
    fn("torch._utils._rebuild_tensor_v3", _rebuild_tensor_v3)
    fn("torch._utils._rebuild_tensor", _rebuild_tensor)
    fn("torch._utils._rebuild_parameter torch._utils._rebuild_parameter_with_state",
       _rebuild_parameter)
    fn("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2)
    fn("collections.OrderedDict", _ordered_dict)
    fn("torch.Size", _torch_size)
    fn("torch.device", _torch_device)
    fn("_codecs.encode", _codecs_encode)
    fn("builtins.set", _set)
    fn("builtins.frozenset", _frozenset)
    fn("builtins.complex", _complex)
    fn("builtins.bytes", _bytes)
    fn("builtins.bytearray", _bytearray)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        fn(f"{mod}.scalar", _np_scalar)
        fn(f"{mod}._reconstruct", _np_reconstruct)
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        fn(f"{mod}._frombuffer", _np_frombuffer)
    fn("numpy.dtype", _np_dtype)
    table["numpy.ndarray"] = _Token("ndarray", "numpy.ndarray")
    for q in ("torch.Tensor", "torch.nn.parameter.Parameter", "torch.nn.Parameter"):
        table[q] = _Token("tensortype", q)
    for mod in ("torch", "torch.cuda"):
        for sname, dname in _STORAGES.items():
            table[f"{mod}.{sname}"] = _Token("storage", f"torch.{sname}", dname)
    table["torch.storage.UntypedStorage"] = _Token("storage", "torch.UntypedStorage", "untyped")
    for dname in list(_DTYPES) + list(_DTYPE_ALIASES):
        table[f"torch.{dname}"] = _Token("dtype", f"torch.{dname}", _DTYPE_ALIASES.get(dname, dname))
    return table


_ALLOWED = _allowed()


def _find_allowed(module: str, name: str):
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    obj = _ALLOWED.get(f"{module}.{name}")
    if obj is not None:
        return obj
    what = f"{module}.{name}"
    if len(what) > 200:
        what = what[:200] + "..."
    hint = ""
    if module == "__main__" or module.startswith(("torch.nn", "__torch__")) or \
            (name[:1].isupper() and not module.startswith(("os", "builtins", "subprocess"))):
        hint = ("; this looks like a pickled Python object (such as a whole nn.Module): save "
                "model.state_dict() with torch.save instead")
    raise GruliteError(f"refusing to load {what} from a pickle: only tensors and plain "
                       f"containers are allowed{hint}")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _TorchArchive):
        super().__init__(io.BytesIO(data))
        self._archive = archive

    def find_class(self, module, name):
        return _find_allowed(str(module), str(name))

    def persistent_load(self, pid):
        return self._archive.storage_for(pid)


def _prescan(data: bytes, where: str) -> None:
    """Walks the opcodes (executing nothing): truncation, unknown opcodes and
    memo indices that would make CPython allocate a huge memo."""
    puts = 0
    try:
        for n, (op, arg, _pos) in enumerate(pickletools.genops(data)):
            if n >= _MAX_PICKLE_OPS:
                raise GruliteError(f"{where}: more than {_MAX_PICKLE_OPS} pickle opcodes; "
                                   "not a state_dict")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not isinstance(arg, int) or arg < 0 or arg > puts:
                    raise GruliteError(f"{where}: memo index {_short(arg)} out of sequence "
                                       f"(expected <= {puts}); not a pickle written by torch.save")
                puts += 1
            elif op.name == "MEMOIZE":
                puts += 1
            elif op.name in ("EXT1", "EXT2", "EXT4"):
                raise GruliteError(f"{where}: pickle extension codes ({op.name}) are not allowed")
    except GruliteError:
        raise
    except Exception as e:                              # noqa: BLE001 (ValueError, ...)
        raise GruliteError(f"{where} is not a valid pickle: {e}") from None


# ---------------------------------------------------------------------------
# the archive


class _TorchArchive(WeightsFile):
    """An open torch.save zip archive; reads records with size checks."""

    def __init__(self, path: str):
        self._storages: dict = {}
        self._data: dict = {}
        super().__init__(path)

    def close(self) -> None:
        self._data.clear()
        super().close()

    def _err(self, msg: str) -> GruliteError:
        return GruliteError(f"{self.path!r}: {msg}")

    def _open(self) -> None:
        f = self._f
        f.seek(0, os.SEEK_END)
        self.size = f.tell()
        f.seek(0)
        head = f.read(512)
        if head[:4] != b"PK\x03\x04":
            if head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32] or head[257:262] == b"ustar":
                raise self._err("legacy (pre-1.6) torch.save format is not supported: re-save "
                                "with torch>=1.6 (torch.save(torch.load(path), path))")
            if head[:1] == b"\x80":
                raise self._err("a bare pickle, not a torch.save archive: grulite reads "
                                "torch.save(model.state_dict(), path) files (torch>=1.6)")
            if head[:4] == b"PK\x05\x06":
                raise self._err("an empty zip archive, not a torch.save file")
            raise self._err("not a torch.save file (expected a zip archive starting with "
                            f"'PK\\x03\\x04'; the file starts with {head[:8]!r})")
        try:
            zf = zipfile.ZipFile(f)
            infos = zf.infolist()
        except Exception as e:                          # noqa: BLE001 (BadZipFile, ...)
            raise self._err(f"not a readable zip archive (truncated or damaged?): {e}") from None
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise self._err("the zip archive has duplicate entries")
        self._infos = {i.filename: i for i in infos}
        tops = sorted({n.split("/", 1)[0] for n in names if n.count("/") == 1
                       and n.endswith("/data.pkl")})
        if not tops:
            hint = ""
            if any(n.endswith(".npy") for n in names):
                hint = "; it looks like an .npz file: use grulite.from_npz"
            sample = ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
            raise self._err(f"no <archive>/data.pkl in the zip archive: not a torch.save file "
                            f"(entries: {sample or 'none'}){hint}")
        if len(tops) > 1:
            raise self._err(f"several data.pkl records ({', '.join(tops)}): ambiguous archive")
        self.prefix = tops[0]
        if f"{self.prefix}/constants.pkl" in self._infos or \
                any(n.startswith(f"{self.prefix}/code/") for n in names):
            raise self._err("a TorchScript archive (torch.jit.save), not a torch.save'd "
                            "state_dict: save the weights with "
                            "torch.save(model.state_dict(), path)")
        self.big_endian = False
        bo = self._infos.get(f"{self.prefix}/byteorder")
        if bo is not None:
            value = self.read_record(bo, _MAX_SMALL_RECORD).strip()
            if value not in (b"little", b"big"):
                raise self._err(f"byteorder record is {value[:20]!r}; expected 'little' or 'big'")
            self.big_endian = value == b"big"

    def _check_record(self, info: zipfile.ZipInfo, limit: int) -> None:
        """Checks an entry's declared sizes and method before it is read."""
        size = info.file_size
        if size > limit:
            raise self._err(f"record {info.filename!r} declares {size} bytes; more than the "
                            f"{limit} allowed")
        if info.flag_bits & 0x1:
            raise self._err(f"record {info.filename!r} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            return
        if info.compress_type != zipfile.ZIP_DEFLATED:
            raise self._err(f"record {info.filename!r} uses zip compression method "
                            f"{info.compress_type}; torch.save writes uncompressed records")
        if size > _MAX_DEFLATE_RATIO * max(info.compress_size, 1) + 1024 or \
                info.header_offset + info.compress_size > self.size:
            raise self._err(f"record {info.filename!r} declares {size} bytes from "
                            f"{info.compress_size} compressed: not a valid deflate stream "
                            "(zip bomb?)")

    def read_record(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        """The bytes of one entry, its declared size checked first."""
        self._check_record(info, limit)
        size = info.file_size
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != size:
                raise self._err(f"stored record {info.filename!r} has compressed size "
                                f"{info.compress_size} != size {size}")
            start = self._data_start(info)
            if start + size > self.size:
                raise self._err(f"record {info.filename!r} ({size} bytes at {start}) runs past "
                                f"the end of the file ({self.size} bytes): truncated?")
            self._f.seek(start)
            data = self._f.read(size)
            if len(data) != size:
                raise self._err(f"record {info.filename!r} is truncated")
            if info.CRC != 0 and zlib.crc32(data) != info.CRC:
                raise self._err(f"record {info.filename!r} fails its CRC-32 check: damaged file")
            return data
        try:
            with zipfile.ZipFile(self._f) as zf, zf.open(info) as fh:
                data = fh.read(size + 1)
        except Exception as e:                          # noqa: BLE001
            raise self._err(f"record {info.filename!r} is unreadable: {e}") from None
        if len(data) != size:
            raise self._err(f"record {info.filename!r} holds {len(data)} bytes; declared {size}")
        return data

    def _inflate_range(self, info: zipfile.ZipInfo, lo: int, hi: int) -> bytes:
        """Bytes [lo, hi) of a deflated entry (sizes checked): inflates the
        stream only up to `hi`, keeping only [lo, hi), so memory stays
        hi - lo plus one chunk whatever the entry declares."""
        name = info.filename
        chunk = 1 << 20
        start = self._data_start(info)
        if start + info.compress_size > self.size:
            raise GruliteError(f"record {name!r} runs past the end of the file: truncated?")
        d = zlib.decompressobj(-15)
        out = bytearray()
        pos, left, buf = 0, info.compress_size, b""
        try:
            while pos < hi:
                if not buf:
                    if left <= 0 or d.eof:
                        raise GruliteError(f"record {name!r} inflates to {pos} bytes; it "
                                           f"declares {info.file_size}")
                    self._f.seek(start + info.compress_size - left)
                    buf = self._f.read(min(left, chunk))
                    if not buf:
                        raise GruliteError(f"record {name!r} is truncated")
                    left -= len(buf)
                piece = d.decompress(buf, min(hi - pos, chunk))
                buf = d.unconsumed_tail
                a, b = max(lo - pos, 0), min(hi - pos, len(piece))
                if a < b:
                    out += piece[a:b]
                pos += len(piece)
        except zlib.error as e:
            raise GruliteError(f"record {name!r} is not a valid deflate stream: {e}") from None
        if lo == 0 and hi == info.file_size and info.CRC != 0 and zlib.crc32(out) != info.CRC:
            raise GruliteError(f"record {name!r} fails its CRC-32 check: damaged file")
        return bytes(out)

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        off = info.header_offset
        if off < 0 or off + 30 > self.size:
            raise self._err(f"record {info.filename!r}: local header offset {off} is outside the file")
        self._f.seek(off)
        hdr = self._f.read(30)
        if len(hdr) != 30 or hdr[:4] != b"PK\x03\x04":
            raise self._err(f"record {info.filename!r}: bad local header at offset {off}")
        n, m = struct.unpack("<HH", hdr[26:30])
        name = self._f.read(n)
        if name.decode("utf-8", "replace") != info.filename and \
                name.decode("cp437", "replace") != info.filename:
            raise self._err(f"record {info.filename!r}: the local header names {name[:80]!r}")
        return off + 30 + n + m

    # -- the pickle

    def load(self) -> Any:
        where = f"{self.path!r}: {self.prefix}/data.pkl"
        data = self.read_record(self._infos[f"{self.prefix}/data.pkl"], _MAX_PICKLE_BYTES)
        _prescan(data, where)
        try:
            return _RestrictedUnpickler(data, self).load()
        except GruliteError as e:
            raise GruliteError(f"{self.path!r}: {e}") from None
        except MemoryError:
            raise
        except Exception as e:                          # noqa: BLE001 (UnpicklingError, TypeError...)
            raise GruliteError(f"{where} could not be unpickled: {type(e).__name__}: {e}") from None

    def storage_for(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise GruliteError(f"unexpected persistent id {_short(pid)} in the pickle (expected "
                               "('storage', storage_type, key, location, numel))")
        _, stype, key, location, numel = pid
        if not (isinstance(stype, _Token) and stype.kind == "storage"):
            raise GruliteError(f"storage type {_short(stype)} is not a torch storage type")
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise GruliteError(f"storage key {_short(key)} is not a plain name")
        if not isinstance(location, str):
            raise GruliteError(f"storage location {_short(location)} is not a string")
        if type(numel) is not int or numel < 0:
            raise GruliteError(f"storage {key!r}: element count {_short(numel)} is not a "
                               "non-negative int")
        dname = stype.dtype
        itemsize = 1 if dname == "untyped" else _DTYPES[dname][1]
        nbytes = numel * itemsize
        name = f"{self.prefix}/data/{key}"
        info = self._infos.get(name)
        if info is None:
            raise GruliteError(f"storage {key!r} is missing from the archive (no record {name!r})")
        if info.file_size != nbytes:
            raise GruliteError(f"storage {key!r}: the pickle declares {numel} elements of "
                               f"{itemsize} bytes ({nbytes} bytes); the archive record holds "
                               f"{info.file_size} bytes")
        if info.compress_type == zipfile.ZIP_STORED and info.header_offset + nbytes > self.size:
            raise GruliteError(f"storage {key!r} ({nbytes} bytes) runs past the end of the file")
        old = self._storages.get(key)
        if old is not None:
            if old.dtype_name != dname:
                raise GruliteError(f"storage {key!r} is used as both {old.dtype_name} and {dname}")
            return old
        st = _Storage(self, key, dname, numel, nbytes)
        self._storages[key] = st
        return st

    def read_storage(self, st: _Storage) -> bytes:
        """The whole of a stored (uncompressed) storage record, kept."""
        if self._f.closed:
            raise GruliteError(f"{self.path!r} is closed: tensors of a torch file are read "
                               "while it is open (use read_torch_file for arrays)")
        data = self._data.get(st.key)
        if data is None:
            data = self.read_record(self._infos[f"{self.prefix}/data/{st.key}"], st.nbytes)
            if len(data) != st.nbytes:
                raise self._err(f"storage {st.key!r} holds {len(data)} bytes; expected {st.nbytes}")
            self._data[st.key] = data
        return data

    def read_storage_range(self, st: _Storage, lo: int, hi: int, useful: int) -> Any:
        """Bytes [lo, hi) of a storage, for a view reading `useful` of them.
        A stored record is read whole (and kept: views share it); a deflated
        one (torch.save never deflates: a re-zipped or crafted file) is
        inflated only as far as the view reaches, and only a view that reads
        most of what it spans is served, so that a small tensor cannot make
        a record of a few KB inflate to gigabytes in memory."""
        info = self._infos[f"{self.prefix}/data/{st.key}"]
        if info.compress_type == zipfile.ZIP_STORED:
            return memoryview(self.read_storage(st))[lo:hi]
        if self._f.closed:
            raise GruliteError(f"{self.path!r} is closed: tensors of a torch file are read "
                               "while it is open (use read_torch_file for arrays)")
        self._check_record(info, st.nbytes)
        if hi - lo > 2 * useful + (1 << 20):
            raise GruliteError(f"storage {st.key!r} is deflated (torch.save writes storages "
                               f"uncompressed) and a tensor reads {useful} of the {hi - lo} "
                               "bytes it spans in it; re-save the file with torch.save")
        return self._inflate_range(info, lo, hi)


# ---------------------------------------------------------------------------
# choosing the state_dict, materializing


def _has_gru(d: dict) -> bool:
    return has_gru_keys(k for k in dict.keys(d) if isinstance(k, str))


def _find_state_dict(obj: Any) -> Optional[dict]:
    """The mapping holding GRU tensors: the same search as
    _state_dict._unwrap_checkpoint (the top level, then the usual checkpoint
    keys, then any value), but each dict visited once and depth-limited, so
    shared or cyclic containers of a hostile pickle cannot blow it up."""
    seen: set = set()

    def search(d: dict, depth: int) -> Optional[dict]:
        if id(d) in seen or depth > _MAX_DEPTH:
            return None
        seen.add(id(d))
        if _has_gru(d):
            return d
        for key in CHECKPOINT_KEYS:
            inner = dict.get(d, key)
            if isinstance(inner, dict):
                found = search(inner, depth + 1)
                if found is not None:
                    return found
        for inner in dict.values(d):
            if isinstance(inner, dict):
                found = search(inner, depth + 1)
                if found is not None:
                    return found
        return None

    return search(obj, 0) if isinstance(obj, dict) else None


def _describe(obj: Any) -> str:
    if isinstance(obj, (LazyTensor, _NpArray)):
        return "a single tensor"
    return f"a {type(obj).__name__}"


def _mapping_for_build(obj: Any, path: str) -> dict:
    if not isinstance(obj, dict):
        raise GruliteError(f"{path!r} holds {_describe(obj)}, not a state_dict: save "
                           "model.state_dict() (or a checkpoint dict holding it) with torch.save")
    sd = _find_state_dict(obj)
    if sd is not None:
        return {k: v for k, v in dict.items(sd) if isinstance(k, str)}
    # No GRU anywhere: hand over the top-level keys only, for the error message.
    return {k: (None if isinstance(v, dict) else v) for k, v in dict.items(obj)
            if isinstance(k, str)}


def _materialize(obj: Any) -> Any:
    """The loaded object with numpy arrays for tensors and OrderedDicts for
    OrderedDicts; shared containers stay shared, cycles are kept."""
    memo: dict = {}

    def conv(o: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise GruliteError(f"containers nested more than {_MAX_DEPTH} deep")
        if isinstance(o, (LazyTensor, _NpArray)):
            if id(o) not in memo:
                memo[id(o)] = o.numpy()
            return memo[id(o)]
        if isinstance(o, dict):
            if id(o) in memo:
                return memo[id(o)]
            out = OrderedDict() if isinstance(o, _StateDict) else {}
            memo[id(o)] = out
            for k, v in dict.items(o):
                out[k] = conv(v, depth + 1)
            return out
        if isinstance(o, list):
            if id(o) in memo:
                return memo[id(o)]
            out_l: list = []
            memo[id(o)] = out_l
            out_l.extend(conv(v, depth + 1) for v in o)
            return out_l
        if isinstance(o, tuple):
            if id(o) in memo:
                return memo[id(o)]
            out_t = tuple(conv(v, depth + 1) for v in o)
            memo[id(o)] = out_t
            return out_t
        return o

    return conv(obj, 0)


def read_torch_file(path: Union[str, os.PathLike]) -> Any:
    """The object in a ``torch.save`` file (a state_dict or checkpoint), with
    numpy arrays for tensors (bfloat16 widened to float32), read without torch
    and without running code from the file.  numpy scalars come back as
    Python numbers.

    Raises FileNotFoundError for a missing path and GruliteError for anything
    that is not a plain torch.save file of tensors and containers.
    """
    p = existing_path(path)
    with _TorchArchive(p) as arch:
        obj = arch.load()
        try:
            return _materialize(obj)
        except GruliteError as e:
            msg = str(e)
            raise GruliteError(msg if msg.startswith(f"{p!r}: ") else f"{p!r}: {msg}") from None


def image(path: Union[str, os.PathLike], prefix: Optional[str] = None,
          reset_after: Union[bool, Sequence[bool]] = True, head: HeadSpec = None,
          batch_first: bool = True, dtype: str = "auto",
          head_from: str = "output", embedding: EmbeddingSpec = None,
          fold_embedding: Optional[bool] = None, vocab: VocabSpec = None,
          h0: Optional[str] = None, update_gate: str = "torch",
          activations: Any = None, clip: Optional[float] = None) -> tuple[bytes, dict]:
    """The .grl image and summary for a file written by ``torch.save``
    (torch >= 1.6): ``torch.save(model.state_dict(), path)`` or a checkpoint
    dict such as ``{"model": model.state_dict(), "epoch": 3, ...}``;
    arguments of :func:`grulite.from_state_dict`.  Only the tensors the
    model uses are read from the file."""
    p = existing_path(path)
    with reading(p, "torch.save file"), _TorchArchive(p) as arch:
        mapping = _mapping_for_build(arch.load(), p)
        return build_image(mapping, prefix, reset_after, head, batch_first,
                           source=os.path.basename(p), dtype=dtype, head_from=head_from,
                           embedding=embedding, fold_embedding=fold_embedding, vocab=vocab,
                           h0=h0, update_gate=update_gate,
                           activations=activations, clip=clip)
