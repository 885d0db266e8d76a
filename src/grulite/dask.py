"""Batch inference over Dask arrays, on one machine or a cluster.

    import dask.array as da
    import grulite, grulite.dask

    m = grulite.load("model.grl")
    x = da.from_zarr("sequences.zarr")              # (N, T, I), chunked along N
    probs = grulite.dask.predict(m, x)              # dask array (N, head_size)
    probs.to_zarr("probs.zarr")

Needs Dask (``pip install "grulite[dask]"``); ``dask.distributed`` for a
cluster.  The model travels to each worker process once, not with every
task: the graph holds one model node that every block depends on, so a
worker fetches it once and keeps it; and a model loaded from a ``.grl``
file pickles as its path and checksum (a few hundred bytes; each worker
maps the file once, so the file must be readable at the same path there),
a model built in memory as its image.
"""
from __future__ import annotations

import numbers
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
except ImportError as e:  # pragma: no cover - exercised without dask installed
    raise ImportError(
        "grulite.dask needs Dask: pip install \"grulite[dask]\" "
        "(or pip install \"dask[array]\", plus \"dask[distributed]\" for a cluster)") from e

from grulite._errors import GruliteError
from grulite._model import Model, model_cache

if TYPE_CHECKING:
    from dask.delayed import Delayed

__all__ = ["predict", "OUTPUTS", "cache_info", "cache_clear"]

#: The outputs ``predict`` can compute, and their shapes.
OUTPUTS = {
    "head": "(N, head_size): the head on each sequence's last valid step (Model.predict)",
    "head_steps": "(N, T, head_size): the head on every step (Model.predict(all_steps=True))",
    "y": "(N, T, D*H): the top layer's outputs (y of model(x)), 0 past a length",
    "h_n": "(L*D, N, H): the final states (h_n of model(x)), as torch.nn.GRU",
}


def cache_info() -> dict:
    """This process's model cache counters (``unpickles``, ``loads``,
    ``hits``, ``held``, ``pid``).  On a cluster:
    ``client.run(grulite.dask.cache_info)`` gives one per worker."""
    return model_cache.info()


def cache_clear() -> None:
    """Empties this process's model cache and zeroes its counters."""
    model_cache.clear()


class _ModelRef:
    """The graph's model node.

    In the process that built the graph it holds the Model itself (the
    threaded scheduler uses it as is); pickled, it is only the model's
    pickle state (path + checksum, or the image), resolved into a Model on
    first use through the per-process model cache.  The scheduler therefore
    never loads the model, and each worker resolves it once: all the tasks
    of a worker share the one node they depend on.
    """

    __slots__ = ("state", "_model", "_lock", "__weakref__")

    def __init__(self, model: Optional[Model], state: dict):
        self.state = state
        self._model = model
        self._lock = threading.Lock()

    def __reduce__(self):
        return (_ModelRef, (None, self.state))

    def get(self) -> Model:
        m = self._model
        if m is None:
            with self._lock:
                if self._model is None:
                    self._model = model_cache.unpickle(self.state)
                m = self._model
        return m

    def __repr__(self) -> str:
        what = self.state.get("path") or f"{len(self.state.get('image', b''))}-byte image"
        return f"<grulite model reference {what}, checksum {self.state.get('checksum', 0):#010x}>"

    def __sizeof__(self) -> int:             # what dask reports as the node's size
        return 64 + len(self.state.get("image", b""))


def _normalize_outputs(model: Model, outputs: Union[None, str, Sequence[str]]) -> tuple:
    single = outputs is None or isinstance(outputs, str)
    if outputs is None:
        names: tuple = ("head" if model.config.head else "y",)
    elif isinstance(outputs, str):
        names = (outputs,)
    else:
        names = tuple(outputs)
        if not names:
            raise GruliteError("outputs is empty; name one or more of " + ", ".join(OUTPUTS))
    for n in names:
        if n not in OUTPUTS:
            raise GruliteError(f"unknown output {n!r}; choose from "
                               + "; ".join(f"{k} {v}" for k, v in OUTPUTS.items()))
        if n.startswith("head") and not model.config.head:
            raise GruliteError(f"output {n!r} needs a model with a head; this one has none "
                               "(ask for outputs='y' or 'h_n')")
        if n == "h_n" and not model.config.uniform:
            raise GruliteError("output 'h_n' needs layers of one hidden size and direction "
                               "count (states are then one (L*D, N, H) array); this model's "
                               "layers differ: ask for 'y' or 'head'")
    if len(set(names)) != len(names):
        raise GruliteError(f"outputs {names!r} names one output twice")
    return names, single


