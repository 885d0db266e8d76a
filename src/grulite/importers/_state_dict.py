"""Finding the GRU (and embedding, head) tensors in a PyTorch state_dict.

The GRU is an nn.GRU (``<prefix>weight_ih_l0`` ...) or an nn.GRUCell
(``<prefix>weight_ih`` ..., told from LSTMCell / RNNCell by its shapes);
the embedding an nn.Embedding feeding it (:func:`find_embedding`).

The result is a plain description of layers and head layers, handed to
:func:`grulite.importers._image.image_from_layers`: the same path for
``from_state_dict`` in memory and for the npz, torch.save and safetensors
files (whose tensors are lazy: only those the model uses are read, after
every shape is checked).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from grulite import _core
from grulite._activations import for_layers
from grulite._errors import GruliteError
from grulite.importers._image import count_parameters, image_from_layers, resolve_dtype
from grulite.importers._lazy import LazyTensor

__all__ = ["find_gru", "find_head", "find_embedding", "parse_head", "build_image", "to_array",
           "has_gru_keys", "embedding_image_args", "vocab_tokens", "HeadSpec", "EmbeddingSpec",
           "VocabSpec", "CHECKPOINT_KEYS", "GRU_KEY", "CELL_KEY", "EMBEDDING_NAME"]

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net",
                   "network", "weights", "params")

GRU_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)weight_ih_l(?P<layer>\d+)(?P<rev>_reverse)?$")
# nn.GRUCell, nn.LSTMCell and nn.RNNCell share these names (no _l0): told
# apart by the shape of weight_hh (3H, 4H or H rows of H).
CELL_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)weight_hh$")
# The last module-name component of an nn.Embedding feeding the GRU.
EMBEDDING_NAME = re.compile(r"^(?:emb|embed|embedding|embeddings|.+_(?:emb|embed|embedding|embeddings))$")

HeadSpec = Union[None, str, Sequence[Any]]
EmbeddingSpec = Union[None, bool, str]
VocabSpec = Union[None, str, os.PathLike, Sequence[str]]

ACTIVATION_NAMES = tuple(_core.ACTIVATIONS)


def to_array(value: Any, name: str) -> Any:
    """A numpy view of a tensor-like value (numpy, torch tensor, list); a
    lazy tensor of a file stays lazy (its shape and dtype are known, its
    data are read when the image is written)."""
    if isinstance(value, LazyTensor):
        if value.dtype.kind not in "fiu":
            raise GruliteError(f"tensor {name!r} has dtype {value.kind}; expected a float array")
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):      # a torch tensor
        value = value.detach().cpu()
        if hasattr(value, "float") and str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise GruliteError(f"tensor {name!r} has dtype {arr.dtype}; expected a float array")
    return arr


def has_gru_keys(keys: Any) -> bool:
    """True when `keys` name an nn.GRU layer (``weight_ih_l0``) or a cell
    (``weight_ih`` and ``weight_hh``: a GRUCell, or an LSTMCell / RNNCell
    to be refused with a message): the test for "this mapping is the
    state_dict"."""
    names = {str(k) for k in keys}
    return any(GRU_KEY.match(k) or (CELL_KEY.match(k) and k[:-len("weight_hh")] + "weight_ih" in names)
               for k in names)


