"""Models from plain arrays: weights that do not carry PyTorch's names.

:func:`image` takes one dict per GRU layer (``weight_ih``, ``weight_hh``,
``bias_ih``, ``bias_hh``, and the same names with ``_reverse`` for a second
direction), an optional embedding table and head layers, checks every
shape (the message names the layer and the array) and builds the .grl
image through :func:`grulite.importers._image.image_from_layers`, as every
importer does.  Arrays may be numpy arrays, torch tensors or anything
``np.asarray`` takes; they are in PyTorch's layout and gate order (r, z, n).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from grulite import _core
from grulite._activations import for_layers
from grulite._errors import GruliteError
from grulite.importers._image import count_parameters, image_from_layers
from grulite.importers._state_dict import VocabSpec, check_fold, embedding_image_args, to_array, vocab_tokens

__all__ = ["image", "LAYER_KEYS"]

LAYER_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0",
              "weight_ih_reverse", "weight_hh_reverse", "bias_ih_reverse", "bias_hh_reverse",
              "h0_reverse")


def _array(value: Any, where: str) -> np.ndarray:
    if value is None:
        raise GruliteError(f"{where} is None; expected an array")
    try:
        return to_array(value, where)
    except GruliteError:
        raise
    except Exception as e:                      # noqa: BLE001 - whatever np.asarray refuses
        raise GruliteError(f"{where} is not an array ({type(e).__name__}: {e})") from None


def _shape_error(where: str, arr: np.ndarray, want: tuple, why: str) -> GruliteError:
    return GruliteError(f"{where} has shape {tuple(arr.shape)}; expected {want} ({why})")


def _layer(k: int, spec: Any, in_size: int, in_known: bool, reset_after: bool) -> dict:
    """One layer description (checked) from the user's dict for layer k."""
    if not isinstance(spec, Mapping):
        raise GruliteError(f"layers[{k}] is a {type(spec).__name__}; expected a dict with "
                           "weight_ih, weight_hh (and bias_ih, bias_hh, *_reverse)")
    unknown = [str(key) for key in spec if key not in LAYER_KEYS]
    if unknown:
        raise GruliteError(f"layers[{k}] has unknown keys {', '.join(map(repr, unknown))}; "
                           f"the keys are {', '.join(LAYER_KEYS)}")
    directions = [""]
    if any(key.endswith("_reverse") for key in spec):
        directions.append("_reverse")
    lay: dict = dict(num_directions=len(directions), reset_after=bool(reset_after),
                     weight_ih=[], weight_hh=[], bias_ih=[], bias_hh=[])
    H = 0                                      # the hidden size, once read
    bias: Optional[bool] = None
    for sfx in directions:
        name = f"layers[{k}]"
        for key in ("weight_ih", "weight_hh"):
            if spec.get(key + sfx) is None:
                raise GruliteError(f"{name}[{key + sfx!r}] is missing" +
                                   (" (a second direction needs weight_ih_reverse and "
                                    "weight_hh_reverse)" if sfx else ""))
        w_hh = _array(spec[f"weight_hh{sfx}"], f"{name}['weight_hh{sfx}']")
        if w_hh.ndim != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != 3 * w_hh.shape[1]:
            raise _shape_error(f"{name}['weight_hh{sfx}']", w_hh, ("3*hidden_size", "hidden_size"),
                               "gates r, z, n stacked")
        h = int(w_hh.shape[1])
        if not H:
            H = h
        elif h != H:
            raise GruliteError(f"{name}['weight_hh{sfx}'] has shape {tuple(w_hh.shape)}: hidden size "
                               f"{h}, but the forward direction's is {H}")
        w_ih = _array(spec[f"weight_ih{sfx}"], f"{name}['weight_ih{sfx}']")
        if w_ih.ndim != 2 or w_ih.shape[0] != 3 * H or w_ih.shape[1] < 1 or \
                (in_known and w_ih.shape[1] != in_size):
            want = (3 * H, in_size) if in_known else (3 * H, "input_size")
            why = (f"hidden_size={H}; its input is the embedding's width {in_size}" if k == 0 and in_known
                   else f"hidden_size={H}; its input is layer {k - 1}'s output, width {in_size}"
                   if in_known else f"hidden_size={H}")
            raise _shape_error(f"{name}['weight_ih{sfx}']", w_ih, want, why)
        if not in_known:
            in_size, in_known = int(w_ih.shape[1]), True
        b_ih, b_hh = spec.get(f"bias_ih{sfx}"), spec.get(f"bias_hh{sfx}")
        if (b_ih is None) != (b_hh is None):
            have, miss = (f"bias_ih{sfx}", f"bias_hh{sfx}") if b_hh is None else \
                (f"bias_hh{sfx}", f"bias_ih{sfx}")
            raise GruliteError(f"{name} has {have!r} but not {miss!r}: give both biases or neither")
        has = b_ih is not None
        if bias is None:
            bias = has
        elif has != bias:
            raise GruliteError(f"{name}: the forward direction {'has' if bias else 'has no'} biases "
                               f"and the reverse {'has' if has else 'has none'}; both or neither")
        lay["weight_ih"].append(w_ih)
        lay["weight_hh"].append(w_hh)
        if has:
            for key, b in ((f"bias_ih{sfx}", b_ih), (f"bias_hh{sfx}", b_hh)):
                ba = _array(b, f"{name}[{key!r}]")
                if tuple(ba.shape) != (3 * H,):
                    raise _shape_error(f"{name}[{key!r}]", ba, (3 * H,), f"3*hidden_size, hidden_size={H}")
                lay[key.replace("_reverse", "")].append(ba)
    # A learned initial state: h0 (and h0_reverse), (H,) each, all or none.
    h0s = [spec.get(f"h0{sfx}") for sfx in directions]
    if any(h is not None for h in h0s):
        if any(h is None for h in h0s):
            raise GruliteError(f"layers[{k}]: a learned initial state needs h0 for every "
                               "direction (h0 and h0_reverse)")
        lay["h0"] = []
        for sfx, h in zip(directions, h0s):
            ha = _array(h, f"layers[{k}]['h0{sfx}']")
            if tuple(ha.shape) != (H,):
                raise _shape_error(f"layers[{k}]['h0{sfx}']", ha, (H,), "one initial state value "
                                   "per hidden unit")
            lay["h0"].append(ha)
    lay.update(input_size=int(in_size), hidden_size=int(H), bias=bool(bias))
    return lay