def _empty(model: Model, name: str, n: int, T: int) -> np.ndarray:
    c = model.config
    if name == "head":
        return np.zeros((n, c.head_size or 0), np.float32)   # (asked for only when there is a head)
    if name == "head_steps":
        return np.zeros((n, T, c.head_size or 0), np.float32)
    if name == "y":
        return np.zeros((n, T, c.output_size), np.float32)
    LD = sum(l.num_directions for l in c.layers)
    return np.zeros((LD, n, c.layers[0].hidden_size), np.float32)


def _run(model: Model, names: tuple, x: np.ndarray, lengths: Optional[np.ndarray]) -> list:
    out: dict = {}
    if "y" in names or "h_n" in names:
        out["y"], out["h_n"] = model(x, lengths=lengths, batch_first=True)
    if "head" in names:
        out["head"] = model.predict(x, lengths, batch_first=True)
    if "head_steps" in names:
        out["head_steps"] = model.predict(x, lengths, all_steps=True, batch_first=True)
    return [out[n] for n in names]


def _block(x: np.ndarray, lengths: Optional[np.ndarray], ref: _ModelRef, names: tuple,
           batch_size: Optional[int]) -> tuple:
    """One block of rows: a tuple with one array per output name."""
    model = ref.get()
    n, T = x.shape[0], x.shape[1]
    if lengths is not None:
        lengths = np.asarray(lengths)
    if n == 0:
        return tuple(_empty(model, name, 0, T) for name in names)
    step = n if not batch_size else int(batch_size)
    if step >= n:
        return tuple(_run(model, names, x, lengths))
    parts = [_run(model, names, x[s:s + step], None if lengths is None else lengths[s:s + step])
             for s in range(0, n, step)]
    return tuple(np.concatenate([p[i] for p in parts], axis=1 if name == "h_n" else 0)
                 for i, name in enumerate(names))


def _block_one(x, lengths, ref, names, batch_size):
    return _block(x, lengths, ref, names, batch_size)[0]


def _pick(blocks: Any, i: int) -> np.ndarray:
    # blocks: the (1-D, object) block holding one tuple of outputs
    return blocks[0][i] if isinstance(blocks, np.ndarray) else blocks[i]


def _block_many(x, lengths, ref, names, batch_size):
    out = np.empty((1,), dtype=object)
    out[0] = _block(x, lengths, ref, names, batch_size)
    return out


def _layout(model: Model, name: str, T: int) -> tuple:
    """(output index string, new axes) of an output, rows on index 'n'."""
    c = model.config
    if name == "head":
        return "nj", {"j": c.head_size}
    if name == "head_steps":
        return "ntj", {"j": c.head_size}
    if name == "y":
        return "ntj", {"j": c.output_size}
    LD = sum(l.num_directions for l in c.layers)
    return "lnh", {"l": LD, "h": c.layers[0].hidden_size}


