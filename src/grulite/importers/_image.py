"""The one way from an importer's description of a model to a .grl image.

Every importer describes what it found as plain layers and head layers
(:func:`image_from_layers` says how) and hands them here; the C core checks
the description (``_core.check_config``) and writes the image
(``_core.serialize``) that its loader reads.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from grulite import _core
from grulite._errors import GruliteError

__all__ = ["image_from_layers", "count_parameters", "WEIGHT_FIELDS"]

WEIGHT_FIELDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


# dtype="auto" keeps a 16-bit float source in its own type (stored exactly).
AUTO_KEEPS = ("float16", "bfloat16")


def stored_float_kind(value: Any) -> str:
    """The element type a tensor is stored in ("float32", "float16",
    "bfloat16", ...), read from its description: a lazy tensor of a file
    (before bfloat16 is widened), a torch tensor or a numpy array."""
    from grulite.importers._lazy import LazyTensor

    if isinstance(value, LazyTensor):
        return str(value.kind)
    dt = getattr(value, "dtype", None)
    if dt is not None and str(dt).startswith("torch."):
        return str(dt)[len("torch."):]
    return np.asarray(value).dtype.name


def resolve_dtype(dtype: str, matrices: Any) -> str:
    """``dtype``, or for "auto" the stored type of the weight matrices
    (GRU weights and an embedding table) when they all share float16 or
    bfloat16: grulite then stores them bit for bit at half float32's size,
    and computes what float32 storage of their widened values would.
    Anything else (float32, float64, mixed types): float32."""
    if dtype != "auto":
        return dtype
    kinds = {stored_float_kind(a) for a in matrices}
    return kinds.pop() if len(kinds) == 1 and next(iter(kinds)) in AUTO_KEEPS else "float32"


def image_from_layers(input_size: int, layers: list, dense: list, meta: dict,
                      batch_first: bool = True, dtype: str = "auto",
                      head_from: str = "output", embedding: dict | None = None) -> bytes:
    """The .grl image of a GRU described layer by layer (the importers' one
    way in).

    layers: one dict per layer with ``input_size``, ``hidden_size``,
    ``num_directions`` (1 or 2), ``reverse`` (one direction run backwards),
    ``reset_after``, ``bias`` and, per direction, lists ``weight_ih``
    (3H, in), ``weight_hh`` (3H, H), ``bias_ih`` / ``bias_hh`` (3H,) in
    PyTorch's layout and gate order r, z, n; optionally ``h0``, a list of
    one (H,) learned initial state per direction.  dense: dicts with
    ``in_features``, ``out_features``, ``activation`` (a name in
    ``_core.ACTIVATIONS``), ``weight`` (out, in) and ``bias`` (out,) or None.
    meta: JSON-serializable metadata (converter version is added).
    head_from: "output" (the top layer's output at each sequence's last
    valid step, PyTorch's ``fc(y[:, -1])``) or "state" (its final states,
    directions concatenated: ``fc(cat(h_n[-2], h_n[-1]))``, Keras'
    Bidirectional / go_backwards ``return_sequences=False``).

    embedding: None (the model reads float features), or a dict with
    ``weight`` (V, input_size) (nn.Embedding.weight: the model then reads
    token ids), ``fold`` (None: fold it into layer 0's input projection
    when the folded table is no larger; True; False) and optionally
    ``name``.

    Tensors may be anything ``np.asarray`` takes (lazy tensors of a file
    are read here, after the C core has checked every size).  dtype: a
    name in ``_core.DTYPES``, or "auto" (:func:`resolve_dtype`).
    """
    from grulite import __version__

    if head_from not in ("output", "state"):
        raise GruliteError(f"head_from must be 'output' or 'state'; got {head_from!r}")
    emb = None
    if embedding is not None:
        w = embedding["weight"]
        shape = tuple(np.shape(w))
        if len(shape) != 2 or shape[1] != input_size:
            raise GruliteError(f"embedding {embedding.get('name') or ''} has shape {shape}; "
                               f"expected (vocab_size, {input_size}) to feed layer 0")
        emb = dict(vocab_size=shape[0], fold=embedding.get("fold"))
    _core.check_config(input_size, layers, dense, emb)     # the limits, before any copy
    dtype = resolve_dtype(dtype, [a for lay in layers for f in ("weight_ih", "weight_hh")
                                  for a in lay.get(f, [])] +
                          ([embedding["weight"]] if embedding is not None else []))
    if emb is not None:
        emb["weight"] = _f32(embedding["weight"])
    fixed = [dict(lay, **{f: [_f32(a) for a in lay.get(f, [])] for f in WEIGHT_FIELDS})
             for lay in layers]
    for lay in fixed:
        if lay.get("h0") is not None:
            lay["h0"] = [_f32(a) for a in lay["h0"]]
    dense = [dict(d, weight=_f32(d["weight"]),
                  bias=None if d.get("bias") is None else _f32(d["bias"])) for d in dense]
    meta = dict(meta)
    meta.setdefault("converter", f"grulite {__version__}")
    return _core.serialize(int(input_size), fixed, dense,
                           json.dumps(meta, sort_keys=True, default=str).encode("utf-8"),
                           bool(batch_first), dtype, head_from == "state", emb)


def count_parameters(layers: list, dense: list, embedding: dict | None = None) -> int:
    """Weights and biases of a description as :func:`image_from_layers`
    takes it."""
    n = sum(int(np.size(a)) for lay in layers for f in WEIGHT_FIELDS for a in lay.get(f, []))
    n += sum(int(np.size(d["weight"])) + (0 if d.get("bias") is None else int(np.size(d["bias"])))
             for d in dense)
    return n + (0 if embedding is None else int(np.size(embedding["weight"])))