def _head(head: Any, in_features: int) -> list:
    if head is None:
        return []
    if isinstance(head, (str, bytes, Mapping)) or not isinstance(head, Sequence):
        raise GruliteError(f"head must be a list of (weight, bias or None, activation); got "
                           f"{type(head).__name__}")
    dense = []
    names = tuple(_core.ACTIVATIONS)
    for j, item in enumerate(head):
        where = f"head[{j}]"
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise GruliteError(f"{where} must be (weight, bias or None, activation); got "
                               f"{type(item).__name__}" + (f" of {len(item)}" if isinstance(item, (tuple, list))
                                                           else ""))
        w, b, act = item
        if not isinstance(act, str) or act.strip().lower() not in names:
            raise GruliteError(f"{where}: unknown activation {act!r}; expected one of {', '.join(names)}")
        wa = _array(w, f"{where} weight")
        if wa.ndim != 2 or wa.shape[1] != in_features or wa.shape[0] < 1:
            raise _shape_error(f"{where} weight", wa, ("out_features", in_features),
                               f"it follows a layer of width {in_features}")
        ba = None
        if b is not None:
            ba = _array(b, f"{where} bias")
            if tuple(ba.shape) != (wa.shape[0],):
                raise _shape_error(f"{where} bias", ba, (int(wa.shape[0]),), "out_features")
        dense.append(dict(name=f"head{j}", in_features=int(in_features), out_features=int(wa.shape[0]),
                          activation=act.strip().lower(), weight=wa, bias=ba))
        in_features = int(wa.shape[0])
    return dense


