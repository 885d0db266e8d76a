"""Finding the GRU (and head) tensors in a PyTorch state_dict.

The result is a plain description of layers and head layers, handed to
:func:`grulite.importers._image.image_from_layers`: the same path for
``from_state_dict`` in memory and for the npz, torch.save and safetensors
files (whose tensors are lazy: only those the model uses are read, after
every shape is checked).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

from grulite import _core
from grulite._errors import GruliteError
from grulite.importers._image import count_parameters, image_from_layers
from grulite.importers._lazy import LazyTensor

__all__ = ["find_gru", "find_head", "parse_head", "build_image", "to_array", "HeadSpec",
           "CHECKPOINT_KEYS", "GRU_KEY"]

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net",
                   "network", "weights", "params")

GRU_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)weight_ih_l(?P<layer>\d+)(?P<rev>_reverse)?$")

HeadSpec = Union[None, str, Sequence[Any]]

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


def _unwrap_checkpoint(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state_dict inside a checkpoint dict, or the mapping itself."""
    if any(GRU_KEY.match(str(k)) for k in mapping):
        return mapping
    for key in CHECKPOINT_KEYS:
        inner = mapping.get(key) if hasattr(mapping, "get") else None
        if isinstance(inner, Mapping):
            found = _unwrap_checkpoint(inner)
            if any(GRU_KEY.match(str(k)) for k in found):
                return found
    for inner in mapping.values():
        if isinstance(inner, Mapping):
            found = _unwrap_checkpoint(inner)
            if any(GRU_KEY.match(str(k)) for k in found):
                return found
    return mapping


def _groups(mapping: Mapping[str, Any]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for k in mapping:
        m = GRU_KEY.match(str(k))
        if m:
            groups.setdefault(m.group("prefix"), []).append(str(k))
    return groups


def find_gru(mapping: Mapping[str, Any], prefix: str | None = None,
             reset_after: bool | Sequence[bool] = True) -> tuple[Mapping[str, Any], str, dict]:
    """Locates one GRU in a state_dict.

    Returns (state_dict, prefix, description) where description holds
    input_size and a list of layers with their weights in PyTorch layout, as
    found (numpy arrays or lazy tensors of a file, not yet read or copied:
    :func:`image_from_layers` does that once the C core has checked the
    sizes against its limits).  Every shape is checked here.
    """
    if not isinstance(mapping, Mapping):
        raise GruliteError(f"expected a mapping of tensor names to arrays (a state_dict); "
                           f"got {type(mapping).__name__}")
    sd = _unwrap_checkpoint(mapping)
    groups = _groups(sd)
    if prefix is not None:
        p = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        if p not in groups:
            found = ", ".join(repr(g.rstrip(".")) for g in sorted(groups)) or "none"
            raise GruliteError(f"no GRU tensors under prefix {prefix!r} "
                               f"(looked for {p}weight_ih_l0); GRUs found under: {found}")
    else:
        if not groups:
            sample = ", ".join(list(map(str, sd))[:8])
            raise GruliteError("no GRU tensors found: expected keys like 'gru.weight_ih_l0', "
                               f"'gru.weight_hh_l0' (PyTorch nn.GRU); the keys are: {sample}"
                               + (" ..." if len(sd) > 8 else ""))
        if len(groups) > 1:
            names = ", ".join(repr(g.rstrip(".")) for g in sorted(groups))
            raise GruliteError(f"several GRUs in this state_dict, under prefixes {names}; "
                               "choose one with prefix= (--prefix on the command line)")
        p = next(iter(groups))

    def get(name: str) -> Any:
        key = p + name
        return to_array(sd[key], key) if key in sd else None

    layer_ids = sorted({int(GRU_KEY.match(k).group("layer")) for k in groups[p]})
    if layer_ids != list(range(len(layer_ids))):
        raise GruliteError(f"GRU layers under {p!r} are {layer_ids}; expected 0..{len(layer_ids) - 1} "
                           "with none missing")
    num_layers = len(layer_ids)
    bidirectional = (p + "weight_ih_l0_reverse") in sd
    if isinstance(reset_after, (bool, np.bool_, int)):
        variants = [bool(reset_after)] * num_layers
    else:
        variants = [bool(v) for v in reset_after]
        if len(variants) != num_layers:
            raise GruliteError(f"reset_after has {len(variants)} entries; the GRU has {num_layers} layers")
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
    desc = dict(input_size=layers[0]["input_size"], layers=layers)
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


def build_image(mapping: Mapping[str, Any], prefix: str | None = None,
                reset_after: bool | Sequence[bool] = True, head: HeadSpec = None,
                batch_first: bool = True, source: str | None = None,
                dtype: str = "float32", head_from: str = "output") -> tuple[bytes, dict]:
    """The .grl image of the GRU (and head) in `mapping`, and a summary:
    ``prefix``, ``layers``, ``dense``, ``parameters``, ``tensors`` (the
    names used) and ``unused`` (the state_dict's other tensors)."""
    sd, p, desc = find_gru(mapping, prefix, reset_after)
    layers = desc["layers"]
    dense = find_head(sd, parse_head(head), _output_width(layers))
    used = _used_names(p, layers, dense)
    meta = {
        "source": source,
        "prefix": p.rstrip("."),
        "tensors": {k: list(to_array(sd[k], k).shape) for k in used},
        "head": [[d["name"], d["activation"]] for d in dense],
    }
    try:
        image = image_from_layers(desc["input_size"], layers, dense, meta, batch_first, dtype,
                                  head_from)
    except GruliteError as e:                  # C names the field; say which tensors it is
        n = len(layers)
        which = f"GRU {p}*_l0" if n == 1 else f"GRU {p}*_l0 .. {p}*_l{n - 1} ({n} layers)"
        if dense:
            which += ", head " + ", ".join(d["name"] for d in dense)
        raise GruliteError(f"{which}: {e}") from None
    names = set(used)
    # Tensors by their type (a property of the class: nothing is read or computed).
    unused = [str(k) for k, v in sd.items() if str(k) not in names and hasattr(type(v), "shape")]
    summary = dict(prefix=p.rstrip("."), layers=layers, dense=dense,
                   parameters=count_parameters(layers, dense), tensors=used, unused=unused)
    return image, summary


def _output_width(layers: list) -> int:
    return int(layers[-1]["num_directions"] * layers[-1]["hidden_size"])


def _used_names(p: str, layers: list, dense: list) -> list[str]:
    used = []
    for k, lay in enumerate(layers):
        for sfx in (["", "_reverse"][:lay["num_directions"]]):
            used += [f"{p}weight_ih_l{k}{sfx}", f"{p}weight_hh_l{k}{sfx}"]
            if lay["bias"]:
                used += [f"{p}bias_ih_l{k}{sfx}", f"{p}bias_hh_l{k}{sfx}"]
    for d in dense:
        used.append(f"{d['name']}.weight")
        if d["bias"] is not None:
            used.append(f"{d['name']}.bias")
    return used
