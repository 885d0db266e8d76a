"""The Python-facing model: argument handling around the C core."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import threading
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from grulite import _core
from grulite._convert import HeadSpec, build_image, used_tensors
from grulite._errors import GruliteError

__all__ = ["Model", "ModelConfig", "LayerConfig", "DenseConfig", "load",
           "from_state_dict", "from_npz"]

State = Union[np.ndarray, tuple]


def _np(value: Any) -> Any:
    """numpy view of a torch tensor (detached, on the CPU); anything else as is."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value


@dataclass(frozen=True)
class LayerConfig:
    """One GRU layer."""
    input_size: int
    hidden_size: int
    bidirectional: bool
    reset_after: bool
    bias: bool
    dtype: str = "float32"
    reverse: bool = False         # one direction, run backwards in time

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1


@dataclass(frozen=True)
class DenseConfig:
    """One Linear layer of the head and its activation."""
    in_features: int
    out_features: int
    activation: str
    bias: bool


@dataclass(frozen=True)
class ModelConfig:
    """What a model computes: sizes, flags, dtype and head."""
    input_size: int
    layers: tuple
    head: tuple
    batch_first: bool
    dtype: str
    head_from: str = "output"     # or "state": the head reads the final states

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def uniform(self) -> bool:
        """True when all layers share hidden size and directions, so states
        are one (L*D, B, H) array as in torch."""
        first = self.layers[0]
        return all(l.hidden_size == first.hidden_size and l.bidirectional == first.bidirectional
                   for l in self.layers)

    @property
    def hidden_size(self) -> Union[int, tuple]:
        """H, or a tuple of per-layer sizes when they differ."""
        sizes = tuple(l.hidden_size for l in self.layers)
        return sizes[0] if len(set(sizes)) == 1 else sizes

    @property
    def bidirectional(self) -> bool:
        return any(l.bidirectional for l in self.layers)

    @property
    def output_size(self) -> int:
        """Width of y: D*H of the top layer."""
        return self.layers[-1].num_directions * self.layers[-1].hidden_size

    @property
    def head_size(self) -> Optional[int]:
        return self.head[-1].out_features if self.head else None

    def to_dict(self) -> dict:
        return dict(input_size=self.input_size, batch_first=self.batch_first, dtype=self.dtype,
                    layers=[l.__dict__.copy() for l in self.layers],
                    head=[d.__dict__.copy() for d in self.head])