def image(layers: Sequence[Any], *, embedding: Any = None, head: Any = (),
          reset_after: Union[bool, Sequence[bool]] = True, batch_first: bool = True,
          dtype: str = "auto", head_from: str = "output", vocab: VocabSpec = None,
          fold_embedding: Optional[bool] = None, activations: Any = None,
          clip: Optional[float] = None) -> tuple[bytes, dict]:
    """The .grl image of a GRU given as arrays, and a summary (``layers``,
    ``dense``, ``embedding``, ``vocab``, ``parameters``, ``prefix`` "").
    Arguments of :func:`grulite.from_arrays`."""
    if isinstance(layers, Mapping) or not isinstance(layers, Sequence) or isinstance(layers, str):
        raise GruliteError(f"layers must be a list of dicts, one per GRU layer; got {type(layers).__name__}")
    if not layers:
        raise GruliteError("layers is empty; a model needs at least one GRU layer")
    L = len(layers)
    if isinstance(reset_after, (bool, np.bool_, int)):
        variants = [bool(reset_after)] * L
    elif isinstance(reset_after, Sequence) and not isinstance(reset_after, str):
        variants = [bool(v) for v in reset_after]
        if len(variants) != L:
            raise GruliteError(f"reset_after has {len(variants)} entries; there are {L} layers")
    else:
        raise GruliteError(f"reset_after must be a bool or one bool per layer; got {reset_after!r}")

    emb: Optional[dict[str, Any]] = None
    in_size, in_known = 0, False
    if embedding is not None:
        table = _array(embedding, "embedding")
        if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
            raise GruliteError(f"embedding has shape {tuple(table.shape)}; expected a 2-D "
                               "(vocab_size, width) table")
        if table.dtype.kind != "f":
            raise GruliteError(f"embedding has dtype {table.dtype}; expected a float table")
        V, E = (int(n) for n in table.shape)
        emb = dict(name="embedding", key="embedding", weight=table, vocab_size=V, width=E)
        in_size, in_known = E, True
    fold = check_fold(fold_embedding, emb)
    tokens = vocab_tokens(vocab, emb)

    descs = []
    for k, spec in enumerate(layers):
        lay = _layer(k, spec, in_size, in_known, variants[k])
        descs.append(lay)
        in_size, in_known = lay["num_directions"] * lay["hidden_size"], True
    for_layers(activations, clip, descs)
    dense = _head(head, in_size)
    meta: dict = {
        "source": "arrays",
        "tensors": {f"layers[{k}][{key!r}]": list(np.shape(spec[key]))
                    for k, spec in enumerate(layers) for key in LAYER_KEYS if spec.get(key) is not None},
        "head": [[d["name"], d["activation"]] for d in dense],
    }
    for d in dense:
        meta["tensors"][f"{d['name']} weight"] = list(d["weight"].shape)
        if d["bias"] is not None:
            meta["tensors"][f"{d['name']} bias"] = list(d["bias"].shape)
    if emb is not None:
        meta["tensors"]["embedding"] = [emb["vocab_size"], emb["width"]]
        meta["embedding"] = "embedding"
    if tokens is not None:
        meta["vocab"] = tokens
    img = image_from_layers(descs[0]["input_size"], descs, dense, meta, batch_first, dtype, head_from,
                            **embedding_image_args(emb, fold))
    n_params = count_parameters(descs, dense) + (emb["vocab_size"] * emb["width"] if emb else 0)
    summary = dict(prefix="", kind="GRU", layers=descs, dense=dense,
                   embedding=None if emb is None else
                   dict(name="embedding", vocab_size=emb["vocab_size"], width=emb["width"]),
                   vocab=tokens, parameters=n_params, tensors=list(meta["tensors"]), unused=[])
    return img, summary