def model_node(model: Model) -> Delayed:
    """The model as one dask graph node (a ``Delayed``) for ``map_blocks`` /
    ``blockwise`` / ``delayed`` code of your own: pass it as an argument
    and call ``.get()`` on what the task receives to have the Model.  Every
    task that depends on it shares the one node, so a worker fetches and
    loads the model once."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be a grulite.Model; got {type(model).__name__}")
    state = model._pickle_state()
    ref = _ModelRef(model, state)
    return dask.delayed(ref, name="grulite-model-" + tokenize(state), pure=True, traverse=False)


def predict(model: Model, x: Any, lengths: Any = None, *, batch_size: Optional[int] = None,
            outputs: Union[None, str, Sequence[str]] = None) -> Any:
    """Runs ``model`` over a dask array of sequences, block by block.

    Parameters
    ----------
    model : grulite.Model
        Loaded from a ``.grl`` file (``grulite.load``: workers map the
        file by its path, which must be readable there) or built in memory
        (its image is sent, once per worker).
    x : dask.array.Array (or array_like), shape (N, T, I)
        Sequences, batch first whatever the model's default layout, chunked
        along N.  Chunks along T and I are merged (every block needs whole
        sequences).  float32 (float64 is converted per block).
    lengths : dask array or array_like of int, shape (N,), optional
        Valid steps of each sequence (``pack_padded_sequence`` semantics),
        rechunked to match x's row chunks.
    batch_size : int, optional
        Rows per model call inside a task (bounds the memory of one call on
        big blocks; results are the same for any value).  Default: a whole
        block per call.
    outputs : str or sequence of str, optional
        ``"head"`` (the default for models with a head): (N, head_size);
        ``"head_steps"``: (N, T, head_size); ``"y"`` (the default without a
        head): (N, T, D*H); ``"h_n"``: (L*D, N, H).  A sequence of names
        returns a tuple of arrays computed together (``y`` and ``h_n`` by
        one model call).

    Returns
    -------
    dask.array.Array, float32 (or a tuple of them for several outputs),
    chunked along N as x is.  Nothing runs until you compute it; it runs on
    the current scheduler (threads, processes or ``dask.distributed``).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a grulite.Model; got {type(model).__name__}")
    names, single = _normalize_outputs(model, outputs)
    if batch_size is not None and (isinstance(batch_size, bool) or
                                   not isinstance(batch_size, numbers.Integral) or batch_size < 1):
        raise GruliteError(f"batch_size must be an int >= 1 or None; got {batch_size!r}")

    if not isinstance(x, da.Array):
        x = da.asarray(x)
        if x.ndim == 3 and x.numblocks[1:] != (1, 1):
            x = x.rechunk({1: -1, 2: -1})
    if x.ndim != 3:
        raise GruliteError(f"x must be a 3-D dask array (N, T, I), batch first; got "
                           f"{x.ndim}-D shape {x.shape}")
    if x.dtype.kind != "f":
        raise GruliteError(f"x must hold float32 or float64; got dtype {x.dtype}")
    for ax, what in ((1, "steps"), (2, "features")):
        if any(np.isnan(c) for c in x.chunks[ax]):
            raise GruliteError(f"x has unknown chunk sizes along axis {ax} ({what}); each "
                               "block needs whole sequences: call x.compute_chunk_sizes() first")
    T, I = x.shape[1], x.shape[2]
    if I != model.config.input_size:
        raise GruliteError(f"x has {I} features in its last axis; the model expects "
                           f"input_size={model.config.input_size} (x shape {x.shape})")
    if T < 1:
        raise GruliteError(f"x needs at least one step; got shape {x.shape}")
    if x.numblocks[1:] != (1, 1):
        # Each block must hold whole sequences: merge the chunks along T and I.
        x = x.rechunk({1: -1, 2: -1})
    row_chunks = x.chunks[0]
    rows_known = not any(np.isnan(c) for c in row_chunks)

    len_d = None
    if lengths is not None:
        if isinstance(lengths, da.Array):
            len_d = lengths
        else:
            la = np.asarray(lengths)
            if la.ndim != 1 or (rows_known and la.shape[0] != x.shape[0]):
                raise GruliteError(f"lengths has shape {la.shape}; expected ({x.shape[0]},), "
                                   "one per sequence")
            if not rows_known:
                raise GruliteError("x has unknown row chunk sizes; pass lengths as a dask "
                                   "array with the same row chunks")
            len_d = da.from_array(la, chunks=(row_chunks,))
        if len_d.ndim != 1:
            raise GruliteError(f"lengths must be 1-D, one per sequence; got shape {len_d.shape}")
        if len_d.dtype.kind not in "iu":
            raise GruliteError(f"lengths must be integers; got dtype {len_d.dtype}")
        if rows_known and not np.isnan(len_d.shape[0]) and len_d.shape[0] != x.shape[0]:
            raise GruliteError(f"lengths has shape {len_d.shape}; expected ({x.shape[0]},), "
                               "one per sequence")
        if len_d.chunks[0] != row_chunks:
            if not rows_known or any(np.isnan(c) for c in len_d.chunks[0]):
                raise GruliteError("lengths and x have different (unknown) row chunks; give "
                                   "lengths the row chunks of x")
            len_d = len_d.rechunk((row_chunks,))

    node = model_node(model)
    largs = (len_d, "n") if len_d is not None else (None, None)
    token = "grulite-predict"
    if len(names) == 1:
        ind, new_axes = _layout(model, names[0], T)
        out = da.blockwise(_block_one, ind, x, "ntk", *largs, node, None, names, None,
                           batch_size, None, new_axes=new_axes, concatenate=True,
                           dtype=np.float32, meta=np.empty((0,) * len(ind), np.float32),
                           token=token)
        return out if single else (out,)
    tuples = da.blockwise(_block_many, "n", x, "ntk", *largs, node, None, names, None,
                          batch_size, None, concatenate=True, dtype=object,
                          meta=np.empty((0,), dtype=object), token=token)
    results = []
    for i, name in enumerate(names):
        ind, new_axes = _layout(model, name, T)
        if "t" in ind:
            new_axes = {"t": T, **new_axes}
        results.append(da.blockwise(_pick, ind, tuples, "n", i, None, new_axes=new_axes,
                                    dtype=np.float32, meta=np.empty((0,) * len(ind), np.float32),
                                    token=f"grulite-{name}"))
    return tuple(results)
