"""The Python-facing model: argument handling around the C core."""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from grulite import _core
from grulite._errors import GruliteError

__all__ = ["Model", "ModelConfig", "LayerConfig", "DenseConfig", "load", "from_bytes"]

State = Union[np.ndarray, tuple]
_UNREAD = object()      # Model._mask before the metadata is looked at


def _np(value: Any) -> Any:
    """numpy view of a torch tensor (detached, on the CPU); anything else as is."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value


def _batch_steps(xa: np.ndarray, bf: bool) -> tuple:
    """(B, T) of an input laid out (B, T, ...) or (T, B, ...), checked: at
    least one of each, and within C's int32."""
    B, T = (xa.shape[0], xa.shape[1]) if bf else (xa.shape[1], xa.shape[0])
    if T < 1 or B < 1:
        raise GruliteError(f"x needs at least one sequence and one step; got batch={B}, steps={T}")
    if B > _core.MAX_INT32 or T > _core.MAX_INT32:
        raise GruliteError(f"x has batch={B}, steps={T}; each must be at most 2**31 - 1")
    return B, T


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
    projected: bool = False       # an embedding folded into it: no W_ih of its own
    h0: bool = False              # stores a learned initial state, used when no h0 is given
    # Per direction ((f, alpha, beta), (g, alpha, beta)), the gate and candidate
    # activations; None: sigmoid and tanh.  clip: ONNX's bound on every
    # pre-activation, or None.  (docs/variants.md)
    activations: Optional[tuple] = None
    clip: Optional[float] = None
    # A two-direction layer's output: its directions concatenated ("concat",
    # D*H features) or merged feature by feature ("sum", "mul", "ave": H).
    merge: str = "concat"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features the layer outputs: D*H, or H when its directions merge."""
        return self.hidden_size if self.merge != "concat" else self.num_directions * self.hidden_size


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
    embedding: Optional[dict] = None   # vocab_size, width, dtype, folded: token ids in

    @property
    def vocab_size(self) -> Optional[int]:
        """Token ids the embedding takes, or None for float features."""
        return self.embedding["vocab_size"] if self.embedding else None

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
        return self.layers[-1].output_size

    @property
    def head_size(self) -> Optional[int]:
        return self.head[-1].out_features if self.head else None

    def to_dict(self) -> dict:
        return dict(input_size=self.input_size, batch_first=self.batch_first, dtype=self.dtype,
                    layers=[l.__dict__.copy() for l in self.layers],
                    head=[d.__dict__.copy() for d in self.head],
                    embedding=None if self.embedding is None else dict(self.embedding))


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
                                   reverse=d["reverse"], projected=d["projected"], h0=d["h0"],
                                   activations=d["activations"], clip=d["clip"],
                                   merge=d["merge"])
                       for d in core.layers())
        head = tuple(DenseConfig(**d) for d in core.head())
        self.config = ModelConfig(input_size=core.input_size, layers=layers, head=head,
                                  batch_first=core.batch_first, dtype=layers[0].dtype,
                                  head_from="state" if core.head_from_state else "output",
                                  embedding=core.embedding())
        self._input_size = core.input_size
        uniform = self.config.uniform
        self._state_shape = ((sum(l.num_directions for l in layers), layers[0].hidden_size)
                             if uniform else None)      # (L*D, H) when states are one array
        self._local = threading.local()
        self._mask: Any = _UNREAD         # mask_value, read from the metadata on first use
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
        import json

        raw = self._core.metadata()
        try:
            value = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, ValueError):
            return {"raw": raw.decode("utf-8", "replace")}
        return value if isinstance(value, dict) else {"value": value}

    @property
    def mask_value(self) -> Optional[float]:
        """The value of Keras' ``Masking(mask_value=...)`` imported with the
        model, or None.  With one, a call given no ``lengths`` computes them
        from x (see :meth:`mask_lengths`); a stream reads every step it is
        given."""
        if self._mask is _UNREAD:
            raw = self._core.metadata()
            v = self.metadata.get("mask_value") if raw and b'"mask_value"' in raw else None
            self._mask = (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                          and not np.isnan(v) else None)
        return self._mask

    def mask_lengths(self, x: Any, *, batch_first: Optional[bool] = None) -> Optional[np.ndarray]:
        """The lengths a call on ``x`` without ``lengths=`` uses: None for a
        model without a :attr:`mask_value`, else one int32 per row (a scalar
        for unbatched x).

        A step is masked when every feature equals the mask value (Keras'
        rule, compared in float32); a row's length is its steps up to the
        last unmasked one.  grulite runs trailing padding only: a masked
        step before an unmasked one, or a row masked at every step (Keras
        gives it its initial state), raises a GruliteError naming the row.
        """
        if self.mask_value is None or self.config.embedding:
            return None
        _, _, unbatched, _, _, len_a = self._prepare(x, None, batch_first)
        return None if len_a is None else len_a[0] if unbatched else len_a

    def _masked(self, xa: np.ndarray, bf: bool, first_row: int = 0) -> np.ndarray:
        """Lengths from the mask value of float32 x laid out (B, T, I) or
        (T, B, I), checked; rows are named from ``first_row``."""
        mv = np.float32(self.mask_value)
        masked = (xa == mv).all(axis=-1)
        if not bf:
            masked = masked.T
        B, T = masked.shape
        valid = ~masked
        empty = ~valid.any(axis=1)
        if empty.any():
            b = int(np.flatnonzero(empty)[0])
            raise GruliteError(f"x row {first_row + b} is masked at every step (each feature "
                               f"equals the mask value {float(mv):g}): Keras gives such a row its "
                               "initial state, grulite needs at least one step per row; leave "
                               "the row out or pass lengths=")
        lengths = T - np.argmax(valid[:, ::-1], axis=1)
        gap = masked & (np.arange(T) < lengths[:, None])
        if gap.any():
            b, t = (int(i) for i in np.argwhere(gap)[0])
            nxt = t + int(np.argmax(valid[b, t:]))
            raise GruliteError(f"x row {first_row + b}: step {t} is masked (each feature equals "
                               f"the mask value {float(mv):g}) but step {nxt} after it is not; "
                               "grulite takes trailing padding only (the masked steps of a row "
                               "all at its end), where Keras skips masked steps anywhere; pass "
                               "lengths= to run such rows as they are")
        return np.ascontiguousarray(lengths, dtype=np.int32)

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
        if self.config.embedding:
            return self._prepare_tokens(x, lengths, bf)
        masked = lengths is None and self.mask_value is not None
        if (lengths is None and not masked and type(x) is np.ndarray and x.dtype == np.float32
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
        B, T = _batch_steps(xa, bf)                        # checked before x is copied
        xa = np.require(xa, np.float32, ["C", "A"])       # contiguous, aligned, native
        if masked:
            return xa, bf, unbatched, B, T, self._masked(xa, bf)
        return xa, bf, unbatched, B, T, self._lengths(lengths, B, T, unbatched)

    def _lengths(self, lengths: Any, B: int, T: int, unbatched: bool) -> Optional[np.ndarray]:
        if lengths is None:
            return None
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
        return np.require(la, np.int32, ["C", "A"])

    def _prepare_tokens(self, x: Any, lengths: Any, bf: bool):
        """Token ids: (B, T) (or (T, B) time-major), or unbatched (T,)."""
        V = int(self.config.vocab_size or 0)
        xa = _core.token_array(_np(x), "x", V)
        if xa.ndim == 1:
            unbatched = True
            xa = xa[None] if bf else xa[:, None]
        elif xa.ndim == 2:
            unbatched = False
        else:
            layout = "(batch, steps)" if bf else "(steps, batch)"
            raise GruliteError(f"this model reads token ids (an embedding of {V} tokens): x must "
                               f"have shape {layout} or (steps,); got shape {xa.shape}")
        B, T = _batch_steps(xa, bf)
        xa = np.ascontiguousarray(xa)
        return xa, bf, unbatched, B, T, self._lengths(lengths, B, T, unbatched)

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
            0, ``h_n`` is taken at each sequence's last valid step.  When
            omitted, a model with a :attr:`mask_value` (Keras' Masking)
            computes them from x (:meth:`mask_lengths`); otherwise every
            step is valid.
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
        ``h0`` is the initial state and ``lengths`` the valid steps (from
        the :attr:`mask_value` when omitted), as for ``model(x, h0,
        lengths)``.
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

    @property
    def vocab(self) -> Optional[list]:
        """The tokens stored with the model (``grulite convert --vocab``,
        ``vocab=`` of the ``from_*`` functions), id order; None without."""
        v = self.metadata.get("vocab")
        return list(v) if isinstance(v, list) else None

    def _needs_generator(self) -> int:
        c = self.config
        if not c.embedding:
            raise GruliteError("generate needs a model that reads token ids (an embedding as its "
                               "first layer); this one reads float features")
        V = c.embedding["vocab_size"]
        if not c.head or c.head_size != V:
            raise GruliteError(f"generate needs a head giving one score per token ({V}); this "
                               f"model's head gives {c.head_size or 'nothing'} (convert with "
                               f"head=[('fc', 'none')] or similar)")
        if c.bidirectional or any(l.reverse for l in c.layers):
            raise GruliteError("generate needs a forward-only model; this one has a "
                               "bidirectional or reverse layer")
        return V

    def generate(self, prompt: Any = None, h0: Any = None, start: Any = None,
                 stop: Optional[int] = None, max_steps: int = 100, strategy: str = "greedy",
                 temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, seed: Any = None) -> list:
        """Generates token ids, one row per prompt, in C.

        Each row reads its prompt (from ``h0``, or zeros), then repeatedly
        picks a token from the head's scores at its last step and reads it,
        until it picks ``stop`` (left out of the result) or has
        ``max_steps`` tokens.  Finished rows leave the batch.

        Parameters
        ----------
        prompt : sequence of int, or list of sequences of int
            One prompt, or several of different lengths (one row each).
        h0 : array_like, optional
            Initial state, as for ``model(x, h0)`` (the encoder's ``h_n``
            for a decoder).
        start : int or sequence of int, optional
            Instead of a prompt: the one token each row starts from (with
            ``h0``, the encoder -> decoder case; the batch is h0's).
        stop : int, optional
            The token that ends a row.
        strategy : {"greedy", "sample"}
            greedy: the highest score (the lowest id on ties); sample: a
            draw from softmax(logits / temperature), restricted to the
            ``top_k`` most likely tokens and then to the fewest whose
            probabilities reach ``top_p``.  A head ending in softmax is
            sampled from its logits; one ending in another activation
            cannot be sampled from.
        seed : int or sequence of int, optional
            Row b's draws depend on (seed, b) only: the same tokens for
            any thread count, and whichever other rows run.  One seed per
            row: row b draws as a lone row with seed ``seed[b]`` would, in
            any batch.  None: a fresh random seed.

        Returns
        -------
        list of int64 arrays, one per row.
        """
        V = self._needs_generator()
        if strategy not in ("greedy", "sample"):
            raise GruliteError(f"strategy must be 'greedy' or 'sample'; got {strategy!r}")
        sample = strategy == "sample"
        if not sample and (top_k is not None or top_p is not None or temperature != 1.0):
            raise GruliteError("temperature, top_k and top_p apply to strategy='sample'")
        try:
            with np.errstate(over="ignore"):
                t = float(np.float32(temperature))    # what C gets (inf when too large)
        except (TypeError, ValueError, OverflowError):
            t = float("nan")
        if not (np.isfinite(t) and t > 0):
            raise GruliteError(f"temperature must be a number > 0 that float32 holds "
                               f"(about 1e-38 to 3e38); got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                                  or top_k < 1):
            raise GruliteError(f"top_k must be an int >= 1 (or None for all); got {top_k!r}")
        try:
            with np.errstate(over="ignore"):
                p = 1.0 if top_p is None else float(np.float32(top_p))
        except (TypeError, ValueError, OverflowError):
            p = float("nan")
        if not (0.0 < p <= 1.0):
            raise GruliteError(f"top_p must be in (0, 1] (or None); got {top_p!r}")
        if sample and self.config.head[-1].activation not in ("none", "softmax"):
            raise GruliteError(f"sampling needs scores a softmax can take: the head's last layer "
                               f"ends in {self.config.head[-1].activation!r} (only 'none' or "
                               f"'softmax' can be sampled from); use strategy='greedy'")
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) \
                or not 0 <= max_steps <= _core.MAX_INT32:
            raise GruliteError(f"max_steps must be an int in [0, 2**31 - 1]; got {max_steps!r}")
        stop_id = -1
        if stop is not None:
            if isinstance(stop, bool) or not isinstance(stop, (int, np.integer)) \
                    or not 0 <= stop < V:
                raise GruliteError(f"stop must be a token id in [0, {V}); got {stop!r}")
            stop_id = int(stop)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if sample else 0
        elif isinstance(seed, (list, tuple, np.ndarray)):
            sa = _core.as_array(seed, "seed")
            if sa.ndim != 1 or sa.dtype.kind not in "iu" or (sa < 0).any():
                raise GruliteError("seed must be an int, or one int >= 0 per row")
            seed = sa.astype(np.uint64)
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise GruliteError(f"seed must be an int (or one per row); got {seed!r}")

        if (prompt is None) == (start is None):
            raise GruliteError("give a prompt (token sequences) or a start token (with h0), "
                               "one of the two")
        unbatched = False
        if prompt is not None:
            rows = self._prompt_rows(prompt, V)
        else:
            B = None
            if h0 is not None:
                ha = _core.as_array(_np(h0 if not isinstance(h0, (tuple, list)) else h0[0]), "h0")
                B = ha.shape[1] if ha.ndim == 3 else None
                unbatched = ha.ndim == 2           # model(x_1d)'s h_n: one row
            st = _core.token_array(_np(start), "start", V)
            if st.ndim == 0:
                st = np.full(B or 1, int(st), dtype=np.int32)
            elif unbatched:
                raise GruliteError("an unbatched h0 (one row) takes one start token")
            if st.ndim != 1 or (B is not None and st.shape[0] != B):
                raise GruliteError(f"start must be one token id or one per row"
                                   f"{f' ({B}, the batch of h0)' if B else ''}; got shape {st.shape}")
            rows = [st[i:i + 1] for i in range(st.shape[0])]
        B = len(rows)
        if isinstance(seed, np.ndarray) and seed.shape != (B,):
            raise GruliteError(f"seed has {seed.shape[0]} entries; one per row ({B}) or one int")
        T = max(len(r) for r in rows)
        tokens = np.zeros((B, T), dtype=np.int32)
        lengths = np.empty(B, dtype=np.int32)
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = r
            lengths[i] = len(r)
        h0f = None if h0 is None else self._join_state(h0, B, unbatched and B == 1)
        toks, counts = self._core.generate(self._workspace(), tokens,
                                           None if (lengths == T).all() else lengths, h0f,
                                           stop_id, int(max_steps), sample, t,
                                           0 if top_k is None else min(int(top_k), V), p,
                                           seed if isinstance(seed, np.ndarray) else int(seed))
        return [toks[i, :counts[i]].astype(np.int64) for i in range(B)]

    @staticmethod
    def _prompt_rows(prompt: Any, V: int) -> list:
        """A prompt as a list of int32 rows: one sequence of ints, a list of
        them, or a 2-D integer array (one row each)."""
        if isinstance(prompt, np.ndarray) or hasattr(prompt, "detach"):
            a = _core.token_array(_np(prompt), "prompt", V)
            rows = [a] if a.ndim == 1 else list(a) if a.ndim == 2 else None
            if rows is None:
                raise GruliteError(f"prompt must be 1-D or 2-D; got shape {a.shape}")
        elif isinstance(prompt, (list, tuple)) and prompt and \
                all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in prompt):
            rows = [_core.token_array(np.asarray(prompt), "prompt", V)]
        elif isinstance(prompt, (list, tuple)) and prompt:
            for i, r in enumerate(prompt):
                if hasattr(r, "__len__") and len(r) == 0:
                    raise GruliteError(f"prompt row {i} is empty; every row needs at least one "
                                       "token (a start token)")
            rows = [_core.token_array(_np(r), f"prompt[{i}]", V) for i, r in enumerate(prompt)]
        else:
            raise GruliteError("prompt must be a sequence of token ids or a non-empty list of them")
        for i, r in enumerate(rows):
            if r.ndim != 1 or r.shape[0] < 1:
                raise GruliteError(f"prompt row {i} must be a non-empty 1-D sequence of token ids; "
                                   f"got shape {r.shape}")
            bad = (r < 0) | (r >= V)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise GruliteError(f"token id {int(r[j])} at prompt row {i}, step {j} is outside "
                                   f"the vocabulary [0, {V})")
        return rows

    def forecast(self, x: Any, horizon: int, lengths: Any = None, *, h0: Any = None,
                 batch_first: Optional[bool] = None) -> np.ndarray:
        """Forecasts ``horizon`` steps ahead, in C.

        Runs over the window ``x`` (as ``model(x, lengths=...)``), takes the
        head's output at each row's last valid step as the first
        prediction, then feeds each prediction back as the next input.
        The head's size must equal the input size.  Returns ``(batch,
        horizon, head_size)`` (``(horizon, head_size)`` for unbatched x).
        """
        c = self.config
        if c.embedding:
            raise GruliteError("forecast feeds predictions back as float inputs; this model reads "
                               "token ids (use generate)")
        if not c.head:
            raise GruliteError("forecast needs a head whose output is the next input; this model "
                               "has none")
        if c.head_size != c.input_size:
            raise GruliteError(f"forecast feeds each prediction back as the next input: the head "
                               f"gives {c.head_size} values, the model reads input_size="
                               f"{c.input_size}")
        if c.bidirectional or any(l.reverse for l in c.layers):
            raise GruliteError("forecast needs a forward-only model; this one has a "
                               "bidirectional or reverse layer")
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) \
                or not 1 <= horizon <= _core.MAX_INT32:
            raise GruliteError(f"horizon must be an int >= 1; got {horizon!r}")
        xa, bf, unbatched, B, T, len_a = self._prepare(x, lengths, batch_first)
        h0f = None if h0 is None else self._join_state(h0, B, unbatched)
        out, _ = self._core.forecast(self._workspace(), xa, bf, len_a, h0f, int(horizon), False)
        return out[0] if unbatched else out

    def stream(self, batch_size: int = 1) -> _core.Stream:
        """A streaming state for ``batch_size`` parallel sequences.

        ``s.step(x_t)`` takes ``(batch_size, input_size)`` (or a chunk
        ``(batch_size, steps, input_size)``; token ids ``(batch_size,)`` or
        ``(batch_size, steps)`` for a model with an embedding) and returns
        the top layer's output, or the head's for a model with a head;
        ``s.state`` gets and sets the hidden state in the form of ``h0``;
        ``s.reset()`` zeros it.  For servers, ``s.step(x, rows=idx)``
        advances only the listed rows, ``s.reset(rows=idx)`` zeros them,
        ``s.get_state(rows=idx)`` / ``s.set_state(h, rows=idx)`` read and
        write them.  Unidirectional models only.
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
        dtype : {None, "float32", "float16", "bfloat16", "int8"}
            Storage type of the GRU weights: None keeps the model's own.
            float16 and bfloat16 (float32's range, 8-bit mantissa; the
            bits of a bfloat16 checkpoint kept exactly) halve the file,
            int8 (one float32 scale per output row) quarters it;
            activations stay float32 and the head keeps float32 weights.  Convert from a float32 model: converting an
            already-rounded model rounds again.
        """
        core = self._core
        if dtype is not None and str(getattr(dtype, "__name__", dtype)) != self.config.dtype:
            core = _core.load_bytes(core.convert(dtype))
        core.save(path)            # the C writer: a temporary file, then an atomic rename

    def save_c(self, path: Union[str, os.PathLike], name: str = "grulite_model",
               dtype: Optional[str] = None) -> None:
        """Writes the model as C source: ``const unsigned char NAME[]``
        (64-byte aligned) and ``const size_t NAME_size`` holding the .grl
        image, for a C program that links libgrulite and loads it with
        ``grulite_model_load_buffer(NAME, NAME_size, 0, ...)`` (no file
        system needed).  ``dtype`` as for :meth:`save` (int8 for flash)."""
        from grulite._emit_c import check_c_name, emit_c

        check_c_name(name)
        core = self._core
        if dtype is not None and str(getattr(dtype, "__name__", dtype)) != self.config.dtype:
            core = _core.load_bytes(core.convert(dtype))
        c = Model(core).config
        kinds = ", ".join(f"GRU {l.input_size}->{l.hidden_size}"
                          f"{' x2' if l.bidirectional else ''}" for l in c.layers)
        if c.embedding:
            kinds = f"embedding {c.embedding['vocab_size']} tokens, " + kinds
        if c.head:
            kinds += ", head " + ", ".join(f"{d.out_features} {d.activation}" for d in c.head)
        emit_c(core.image(), path, name,
               f"{kinds}; weights {c.dtype}; checksum {core.checksum:08x}")

    def astype(self, dtype: str) -> Model:
        """A copy of the model with its GRU weights stored as ``dtype``
        ("float32", "float16", "bfloat16", "int8"), in memory."""
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
        if isa != _core.default_isa():
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
        import platform

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
        import hashlib

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