class Model:
    """A GRU (with an optional dense head) ready to run.

    Made by :func:`grulite.load`, :func:`grulite.from_state_dict` or
    :func:`grulite.from_npz`.  The model is read-only and may be shared by
    threads; each thread gets its own scratch memory.
    """

    def __init__(self, core: _core.CModel, *, num_threads: Optional[int] = None):
        self._core = core
        layers = tuple(LayerConfig(input_size=d["input_size"], hidden_size=d["hidden_size"],
                                   bidirectional=d["num_directions"] == 2,
                                   reset_after=d["reset_after"], bias=d["bias"], dtype=d["dtype"],
                                   reverse=d["reverse"])
                       for d in core.layers())
        head = tuple(DenseConfig(**d) for d in core.head())
        self.config = ModelConfig(input_size=core.input_size, layers=layers, head=head,
                                  batch_first=core.batch_first, dtype=layers[0].dtype,
                                  head_from="state" if core.head_from_state else "output")
        self._input_size = core.input_size
        uniform = self.config.uniform
        self._state_shape = ((sum(l.num_directions for l in layers), layers[0].hidden_size)
                             if uniform else None)      # (L*D, H) when states are one array
        self._local = threading.local()
        self._num_threads = 0             # 0: GRULITE_NUM_THREADS, else every core
        self.num_threads = num_threads

    # ---- information -------------------------------------------------

    @property
    def path(self) -> Optional[str]:
        """The .grl file this model is mapped from, or None."""
        return self._core.path

    @property
    def checksum(self) -> int:
        """CRC-32 of the model image."""
        return self._core.checksum

    @property
    def nbytes(self) -> int:
        """Size of the model image in bytes (the .grl file size)."""
        return self._core.nbytes

    @property
    def metadata(self) -> dict:
        """The free-form metadata stored with the model (a dict)."""
        raw = self._core.metadata()
        try:
            value = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, ValueError):
            return {"raw": raw.decode("utf-8", "replace")}
        return value if isinstance(value, dict) else {"value": value}

    def __repr__(self) -> str:
        c = self.config
        head = ", head=" + "->".join(f"{d.out_features}:{d.activation}" for d in c.head) if c.head else ""
        return (f"<grulite.Model input_size={c.input_size} hidden_size={c.hidden_size} "
                f"num_layers={c.num_layers} bidirectional={c.bidirectional}{head} "
                f"dtype={c.dtype}>")

    @property
    def isa(self) -> str:
        """The kernel set in use: "avx512", "avx2" or "generic".

        Chosen at load as the best this CPU runs (or by the ``GRULITE_ISA``
        environment variable).  Assign a name, or None for the best, to
        switch; do it before the model is shared between threads.
        """
        return self._core.isa

    @isa.setter
    def isa(self, name: Optional[str]) -> None:
        self._core.set_isa(name)

    @property
    def num_threads(self) -> int:
        """Threads a whole-sequence call may use (batch rows are split
        between them; results are identical for any count).  Defaults to
        ``GRULITE_NUM_THREADS`` or every core; assign an int >= 1, or None
        for the default."""
        if self._num_threads:
            return self._num_threads
        return self._workspace().threads

    @num_threads.setter
    def num_threads(self, n: Optional[int]) -> None:
        if n is None:
            self._num_threads = 0
            return
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or \
                not 1 <= int(n) <= _core.MAX_THREADS:
            raise GruliteError(f"num_threads must be an int in [1, {_core.MAX_THREADS}] or None; "
                               f"got {n!r}")
        self._num_threads = int(n)

    # ---- running -----------------------------------------------------

    def _workspace(self) -> _core.Workspace:
        try:
            ws = self._local.ws
        except AttributeError:
            ws = self._local.ws = _core.Workspace()
        if ws.requested != self._num_threads:
            ws.set_threads(self._num_threads)
        return ws

    def _prepare(self, x: Any, lengths: Any, batch_first: Optional[bool]):
        bf = self.config.batch_first if batch_first is None else bool(batch_first)
        if (lengths is None and type(x) is np.ndarray and x.dtype == np.float32
                and x.ndim == 3 and x.flags.c_contiguous and x.flags.aligned
                and x.shape[2] == self._input_size and x.shape[0] and x.shape[1]):
            # The common case, checked cheaply: a (B, T, I) float32 C array.
            return (x, bf, False, x.shape[0] if bf else x.shape[1],
                    x.shape[1] if bf else x.shape[0], None)
        xa = _core.as_array(_np(x), "x")
        if xa.dtype.kind != "f":
            raise GruliteError(f"x must be a float32 or float64 array; got dtype {xa.dtype}")
        I = self.config.input_size
        if xa.ndim == 2:
            unbatched = True
            xa = xa[None] if bf else xa[:, None]
        elif xa.ndim == 3:
            unbatched = False
        else:
            layout = "(batch, steps, input_size)" if bf else "(steps, batch, input_size)"
            raise GruliteError(f"x must have shape {layout} or (steps, input_size); "
                               f"got {xa.ndim}-D shape {xa.shape}")
        if xa.shape[-1] != I:
            raise GruliteError(f"x has {xa.shape[-1]} features in its last axis; the model "
                               f"expects input_size={I} (x shape {np.shape(x)})")
        B, T = (xa.shape[0], xa.shape[1]) if bf else (xa.shape[1], xa.shape[0])
        if T < 1 or B < 1:
            raise GruliteError(f"x needs at least one sequence and one step; got batch={B}, steps={T}")
        if B > _core.MAX_INT32 or T > _core.MAX_INT32:     # checked before x is copied
            raise GruliteError(f"x has batch={B}, steps={T}; each must be at most 2**31 - 1")
        len_a = None
        if lengths is not None:
            la = _core.as_array(_np(lengths), "lengths")
            if la.dtype.kind not in "iu":
                raise GruliteError(f"lengths must be integers; got dtype {la.dtype}")
            if unbatched and la.ndim == 0:
                la = la.reshape(1)
            if la.shape != (B,):
                raise GruliteError(f"lengths has shape {la.shape}; expected ({B},), one per sequence")
            bad = (la < 1) | (la > T)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise GruliteError(f"lengths[{i}] = {int(la[i])} is outside [1, {T}] "
                                   f"(steps in x = {T})")
            len_a = np.require(la, np.int32, ["C", "A"])
        xa = np.require(xa, np.float32, ["C", "A"])       # contiguous, aligned, native
        return xa, bf, unbatched, B, T, len_a

    def _join_state(self, h: Any, B: int, unbatched: bool = False, name: str = "h0") -> np.ndarray:
        """User-form state -> flat float32 (layer, direction, batch, hidden)."""
        c = self.config
        if c.uniform:
            LD = sum(l.num_directions for l in c.layers)
            H = c.layers[0].hidden_size
            ha = _core.as_array(_np(h), name)
            if ha.dtype.kind != "f":
                raise GruliteError(f"{name} must be a float array; got dtype {ha.dtype}")
            want = (LD, H) if unbatched else (LD, B, H)
            if ha.shape != want:
                raise GruliteError(f"{name} has shape {ha.shape}; expected {want} "
                                   f"(num_layers*num_directions, {'' if unbatched else 'batch, '}"
                                   f"hidden_size)")
            return np.require(ha, np.float32, ["C", "A"]).reshape(-1)
        if not isinstance(h, (tuple, list)) or len(h) != c.num_layers:
            raise GruliteError(f"{name} must be a tuple of {c.num_layers} arrays, one "
                               "(num_directions, batch, hidden_size) array per layer, because the "
                               "layers have different sizes")
        parts = []
        for k, (l, hk) in enumerate(zip(c.layers, h)):
            ha = _core.as_array(_np(hk), f"{name}[{k}]")
            if ha.dtype.kind != "f":
                raise GruliteError(f"{name}[{k}] must be a float array; got dtype {ha.dtype}")
            want = (l.num_directions, l.hidden_size) if unbatched else \
                (l.num_directions, B, l.hidden_size)
            if ha.shape != want:
                raise GruliteError(f"{name}[{k}] has shape {ha.shape}; expected {want}")
            parts.append(np.require(ha, np.float32, ["C", "A"]).reshape(-1))
        return np.concatenate(parts)

    def _split_state(self, flat: np.ndarray, B: int, unbatched: bool = False) -> State:
        """Flat state -> (L*D, B, H) array, or a tuple of (D, B, H_l)."""
        c = self.config
        if self._state_shape is not None:
            LD, H = self._state_shape
            out = flat.reshape(LD, B, H)
            return out[:, 0] if unbatched else out
        parts, pos = [], 0
        for l in c.layers:
            n = l.num_directions * B * l.hidden_size
            part = flat[pos:pos + n].reshape(l.num_directions, B, l.hidden_size)
            parts.append(part[:, 0] if unbatched else part)
            pos += n
        return tuple(parts)

    def __call__(self, x: Any, h0: Any = None, lengths: Any = None, *,
                 batch_first: Optional[bool] = None) -> tuple:
        """Runs the GRU, as torch.nn.GRU does.

        Parameters
        ----------
        x : array_like, float
            ``(batch, steps, input_size)`` when ``batch_first`` (the
            default), ``(steps, batch, input_size)`` otherwise, or
            unbatched ``(steps, input_size)``.
        h0 : array_like, optional
            Initial state ``(num_layers*num_directions, batch, hidden)``
            (a tuple of per-layer ``(D, batch, H_l)`` arrays when layers
            differ in size).  Zeros when omitted.
        lengths : array_like of int, optional
            Valid steps of each sequence in a padded batch (the
            ``pack_padded_sequence`` semantics): outputs past a length are
            0, ``h_n`` is taken at each sequence's last valid step.
        batch_first : bool, optional
            Overrides the model's default layout for this call.

        Returns
        -------
        y : ndarray, float32
            Top-layer outputs, ``(batch, steps, D*H)`` (or time-major).
        h_n : ndarray or tuple, float32
            Final state in the form of ``h0``.
        """
        xa, bf, unbatched, B, T, len_a = self._prepare(x, lengths, batch_first)
        h0f = None if h0 is None else self._join_state(h0, B, unbatched)
        y, hn, _ = self._core.forward(self._workspace(), xa, bf, len_a, h0f,
                                      True, True, False, False)
        if unbatched:
            y = y[0] if bf else y[:, 0]
        return y, self._split_state(hn, B, unbatched)

    def predict(self, x: Any, lengths: Any = None, *, h0: Any = None, all_steps: bool = False,
                batch_first: Optional[bool] = None) -> np.ndarray:
        """The head's output.

        Applied to the top layer's output at each sequence's last valid
        step: ``(batch, head_size)`` (``(head_size,)`` for unbatched x).
        With ``all_steps=True``, at every step: ``(batch, steps,
        head_size)`` (time-major when the layout is), 0 past a length.
        ``h0`` is the initial state, as for ``model(x, h0)``.
        """
        if not self.config.head:
            raise GruliteError("this model has no head; call model(x) for the GRU outputs, or "
                               "convert with head=[('fc', 'softmax')] to add one")
        xa, bf, unbatched, B, T, len_a = self._prepare(x, lengths, batch_first)
        h0f = None if h0 is None else self._join_state(h0, B, unbatched)
        _, _, out = self._core.forward(self._workspace(), xa, bf, len_a, h0f,
                                       False, False, True, bool(all_steps))
        if unbatched:
            if all_steps:
                return out[0] if bf else out[:, 0]
            return out[0]
        return out

    def stream(self, batch_size: int = 1) -> _core.Stream:
        """A streaming state for ``batch_size`` parallel sequences.

        ``s.step(x_t)`` takes ``(batch_size, input_size)`` (or a chunk
        ``(batch_size, steps, input_size)``) and returns the top layer's
        output, or the head's for a model with a head; ``s.state`` gets and
        sets the hidden state in the form of ``h0``; ``s.reset()`` zeros
        it.  Unidirectional models only.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise GruliteError(f"batch_size must be an int; got {batch_size!r}")
        return _core.Stream(self, self._core, int(batch_size),
                            lambda flat, B: self._split_state(flat, B),
                            lambda h, B: self._join_state(h, B, name="state"))

    def save(self, path: Union[str, os.PathLike], dtype: Optional[str] = None) -> None:
        """Writes the model as a .grl file.

        Parameters
        ----------
        path : str or PathLike
        dtype : {None, "float32", "float16", "int8"}
            Storage type of the GRU weights: None keeps the model's own.
            float16 halves the file, int8 (one float32 scale per output
            row) quarters it; activations stay float32 and the head keeps
            float32 weights.  Convert from a float32 model: converting an
            already-rounded model rounds again.
        """
        if dtype is None or str(getattr(dtype, "__name__", dtype)) == self.config.dtype:
            self._core.save(path)
            return
        image = self._core.convert(dtype)
        p = os.fspath(path)
        if "\0" in str(p):
            raise GruliteError(f"path {p!r} contains a NUL byte")
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(p) + ".", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(p)))
        try:
            os.chmod(tmp, 0o644)               # mkstemp makes 0600
            with os.fdopen(fd, "wb") as f:
                f.write(image)
            os.replace(tmp, p)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise

    def astype(self, dtype: str) -> Model:
        """A copy of the model with its GRU weights stored as ``dtype``
        ("float32", "float16", "int8"), in memory."""
        return from_bytes(self._core.convert(dtype), num_threads=self._num_threads or None)

    def to_bytes(self) -> bytes:
        """The .grl image as bytes (what :meth:`save` writes)."""
        return self._core.image()

    # ---- pickling and copying ----------------------------------------
    #
    # A model mapped from a .grl file pickles by reference: its path, the
    # image's CRC-32 and its settings (num_threads, a forced kernel set),
    # about a hundred bytes plus the path.  A model built in memory pickles as
    # its image.
    # Unpickling goes through a per-process cache (``model_cache``): a process
    # maps a file once however often the model is unpickled, and repeated
    # unpickles return the same Model object.

    def _pickle_state(self) -> dict:
        state: dict = {"v": 1, "checksum": int(self.checksum)}
        if self.path is not None:
            state["path"] = self.path
        else:
            state["image"] = self.to_bytes()
        if self._num_threads:
            state["num_threads"] = self._num_threads
        isa = self.isa
        if isa != _default_isa():
            state["isa"] = isa            # forced with model.isa = ...: keep it
        return state

    def __reduce__(self):
        return (_unpickle_model, (self._pickle_state(),))

    def __copy__(self) -> Model:
        return self._independent_copy()

    def __deepcopy__(self, memo: dict) -> Model:
        new = self._independent_copy()
        memo[id(self)] = new
        return new

    def _independent_copy(self) -> Model:
        """A new Model with the same weights and settings that shares no
        state with this one (its own kernel-set choice and thread count).
        A file-backed model maps its file again (the pages are shared) when
        the file is unchanged; otherwise the image is copied into memory."""
        core = None
        if self.path is not None:
            try:
                core = _core.load_path(self.path)
            except (OSError, GruliteError):
                core = None
            if core is not None and core.checksum != self.checksum:
                core = None
        if core is None:
            core = _core.load_bytes(self._core.image())
        new = Model(core)
        new._num_threads = self._num_threads
        if new.isa != self.isa:
            new.isa = self.isa
        return new


# ---- unpickling: the per-process model cache ---------------------------------


_ISA_PREFERENCE = ("avx512vnni", "avx512", "avx2", "neon", "generic")


def _default_isa() -> str:
    """The kernel set a model loaded now in this process gets by default."""
    env = os.environ.get("GRULITE_ISA", "")
    if env and env != "auto":
        return env
    for name in _ISA_PREFERENCE:
        if _core.isa_supported(name):
            return name
    return "generic"


def _file_signature(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ModelCache:
    """The per-process cache that unpickling goes through.

    Keys: ``("file", realpath, checksum, num_threads, isa)`` for models
    pickled by reference, ``("image", checksum, blake2b digest, num_threads,
    isa)`` for models pickled with their image.  The ``maxsize`` most
    recently used models are held (file-backed ones cost a mapping, not a
    copy); any other model still referenced somewhere is found too (weak
    references), so a process never holds two models for one key.

    A cached file-backed model is reused only while ``os.stat`` of the file
    (device, inode, size, mtime, ctime) matches what it was when mapped;
    otherwise the file is mapped again and its checksum compared with the
    pickled one.  Models from the cache are shared: treat them as
    read-only (``copy.copy(model)`` gives one of your own to reconfigure).
    """

    def __init__(self, maxsize: int = 8):
        self.maxsize = maxsize
        self._lock = threading.RLock()
        self._lru: OrderedDict[tuple, Model] = OrderedDict()
        self._alive: weakref.WeakValueDictionary[tuple, Model] = weakref.WeakValueDictionary()
        self._sig: weakref.WeakKeyDictionary[Model, Any] = weakref.WeakKeyDictionary()
        self.unpickles = 0      # models unpickled in this process
        self.loads = 0          # of which mapped / loaded anew (cache misses)
        self.hits = 0           # of which found in the cache

    def info(self) -> dict:
        """Counters of this process: unpickles, loads (files mapped or
        images loaded), hits, and models held."""
        with self._lock:
            return dict(unpickles=self.unpickles, loads=self.loads,
                        hits=self.hits, held=len(self._alive),
                        pid=os.getpid())

    def clear(self) -> None:
        """Forgets every cached model and zeroes the counters."""
        with self._lock:
            self._lru.clear()
            self._alive = weakref.WeakValueDictionary()
            self.unpickles = self.loads = self.hits = 0

    def _get(self, key: tuple) -> Optional[Model]:
        m = self._lru.get(key)
        if m is None:
            m = self._alive.get(key)
        return m

    def _put(self, key: tuple, m: Model) -> None:
        self._lru[key] = m
        self._lru.move_to_end(key)
        self._alive[key] = m
        while len(self._lru) > max(int(self.maxsize), 0):
            self._lru.popitem(last=False)

    def unpickle(self, state: dict) -> Model:
        if not isinstance(state, dict) or state.get("v") != 1:
            raise GruliteError("cannot unpickle this grulite model: it was pickled by an "
                               "incompatible grulite version")
        with self._lock:
            self.unpickles += 1
        if "path" in state:
            return self._from_file(state)
        return self._from_image(state)

    def _finish(self, core: _core.CModel, state: dict) -> Model:
        m = Model(core, num_threads=state.get("num_threads"))
        if state.get("isa"):
            m.isa = state["isa"]
        return m

    def _from_file(self, state: dict) -> Model:
        path, expected = state["path"], int(state["checksum"])
        here = platform.node() or "this host"
        missing = (f"model file {path!r} of a pickled grulite model does not exist on "
                   f"{here}: unpickling maps the file by its path, so it must be readable "
                   "there (or pickle grulite.from_bytes(model.to_bytes()) to send the "
                   "weights instead)")
        real = os.path.realpath(path)
        try:
            sig = _file_signature(os.stat(real))
        except FileNotFoundError:
            raise FileNotFoundError(missing) from None
        key = ("file", real, expected, state.get("num_threads"), state.get("isa"))
        with self._lock:
            m = self._get(key)
            if m is not None and self._sig.get(m) == sig:
                self.hits += 1
                self._put(key, m)
                return m
            try:
                core = _core.load_path(path)
            except FileNotFoundError:
                raise FileNotFoundError(missing) from None
            except GruliteError as e:
                raise GruliteError(f"model file {path!r} changed since it was pickled "
                                   f"(checksum {expected:#010x} then) and is no longer a valid "
                                   f"model: {e}") from None
            if core.checksum != expected:
                raise GruliteError(f"model file {path!r} changed since it was pickled: "
                                   f"checksum {core.checksum:#010x}, expected {expected:#010x}")
            m = self._finish(core, state)
            self.loads += 1
            self._sig[m] = sig
            self._put(key, m)
            return m

    def _from_image(self, state: dict) -> Model:
        image, expected = state["image"], int(state["checksum"])
        digest = hashlib.blake2b(image, digest_size=16).digest()
        key = ("image", expected, digest, state.get("num_threads"), state.get("isa"))
        with self._lock:
            m = self._get(key)
            if m is not None:
                self.hits += 1
                self._put(key, m)
                return m
            core = _core.load_bytes(image)
            if core.checksum != expected:
                raise GruliteError(f"pickled grulite model image has checksum "
                                   f"{core.checksum:#010x}, expected {expected:#010x}")
            m = self._finish(core, state)
            self.loads += 1
            self._put(key, m)
            return m


model_cache = ModelCache()


def _unpickle_model(state: dict) -> Model:
    """What a pickled Model calls to come back (see Model.__reduce__)."""
    return model_cache.unpickle(state)


def load(path: Union[str, os.PathLike], *, num_threads: Optional[int] = None) -> Model:
    """Loads a .grl model file by memory map (no copy), after validating it.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    GruliteError
        The file is not a valid grulite model (the message says which check
        failed: magic, version, truncation, checksum, tables, shapes).
    """
    return Model(_core.load_path(os.fspath(path)), num_threads=num_threads)


def from_bytes(data: Union[bytes, bytearray, memoryview], *,
               num_threads: Optional[int] = None) -> Model:
    """Loads a .grl image held in memory (copied)."""
    return Model(_core.load_bytes(data), num_threads=num_threads)


def from_state_dict(mapping: Mapping[str, Any], prefix: Optional[str] = None,
                    reset_after: Union[bool, Sequence[bool]] = True, head: HeadSpec = None,
                    *, batch_first: bool = True, dtype: str = "float32",
                    head_from: str = "output", num_threads: Optional[int] = None) -> Model:
    """Builds a model from a PyTorch ``state_dict`` (or a checkpoint holding one).

    Parameters
    ----------
    mapping : Mapping[str, array_like]
        Tensor names to arrays (numpy arrays or torch tensors), e.g.
        ``model.state_dict()`` or ``np.load("model.npz")``.
    prefix : str, optional
        Module path of the GRU (``"gru"``, ``"encoder.rnn"``); found
        automatically when the mapping holds a single GRU.
    reset_after : bool or sequence of bool
        True for PyTorch's GRU; False for the original formulation (Keras
        ``reset_after=False``, ONNX ``linear_before_reset=0``).  One value
        per layer is accepted.
    head : str or sequence, optional
        Linear layers applied to the last step, with activations:
        ``[("fc", "softmax")]`` or ``"fc:relu,out:softmax"``.
    batch_first : bool
        Default layout of inputs (as the nn.GRU's ``batch_first``).
    dtype : {"float32", "float16", "int8"}
        Storage type of the GRU weights (see :meth:`Model.save`).
    head_from : {"output", "state"}
        What the head reads: the top layer's output at each sequence's last
        valid step (``fc(y[:, -1])``), or its final states with directions
        concatenated (``fc(torch.cat([h_n[-2], h_n[-1]], 1))``); they differ
        only for backward directions.
    num_threads : int, optional
        Threads for whole-sequence calls (see :attr:`Model.num_threads`).
    """
    image, _ = build_image(mapping, prefix, reset_after, head, batch_first, dtype=dtype,
                           head_from=head_from)
    return from_bytes(image, num_threads=num_threads)


def from_npz(path: Union[str, os.PathLike], prefix: Optional[str] = None,
             reset_after: Union[bool, Sequence[bool]] = True, head: HeadSpec = None,
             *, batch_first: bool = True, dtype: str = "float32",
             head_from: str = "output", num_threads: Optional[int] = None) -> Model:
    """Builds a model from a state_dict saved with ``np.savez``.

    ``np.savez("model.npz", **{k: v.numpy() for k, v in model.state_dict().items()})``
    makes such a file.  Parameters are those of :func:`from_state_dict`.
    """
    image, _ = npz_image(path, prefix, reset_after, head, batch_first, dtype=dtype,
                         head_from=head_from)
    return from_bytes(image, num_threads=num_threads)


def npz_image(path: Union[str, os.PathLike], prefix: Optional[str] = None,
              reset_after: Union[bool, Sequence[bool]] = True, head: HeadSpec = None,
              batch_first: bool = True, dtype: str = "float32",
              head_from: str = "output") -> tuple:
    """The .grl image and summary for an ``np.savez``'d state_dict.

    The archive is read in two passes: the .npy header of every member
    first (its shape and dtype, checked against the member's size), then,
    once the GRU and head shapes are checked on those headers, only the
    tensors the model uses.  Other members (an optimizer state, say) are
    never decompressed.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such file: {p!r}")
    with _NpzArchive(p) as npz:
        # Zero-stride stand-ins carry each member's shape and dtype, no data.
        arrays = npz.stand_ins()
        for key in used_tensors(arrays, prefix, reset_after, head):
            arrays[key] = npz.read(key)
    return build_image(arrays, prefix, reset_after, head, batch_first,
                       source=os.path.basename(p), dtype=dtype, head_from=head_from)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")      # what np.load takes for an .npz


class _Counted:
    """A file object that counts the bytes read through it."""

    def __init__(self, f: Any):
        self.f, self.n = f, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.n += len(data)
        return data


class _NpzArchive:
    """The members of an ``np.savez`` archive, read on demand.

    Opening reads every member's .npy header, never its data: the shape
    and dtype must account for exactly the member's declared (uncompressed)
    size, and object arrays are refused (no pickles).  ``read(key)`` then
    reads one array, whose size is thus known before it is inflated.
    Members that are not .npy files (np.load gives their raw bytes) are not
    read at all.
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

    def stand_ins(self) -> dict[str, np.ndarray]:
        """A state_dict of stand-ins for the members, with no memory behind
        them: zero-stride views of each numeric member's shape and dtype; an
        empty array of its dtype for any other member (which is refused if
        used, whatever its shape); empty bytes for a non-.npy member."""
        out: dict[str, np.ndarray] = {}
        for key, (_, shape, dtype) in self._members.items():
            if shape is None or dtype is None:
                out[key] = np.asarray(b"")
            elif dtype.kind in "fiu":
                out[key] = np.broadcast_to(np.zeros((), dtype), shape)
            else:
                out[key] = np.empty(0, dtype)
        return out

    def read(self, key: str) -> np.ndarray:
        """The array of one member, read in full; its shape and dtype are
        those its header showed when the archive was opened."""
        assert self._zip is not None
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