def _unwrap_checkpoint(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state_dict inside a checkpoint dict, or the mapping itself."""
    if has_gru_keys(mapping):
        return mapping
    for key in CHECKPOINT_KEYS:
        inner = mapping.get(key) if hasattr(mapping, "get") else None
        if isinstance(inner, Mapping):
            found = _unwrap_checkpoint(inner)
            if has_gru_keys(found):
                return found
    for inner in mapping.values():
        if isinstance(inner, Mapping):
            found = _unwrap_checkpoint(inner)
            if has_gru_keys(found):
                return found
    return mapping


def _groups(mapping: Mapping[str, Any]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for k in mapping:
        m = GRU_KEY.match(str(k))
        if m:
            groups.setdefault(m.group("prefix"), []).append(str(k))
    return groups


def _shape(value: Any) -> Optional[tuple]:
    """The shape of a tensor-like value without reading it (None if it has
    none, or if it cannot be read: such a tensor is an error only if used)."""
    try:
        shape = getattr(value, "shape", None)
        if shape is None:
            shape = np.shape(value)
        return tuple(int(n) for n in shape)
    except Exception:                           # noqa: BLE001 - not a readable array: no shape
        return None


def _is_float(value: Any) -> bool:
    """A float tensor (numpy, torch or lazy), judged without reading it."""
    try:
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if kind is not None:
            return kind == "f"
        if hasattr(value, "is_floating_point"):     # a torch tensor
            return bool(value.is_floating_point())
        return np.asarray(value).dtype.kind == "f"
    except Exception:                           # noqa: BLE001 - not a readable array
        return False


_CELL_KINDS = {3: "GRUCell", 4: "LSTMCell", 1: "RNNCell"}


def _cells(mapping: Mapping[str, Any]) -> dict[str, tuple[str, Optional[tuple]]]:
    """prefix -> (kind, weight_hh shape) of every cell-like group (keys
    ``<prefix>weight_hh``, no ``_l0``): "GRUCell" when weight_hh is (3H, H),
    "LSTMCell" for (4H, H), "RNNCell" for (H, H), "" for any other shape."""
    out: dict[str, tuple[str, Optional[tuple]]] = {}
    for k, v in mapping.items():
        m = CELL_KEY.match(str(k))
        if not m:
            continue
        shape = _shape(v)
        kind = ""
        if shape is not None and len(shape) == 2 and shape[1] >= 1 and shape[0] % shape[1] == 0:
            kind = _CELL_KINDS.get(shape[0] // shape[1], "")
        out[m.group("prefix")] = (kind, shape)
    return out


def _not_a_gru_cell(p: str, kind: str, shape: Optional[tuple]) -> str:
    if not kind:
        return f"a tensor {p}weight_hh of shape {shape} (not a GRUCell's 3H x H)"
    rows = {"LSTMCell": "4H", "RNNCell": "H"}[kind]
    return f"an {kind}-shaped cell under {p!r} (weight_hh {rows} x H, shape {shape})"


def _listed(found: Mapping[str, str]) -> str:
    return ", ".join(repr(g.rstrip(".")) + ("" if kind == "GRU" else f" ({kind})")
                     for g, kind in sorted(found.items()))


def _variants(reset_after: bool | Sequence[bool], num_layers: int) -> list[bool]:
    if isinstance(reset_after, (bool, np.bool_, int)):
        return [bool(reset_after)] * num_layers
    variants = [bool(v) for v in reset_after]
    if len(variants) != num_layers:
        raise GruliteError(f"reset_after has {len(variants)} entries; the GRU has {num_layers} layers")
    return variants


def _cell_layer(sd: Mapping[str, Any], p: str, reset_after: bool | Sequence[bool]) -> dict:
    """The one-layer description of the nn.GRUCell under `p` (its tensors
    checked; weight_hh is (3H, H) already)."""
    def get(name: str) -> Any:
        key = p + name
        return to_array(sd[key], key) if key in sd else None

    w_hh = get("weight_hh")
    H = int(w_hh.shape[1])
    w_ih = get("weight_ih")
    if w_ih is None:
        raise GruliteError(f"{p}weight_ih is missing (found {p}weight_hh of a GRUCell)")
    if w_ih.ndim != 2 or w_ih.shape[0] != 3 * H or w_ih.shape[1] < 1:
        raise GruliteError(f"{p}weight_ih has shape {tuple(w_ih.shape)}; expected "
                           f"(3*hidden_size, input_size) with hidden_size={H} (GRUCell {p}weight_hh "
                           f"is {tuple(w_hh.shape)})")
    b_ih, b_hh = get("bias_ih"), get("bias_hh")
    if (b_ih is None) != (b_hh is None):
        have, miss = ("bias_ih", "bias_hh") if b_hh is None else ("bias_hh", "bias_ih")
        raise GruliteError(f"{p}{have} is present but {p}{miss} is not: a GRUCell has both "
                           "biases or neither (bias=False)")
    for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b is not None and tuple(b.shape) != (3 * H,):
            raise GruliteError(f"{p}{name} has shape {tuple(b.shape)}; expected (3*hidden_size,) "
                               f"= ({3 * H},) with hidden_size={H}")
    has_bias = b_ih is not None
    I = int(w_ih.shape[1])
    layer = dict(input_size=I, hidden_size=H, num_directions=1,
                 reset_after=_variants(reset_after, 1)[0], bias=has_bias,
                 weight_ih=[w_ih], weight_hh=[w_hh], bias_ih=[b_ih] if has_bias else [],
                 bias_hh=[b_hh] if has_bias else [])
    names = [p + "weight_ih", p + "weight_hh"] + ([p + "bias_ih", p + "bias_hh"] if has_bias else [])
    return dict(input_size=I, layers=[layer], kind="GRUCell", tensors=names)


def find_gru(mapping: Mapping[str, Any], prefix: str | None = None,
             reset_after: bool | Sequence[bool] = True) -> tuple[Mapping[str, Any], str, dict]:
    """Locates one GRU in a state_dict: an nn.GRU (``<prefix>weight_ih_l0``
    ...) or an nn.GRUCell (``<prefix>weight_ih``, ``<prefix>weight_hh``,
    optional ``bias_ih`` / ``bias_hh``: a one-layer, one-direction GRU).
    Cells are told apart by the shape of weight_hh: (3H, H) is a GRUCell;
    an LSTMCell's (4H, H) or an RNNCell's (H, H) is refused with a message.

    Returns (state_dict, prefix, description) where description holds
    input_size, a list of layers with their weights in PyTorch layout, as
    found (numpy arrays or lazy tensors of a file, not yet read or copied:
    :func:`image_from_layers` does that once the C core has checked the
    sizes against its limits), ``kind`` ("GRU" or "GRUCell") and
    ``tensors`` (the names it uses).  Every shape is checked here.
    """
    if not isinstance(mapping, Mapping):
        raise GruliteError(f"expected a mapping of tensor names to arrays (a state_dict); "
                           f"got {type(mapping).__name__}")
    sd = _unwrap_checkpoint(mapping)
    groups = _groups(sd)
    cells = _cells(sd)
    found = {c: "GRUCell" for c, (kind, _) in cells.items() if kind == "GRUCell"}
    found.update({g: "GRU" for g in groups})
    others = {c: v for c, v in cells.items() if c not in found}
    if prefix is not None:
        p = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        if p in others:
            raise GruliteError(f"prefix {prefix!r}: found {_not_a_gru_cell(p, *others[p])}; "
                               "grulite runs GRUs (nn.GRU, nn.GRUCell)")
        if p not in found:
            raise GruliteError(f"no GRU tensors under prefix {prefix!r} "
                               f"(looked for {p}weight_ih_l0, or {p}weight_hh of a GRUCell); "
                               f"GRUs found under: {_listed(found) or 'none'}")
    else:
        if not found:
            if others:
                raise GruliteError("found " + "; ".join(_not_a_gru_cell(c, *v) for c, v in
                                                         sorted(others.items()))
                                   + "; grulite runs GRUs (nn.GRU, nn.GRUCell: weight_hh 3H x H)")
            sample = ", ".join(list(map(str, sd))[:8])
            raise GruliteError("no GRU tensors found: expected keys like 'gru.weight_ih_l0', "
                               f"'gru.weight_hh_l0' (PyTorch nn.GRU) or 'cell.weight_ih', "
                               f"'cell.weight_hh' (nn.GRUCell); the keys are: {sample}"
                               + (" ..." if len(sd) > 8 else ""))
        if len(found) > 1:
            raise GruliteError(f"several GRUs in this state_dict, under prefixes {_listed(found)}; "
                               "choose one with prefix= (--prefix on the command line)")
        p = next(iter(found))
    if found[p] == "GRUCell":
        return sd, p, _cell_layer(sd, p, reset_after)

    def get(name: str) -> Any:
        key = p + name
        return to_array(sd[key], key) if key in sd else None

    layer_ids = sorted({int(GRU_KEY.match(k).group("layer")) for k in groups[p]})
    if layer_ids != list(range(len(layer_ids))):
        raise GruliteError(f"GRU layers under {p!r} are {layer_ids}; expected 0..{len(layer_ids) - 1} "
                           "with none missing")
    num_layers = len(layer_ids)
    bidirectional = (p + "weight_ih_l0_reverse") in sd
    variants = _variants(reset_after, num_layers)
    has_bias = (p + "bias_ih_l0") in sd
    suffixes = ["", "_reverse"] if bidirectional else [""]

    layers = []
    in_size = None
    for k in range(num_layers):
        w_ih0 = get(f"weight_ih_l{k}")
        w_hh0 = get(f"weight_hh_l{k}")
        if w_hh0 is None:
            raise GruliteError(f"{p}weight_hh_l{k} is missing (found {p}weight_ih_l{k})")
        if w_hh0.ndim != 2 or w_hh0.shape[0] % 3 or w_hh0.shape[0] != 3 * w_hh0.shape[1] \
                or w_hh0.shape[1] < 1:
            raise GruliteError(f"{p}weight_hh_l{k} has shape {tuple(w_hh0.shape)}; expected "
                               "(3*hidden_size, hidden_size)")
        H = int(w_hh0.shape[1])
        if w_ih0 is None:
            raise GruliteError(f"{p}weight_ih_l{k} is missing (found {p}weight_hh_l{k})")
        if w_ih0.ndim != 2 or w_ih0.shape[0] != 3 * H or w_ih0.shape[1] < 1:
            raise GruliteError(f"{p}weight_ih_l{k} has shape {tuple(w_ih0.shape)}; expected "
                               f"(3*hidden_size, input_size) with hidden_size={H}")
        if k == 0:
            in_size = int(w_ih0.shape[1])
        lay: dict[str, Any] = dict(input_size=in_size, hidden_size=H,
                                   num_directions=len(suffixes), reset_after=variants[k],
                                   bias=has_bias, weight_ih=[], weight_hh=[], bias_ih=[], bias_hh=[])
        for sfx in suffixes:
            expect = {f"weight_ih_l{k}{sfx}": (3 * H, in_size),
                      f"weight_hh_l{k}{sfx}": (3 * H, H)}
            if has_bias:
                expect[f"bias_ih_l{k}{sfx}"] = (3 * H,)
                expect[f"bias_hh_l{k}{sfx}"] = (3 * H,)
            for name, shape in expect.items():
                arr = get(name)
                if arr is None:
                    raise GruliteError(f"{p}{name} is missing; a {'bidirectional ' if bidirectional else ''}"
                                       f"GRU layer {k} {'with' if has_bias else 'without'} bias needs "
                                       + ", ".join(p + n for n in expect))
                if tuple(arr.shape) != shape:
                    what = ("(3*hidden_size, input_size)" if name.startswith("weight_ih")
                            else "(3*hidden_size, hidden_size)" if name.startswith("weight_hh")
                            else "(3*hidden_size,)")
                    detail = f"input_size={in_size}, hidden_size={H}" if name.startswith("weight_ih") \
                        else f"hidden_size={H}"
                    raise GruliteError(f"{p}{name} has shape {tuple(arr.shape)}; expected {what} "
                                       f"= {shape} with {detail}")
                lay[name.split("_l")[0]].append(arr)        # read once all are checked
        if not has_bias and (p + f"bias_ih_l{k}") in sd:
            raise GruliteError(f"{p}bias_ih_l{k} present but {p}bias_ih_l0 is not: "
                               "either every layer has a bias or none does")
        layers.append(lay)
        in_size = len(suffixes) * H
    extra = [k for k in sd if str(k).startswith(p) and GRU_KEY.match(str(k)) is None
             and re.search(r"_l(\d+)(_reverse)?$", str(k))
             and int(re.search(r"_l(\d+)", str(k)).group(1)) >= num_layers]
    if extra:
        raise GruliteError(f"tensors for layers beyond {num_layers - 1}: {', '.join(map(str, extra))}")
    desc = dict(input_size=layers[0]["input_size"], layers=layers, kind="GRU",
                tensors=_gru_names(p, layers))
    return sd, p, desc


def parse_head(head: HeadSpec) -> list[tuple[str, str]]:
    """Normalizes a head spec: "fc:softmax,fc2:none", ("fc", "softmax"),
    [("fc", "relu"), ("out", "softmax")] or ["fc"] (activation none)."""
    if head is None:
        return []
    items: list[Any]
    if isinstance(head, str):
        items = [s for s in head.split(",") if s.strip()]
    elif isinstance(head, tuple) and len(head) == 2 and all(isinstance(s, str) for s in head) \
            and head[1].lower() in ACTIVATION_NAMES:
        items = [head]
    else:
        items = list(head)
    out = []
    for it in items:
        if isinstance(it, str):
            name, _, act = it.strip().partition(":")
            act = act or "none"
        else:
            if len(it) != 2:
                raise GruliteError(f"head entry {it!r}: expected (module_name, activation)")
            name, act = it
        act = str(act).strip().lower()
        if act not in ACTIVATION_NAMES:
            raise GruliteError(f"head layer {name!r}: unknown activation {act!r}; "
                               f"expected one of {', '.join(ACTIVATION_NAMES)}")
        out.append((str(name).strip().rstrip("."), act))
    return out


def find_head(sd: Mapping[str, Any], head: list[tuple[str, str]], in_features: int) -> list[dict]:
    """nn.Linear layers named in `head`, checked against the widths (the C
    core checks the limits); the tensors are kept as found (see
    :func:`find_gru`)."""
    dense = []
    for name, act in head:
        wk, bk = f"{name}.weight", f"{name}.bias"
        if wk not in sd:
            linear = sorted({str(k)[:-len(".weight")] for k in sd if str(k).endswith(".weight")
                             and to_array(sd[k], str(k)).ndim == 2 and "weight_" not in str(k)})
            raise GruliteError(f"head layer {name!r}: no tensor {wk!r}; Linear layers found: "
                               f"{', '.join(linear) or 'none'}")
        w = to_array(sd[wk], wk)
        if w.ndim != 2 or w.shape[1] != in_features or w.shape[0] < 1:
            raise GruliteError(f"{wk} has shape {tuple(w.shape)}; expected (out_features, "
                               f"{in_features}) to follow a layer of width {in_features}")
        b = None
        if bk in sd:
            b = to_array(sd[bk], bk)
            if tuple(b.shape) != (w.shape[0],):
                raise GruliteError(f"{bk} has shape {tuple(b.shape)}; expected ({w.shape[0]},)")
        dense.append(dict(name=name, in_features=in_features, out_features=int(w.shape[0]),
                          activation=act, weight=w, bias=b))
        in_features = int(w.shape[0])
    return dense


def _describe_tensor(name: str, value: Any) -> str:
    shape = _shape(value)
    return f"{name} {' x '.join(map(str, shape)) if shape else '(no shape)'}"


def _embedding_candidates(sd: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(module name, key, tensor) of every 2-D float ``<name>.weight`` whose
    name's last component is like an embedding's (EMBEDDING_NAME)."""
    out = []
    for k, v in sd.items():
        key = str(k)
        if not key.endswith(".weight"):
            continue
        name = key[:-len(".weight")]
        if not EMBEDDING_NAME.match(name.rpartition(".")[2]):
            continue
        shape = _shape(v)
        if shape is not None and len(shape) == 2 and _is_float(v):
            out.append((name, key, v))
    return out


def _closeness(name: str, gru_prefix: str) -> tuple[int, int]:
    """How close embedding `name` sits to the GRU under `gru_prefix`
    (smaller is closer): first its module path (the GRU's parent, then an
    enclosing module, then elsewhere), then its name (``dec_emb`` for the
    GRU ``dec``, ``decoder_embedding`` for ``decoder_gru``)."""
    gru_parent, _, gru_name = gru_prefix.rstrip(".").rpartition(".")
    parent, _, last = name.rpartition(".")
    if parent == gru_parent:
        level = 0
    elif parent == "" or gru_parent.startswith(parent + "."):
        level = 1
    else:
        level = 2
    stem = re.sub(r"_?(?:emb|embed|embedding|embeddings)$", "", last)
    named = bool(stem) and (gru_name == stem or gru_name.startswith(stem + "_"))
    return level, 0 if named else 1


def find_embedding(sd: Mapping[str, Any], gru_prefix: str, input_size: int,
                   embedding: EmbeddingSpec = None) -> Optional[dict]:
    """The nn.Embedding that feeds the GRU under `gru_prefix`, or None.

    embedding: None looks for one (a 2-D ``<name>.weight`` of width
    `input_size` whose last name component is ``emb``, ``embed``,
    ``embedding``, ``embeddings`` or ends in ``_emb`` / ``_embed`` /
    ``_embedding``; of several, the closest to the GRU, see
    :func:`_closeness`; a tie is an error asking for embedding=); True does
    the same but a model without one is an error; a module name
    (``"decoder.embedding"``) takes that tensor; False takes none.
    Returns dict(name, key, weight (as found: lazy tensors stay lazy),
    vocab_size, width).
    """
    if embedding is False:
        return None
    cands = _embedding_candidates(sd)
    where = f"the GRU under {gru_prefix.rstrip('.')!r}" if gru_prefix else "the GRU"
    if embedding is None or embedding is True:
        fit = [c for c in cands if (_shape(c[2]) or (0, 0))[1] == input_size
               and (_shape(c[2]) or (0, 0))[0] >= 1]
        if not fit:
            if embedding is True:
                named = ", ".join(_describe_tensor(n, v) for n, _, v in cands) or "none"
                raise GruliteError(f"embedding=True: no embedding of width {input_size} feeds "
                                   f"{where} (its input size); tensors named like embeddings: "
                                   f"{named}")
            return None
        scores = {c[0]: _closeness(c[0], gru_prefix) for c in fit}
        best = min(scores.values())
        top = [c for c in fit if scores[c[0]] == best]
        if len(top) > 1:
            names = ", ".join(_describe_tensor(n, v) for n, _, v in top)
            raise GruliteError(f"several embeddings of width {input_size} could feed {where}: "
                               f"{names}; choose one with embedding='NAME' (--embedding NAME on "
                               "the command line), or embedding=False for none")
        name, key, value = top[0]
    elif isinstance(embedding, str):
        name = embedding.strip().rstrip(".")
        key = f"{name}.weight" if name else "weight"
        if key not in sd and name.endswith(".weight") and name in sd:
            key, name = name, name[:-len(".weight")]
        if key not in sd:
            named = ", ".join(_describe_tensor(n, v) for n, _, v in cands) or "none"
            raise GruliteError(f"embedding={embedding!r}: no tensor {key!r} in the state_dict; "
                               f"tensors named like embeddings: {named}")
        value = sd[key]
        shape = _shape(value)
        if shape is None or len(shape) != 2:
            raise GruliteError(f"embedding {key} has shape {shape}; an embedding is a 2-D "
                               "(vocab_size, width) table")
        if shape[1] != input_size or shape[0] < 1:
            raise GruliteError(f"embedding {key} has shape {shape}; to feed {where} it must be "
                               f"(vocab_size, {input_size}): the GRU's input size is {input_size}")
    else:
        raise GruliteError(f"embedding must be None (find it), True (find it, required), False "
                           f"(none) or a module name like 'decoder.embedding'; got {embedding!r}")
    weight = to_array(value, key)
    if weight.dtype.kind != "f":
        raise GruliteError(f"embedding {key} has dtype {weight.dtype}; expected a float table")
    V, E = (int(n) for n in weight.shape)
    return dict(name=name, key=key, weight=weight, vocab_size=V, width=E)


class _ZNegated:
    """A (3H, ...) weight or (3H,) bias with its z rows [H, 2H) negated,
    read when the image is built (after C's size checks), like the lazy
    tensors it wraps."""

    def __init__(self, tensor: Any, H: int):
        self.tensor, self.H = tensor, H
        self.shape = tuple(tensor.shape)
        self.ndim = len(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = np.array(self.tensor, dtype=np.float32, copy=True)
        a[self.H:2 * self.H] *= -1.0
        return a if dtype is None else a.astype(dtype, copy=False)


def flip_update_gate(layers: list) -> None:
    """Weights written for h' = (1 - z)*h + z*n (the source document's
    form) as PyTorch's h' = (1 - z)*n + z*h: its z is PyTorch's 1 - z, and
    1 - sigmoid(a) = sigmoid(-a), so the z rows of every weight and bias
    are negated."""
    for lay in layers:
        H = int(lay["hidden_size"])
        for f in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            lay[f] = [_ZNegated(t, H) for t in lay.get(f, [])]


def attach_h0(sd: Mapping[str, Any], key: Optional[str], layers: list) -> Optional[str]:
    """The learned initial state under `key` (an nn.Parameter of shape
    (L*D, H) or (L*D, 1, H)) split into the layers' ``h0`` (one (H,) row per
    direction); returns the key, or None without one."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise GruliteError(f"h0 must be the name of a tensor (e.g. 'h0'); got {key!r}")
    if key not in sd:
        near = [str(k) for k in sd if "h0" in str(k) or "init" in str(k)]
        raise GruliteError(f"h0: no tensor {key!r} in the state_dict"
                           + (f"; tensors that may be it: {', '.join(near[:8])}" if near else ""))
    t = to_array(sd[key], key)
    LD = sum(int(l["num_directions"]) for l in layers)
    Hs = {int(l["hidden_size"]) for l in layers}
    shape = tuple(t.shape)
    H = shape[-1] if shape else 0
    if len(Hs) != 1 or shape not in ((LD, H), (LD, 1, H)) or H not in Hs:
        raise GruliteError(f"h0 {key!r} has shape {shape}; expected (num_layers*num_directions, "
                           f"hidden_size) = ({LD}, {min(Hs)}) or ({LD}, 1, {min(Hs)})")
    a = np.asarray(t, dtype=np.float32).reshape(LD, H)
    row = 0
    for lay in layers:
        lay["h0"] = [a[row + d] for d in range(int(lay["num_directions"]))]
        row += int(lay["num_directions"])
    return key


def check_fold(fold_embedding: Any, embedding: Optional[dict]) -> Optional[bool]:
    """fold_embedding checked: None (fold when the folded table is no
    bigger), True or False; True needs an embedding."""
    if fold_embedding is not None and not isinstance(fold_embedding, (bool, np.bool_)):
        raise GruliteError(f"fold_embedding must be None (when it pays), True or False; got "
                           f"{fold_embedding!r}")
    if fold_embedding is None:
        return None
    if fold_embedding and embedding is None:
        raise GruliteError("fold_embedding=True, but the model has no embedding to fold")
    return bool(fold_embedding)


def vocab_tokens(vocab: VocabSpec, embedding: Optional[dict]) -> Optional[list]:
    """The tokens of `vocab` (a list of str, or a vocabulary file's path,
    see :mod:`grulite._vocab`), checked against the embedding's rows."""
    from grulite._vocab import check_vocab, read_vocab

    if vocab is None:
        return None
    if embedding is None:
        raise GruliteError("vocab= names the model's token ids, but the model has no embedding "
                           "(it takes float vectors); give the embedding with embedding='NAME'")
    if isinstance(vocab, (str, os.PathLike)):
        tokens = read_vocab(vocab)
        what = f"vocabulary file {os.fspath(vocab)!r}"
    else:
        tokens = check_vocab(vocab)
        what = "vocab"
    V = embedding["vocab_size"]
    if len(tokens) != V:
        raise GruliteError(f"{what} has {len(tokens)} tokens; the embedding "
                           f"{embedding['name']!r} has {V} rows (one token per id 0..{V - 1})")
    return tokens


def embedding_image_args(embedding: Optional[dict], fold: Optional[bool]) -> dict:
    """The keyword arguments of :func:`image_from_layers` for an embedding
    (none without one, so models without an embedding build as before)."""
    if embedding is None:
        return {}
    return dict(embedding=dict(name=embedding["name"], weight=embedding["weight"], fold=fold))


def build_image(mapping: Mapping[str, Any], prefix: str | None = None,
                reset_after: bool | Sequence[bool] = True, head: HeadSpec = None,
                batch_first: bool = True, source: str | None = None,
                dtype: str = "auto", head_from: str = "output",
                embedding: EmbeddingSpec = None, fold_embedding: Optional[bool] = None,
                vocab: VocabSpec = None, h0: Optional[str] = None,
                update_gate: str = "torch", activations: Any = None,
                clip: Optional[float] = None) -> tuple[bytes, dict]:
    """The .grl image of the GRU (and embedding, head) in `mapping`, and a
    summary: ``prefix``, ``kind`` ("GRU" or "GRUCell"), ``layers``,
    ``dense``, ``embedding`` (dict name, vocab_size, width; or None),
    ``vocab`` (the tokens, or None), ``parameters``, ``tensors`` (the names
    used) and ``unused`` (the state_dict's other tensors)."""
    sd, p, desc = find_gru(mapping, prefix, reset_after)
    layers = desc["layers"]
    if update_gate not in ("torch", "seed"):
        raise GruliteError(f"update_gate must be 'torch' (h' = (1 - z)*n + z*h) or 'seed' "
                           f"(h' = (1 - z)*h + z*n); got {update_gate!r}")
    if update_gate == "seed":
        flip_update_gate(layers)
    h0_key = attach_h0(sd, h0, layers)
    for_layers(activations, clip, layers)
    emb = find_embedding(sd, p, desc["input_size"], embedding)
    fold = check_fold(fold_embedding, emb)
    tokens = vocab_tokens(vocab, emb)
    dense = find_head(sd, parse_head(head), _output_width(layers))
    # "auto" from the tensors as given (a torch bfloat16 tensor is widened below).
    dtype = resolve_dtype(dtype, [sd[k] for k in desc["tensors"] if "weight_" in str(k)] +
                          ([sd[emb["key"]]] if emb else []))
    used = ([emb["key"]] if emb else []) + desc["tensors"] + ([h0_key] if h0_key else []) + \
        _head_names(dense)
    meta: dict = {
        "source": source,
        "prefix": p.rstrip("."),
        "tensors": {k: list(to_array(sd[k], k).shape) for k in used},
        "head": [[d["name"], d["activation"]] for d in dense],
    }
    if desc["kind"] != "GRU":
        meta["module"] = desc["kind"]
    if emb is not None:
        meta["embedding"] = emb["name"]
    if tokens is not None:
        meta["vocab"] = tokens
    if h0_key is not None:
        meta["h0"] = h0_key
    if update_gate != "torch":
        meta["update_gate"] = update_gate
    if activations is not None or clip is not None:
        meta["activations"] = [lay["activations"] for lay in layers]
        meta["clip"] = layers[0]["clip"]
    try:
        image = image_from_layers(desc["input_size"], layers, dense, meta, batch_first, dtype,
                                  head_from, **embedding_image_args(emb, fold))
    except GruliteError as e:                  # C names the field; say which tensors it is
        n = len(layers)
        which = (f"GRUCell {p}*" if desc["kind"] == "GRUCell" else f"GRU {p}*_l0" if n == 1
                 else f"GRU {p}*_l0 .. {p}*_l{n - 1} ({n} layers)")
        if emb is not None:
            which = f"embedding {emb['key']}, " + which
        if dense:
            which += ", head " + ", ".join(d["name"] for d in dense)
        raise GruliteError(f"{which}: {e}") from None
    names = set(used)
    # Tensors by their type (a property of the class: nothing is read or computed).
    unused = [str(k) for k, v in sd.items() if str(k) not in names and hasattr(type(v), "shape")]
    n_params = count_parameters(layers, dense) + (emb["vocab_size"] * emb["width"] if emb else 0)
    summary = dict(prefix=p.rstrip("."), kind=desc["kind"], layers=layers, dense=dense,
                   embedding=None if emb is None else
                   dict(name=emb["name"], vocab_size=emb["vocab_size"], width=emb["width"]),
                   vocab=tokens, parameters=n_params, tensors=used, unused=unused, dtype=dtype)
    return image, summary


def _output_width(layers: list) -> int:
    return int(layers[-1]["num_directions"] * layers[-1]["hidden_size"])


def _gru_names(p: str, layers: list) -> list[str]:
    used = []
    for k, lay in enumerate(layers):
        for sfx in (["", "_reverse"][:lay["num_directions"]]):
            used += [f"{p}weight_ih_l{k}{sfx}", f"{p}weight_hh_l{k}{sfx}"]
            if lay["bias"]:
                used += [f"{p}bias_ih_l{k}{sfx}", f"{p}bias_hh_l{k}{sfx}"]
    return used


def _head_names(dense: list) -> list[str]:
    used = []
    for d in dense:
        used.append(f"{d['name']}.weight")
        if d["bias"] is not None:
            used.append(f"{d['name']}.bias")
    return used
