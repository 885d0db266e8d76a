"""Importing Keras 3 ``.keras`` archives (GRU layers + Dense head), without keras.

A ``.keras`` file is a zip holding ``config.json`` (the layer graph) and
``model.weights.h5`` (the variables).  This module reads both with the
standard library and h5py (the optional extra ``grulite[keras]``), maps the
layers onto grulite's and builds the .grl image with
:func:`grulite.importers._image.image_from_layers`.

What maps, and how
------------------
* ``Sequential`` models and functional models that are a single chain
  (input -> layer -> layer -> output, no branches, no shared layers).
* ``GRU`` (and ``RNN(GRUCell(...))``).  Keras keeps the gates in the order
  z, r, h in ``kernel`` (I, 3H) and ``recurrent_kernel`` (H, 3H); they become
  PyTorch's (3H, I) / (3H, H) in the order r, z, n.  ``reset_after=True``
  has a bias (2, 3H): row 0 input, row 1 recurrent.  ``reset_after=False``
  has one bias (3H,), which is all input bias (b_hh = 0).  ``use_bias=False``
  gives a layer without bias.  Keras' update rule ``h = z*h_prev + (1-z)*hh``
  is PyTorch's, so no sign change is needed.  ``dropout`` /
  ``recurrent_dropout`` do nothing at inference and are ignored.
* ``recurrent_activation`` (grulite's gate function f, for r and z) and
  ``activation`` (the candidate's g), per layer and direction: every Keras
  activation that is one of the C core's GRU functions (docs/variants.md).
  tanh, sigmoid, relu, softsign and softplus are themselves; linear is
  affine(1, 0); elu is elu(1), and so is celu (celu(x, 1) = elu(x, 1));
  leaky_relu is leaky_relu(0.2) (Keras 3's negative_slope); hard_sigmoid
  is hard_sigmoid(1/6, 0.5) (Keras 3's relu6(x + 3) / 6) or, in an archive
  whose metadata.json says Keras 2 or older wrote it (the late tf.keras 2
  releases write .keras archives too; legacy .h5 files are refused),
  hard_sigmoid(0.2, 0.5) (Keras 2's clip(0.2 x + 0.5, 0, 1)); an archive
  without a version is read as Keras 3's;
  sparse_sigmoid is hard_sigmoid(0.5, 0.5).  Anything else (gelu,
  silu / swish, selu, relu6, exponential, mish, hard_silu, softmax,
  custom functions, ...) is refused with a message naming the layer, the
  attribute and the activation.
* ``go_backwards=True``: Keras flips the sequence, runs forward and returns
  the outputs *in processing order*: its output step t belongs to input step
  T-1-t.  grulite keeps every output at its own input step (as torch does),
  so such a layer is a ``reverse=True`` layer and the Keras sequence output
  is grulite's ``y[:, ::-1]``.  A layer after it sees the flipped sequence:
  in grulite's terms it runs backwards in time (two go_backwards layers in a
  row run forwards again).  ``summary["time_reversed"]`` (and the model's
  metadata ``keras.time_reversed``) says whether the Keras output sequence
  is in reversed order.
* ``Bidirectional(GRU)`` -> a bidirectional layer (Keras flips the
  backward outputs back to input order, as grulite does), its directions
  concatenated (``merge_mode="concat"``) or merged feature by feature
  (``"sum"``, ``"mul"``, ``"ave"``: a merge layer follows it, and a head on
  its last output reads the merged final states, as Keras' does).
  Each direction keeps its own activations (an explicit ``backward_layer``
  may have others).  ``merge_mode=None`` is refused; so is a wrapped GRU
  with go_backwards=True and a Bidirectional layer reading a time-reversed
  sequence.
* Layers may differ in size; every GRU but the last must return sequences.
* ``Dense`` (also inside ``TimeDistributed``) with activation linear, relu,
  tanh, sigmoid or softmax, one or several, after the last GRU -> the head.
  An ``Activation`` / ``ReLU`` / ``Softmax`` layer right after a linear Dense
  is folded into it.  After a GRU with ``return_sequences=False`` the head is
  on the last step (``model.predict(x)``); after one that returns sequences
  Keras applies Dense to every step: ``model.predict(x, all_steps=True)``
  (flipped when time_reversed).  grulite's head reads the top layer's output
  at the last time step, which is Keras' last output for a forward top
  layer; after a Bidirectional or go_backwards top GRU with
  ``return_sequences=False`` the head reads the final states instead
  (``head_from="state"``), as Keras does.
* Dropout-like layers (identity at inference) and ``InputLayer`` are
  skipped.
* ``Masking(mask_value=v)`` on the model's input (before the first GRU;
  one of them): v goes into the model's metadata (``"mask_value"``,
  ``Model.mask_value``) and a call given no ``lengths=`` computes them from
  x (``Model.mask_lengths``; ``grulite run`` too): a step is masked when
  every feature equals v (Keras' rule, in float32), and a row's length is
  its steps up to its last unmasked one.  grulite runs trailing padding
  only: a masked step followed by an unmasked one (Keras skips it and goes
  on) raises a GruliteError naming the row and the step, and so does a row
  masked at every step (Keras gives it its initial state, zeros; grulite
  needs one step per row).  Explicit ``lengths=`` override the mask.  The
  final states, the head's output and y at the valid steps are Keras'; y
  past a row's length is 0, where Keras repeats the last output (a
  Bidirectional layer, a go_backwards layer, whose padded steps come
  first, and ``zero_output_for_mask=True`` give 0 there too), and a
  per-step head gives 0 there too.  A functional
  model saves the mask as NotEqual / Any ops handed to the layers after
  Masking; they are checked to be Masking's rule and left out of the chain.
  Refused with Masking: Masking after a GRU or Dense layer, a second
  Masking, a mask_value that is not one number, a GRU reading the output
  of a go_backwards GRU (Keras hands it the reversed outputs with the mask
  unreversed, so it reads padding as data) and
  ``zero_output_for_mask=True`` on a GRU returning its last output (Keras
  then returns zeros for a padded row).  ``mask_value=nan`` masks nothing,
  in Keras and in grulite, and is not recorded.

Keras outputs in grulite's terms (``summary["outputs"]`` lists them):
a GRU that returns sequences -> ``y`` (``y[:, ::-1]`` when time_reversed);
one that does not -> its final state ``h_n`` (the top layer's; both
directions concatenated for Bidirectional); ``return_state`` states ->
``h_n`` of that layer; a head -> ``predict``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import zipfile
from typing import Any, Callable, Optional, Union

import numpy as np

from grulite._errors import GruliteError, reading
from grulite.importers._image import count_parameters, image_from_layers

__all__ = ["image"]

_NEEDS_H5PY = "reading .keras needs h5py: pip install grulite[keras]"

# Layers that are the identity at inference.
_IDENTITY = {"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
             "ActivityRegularization"}
_ACTIVATIONS = {"linear": "none", "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid",
                "softmax": "softmax"}

# Keras activations that are exactly one of the C core's GRU functions
# (grulite/_activations.py): name -> (grulite name, alpha, beta).  Keras 3's
# hard_sigmoid is relu6(x + 3) / 6, its leaky_relu has negative_slope 0.2,
# its elu and celu alpha 1 (celu(x, 1) is elu(x, 1)); sparse_sigmoid is
# clip(0.5 (x + 1), 0, 1).
_GRU_ACTIVATIONS = {
    "tanh": ("tanh", 0.0, 0.0), "sigmoid": ("sigmoid", 0.0, 0.0), "relu": ("relu", 0.0, 0.0),
    "linear": ("affine", 1.0, 0.0), "hard_sigmoid": ("hard_sigmoid", 1.0 / 6.0, 0.5),
    "sparse_sigmoid": ("hard_sigmoid", 0.5, 0.5), "elu": ("elu", 1.0, 0.0),
    "celu": ("elu", 1.0, 0.0), "softsign": ("softsign", 0.0, 0.0),
    "softplus": ("softplus", 0.0, 0.0), "leaky_relu": ("leaky_relu", 0.2, 0.0),
}
# Keras 2 (and older): hard_sigmoid is clip(0.2 x + 0.5, 0, 1).
_GRU_ACTIVATIONS_KERAS2 = {"hard_sigmoid": ("hard_sigmoid", 0.2, 0.5)}
_DEFAULT_PAIR = (("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0))

# Sizes checked before a member is read.  config.json of a model grulite can
# map (at most 64 GRU and 64 Dense layers) is a few KB per layer;
# metadata.json is ~100 bytes.  model.weights.h5 is read into memory: as
# large as the archive says, unless it inflates more than _MAX_H5_RATIO
# times (float weights hardly deflate; only the HDF5 headers of a small file
# do, which _H5_SMALL covers).
_MAX_JSON_BYTES = 8 << 20
_MAX_H5_RATIO = 32
_H5_SMALL = 64 << 20
# A dataset may claim at most this many times the bytes it stores (Keras
# writes every variable in full, uncompressed; HDF5 fills unwritten chunks).
_MAX_DATASET_RATIO = 64


# ---------------------------------------------------------------------------
# the archive


def _h5py():
    try:
        import h5py
    except ImportError:
        raise GruliteError(_NEEDS_H5PY) from None
    return h5py


def _check_member_size(name: str, info: zipfile.ZipInfo) -> None:
    """Refuses a member whose (inflated) size is more than a .keras needs."""
    m, size = info.filename, info.file_size
    if m.endswith(".json") and size > _MAX_JSON_BYTES:
        raise GruliteError(f"{name!r}: {m} declares {size} bytes; more than the "
                           f"{_MAX_JSON_BYTES} a model description needs")
    if size > _H5_SMALL and size > _MAX_H5_RATIO * info.compress_size:
        raise GruliteError(f"{name!r}: {m} declares {size} bytes compressed into "
                           f"{info.compress_size}; float weights do not deflate more than "
                           f"{_MAX_H5_RATIO}:1")


def _read_archive(path: str) -> tuple:
    """(config dict, h5py.File, keras metadata dict) of a .keras zip (or an
    unzipped .keras directory)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    h5py = _h5py()
    name = os.path.basename(path.rstrip("/\\"))
    if os.path.isdir(path):
        members = set(os.listdir(path))

        def read(m: str) -> bytes:
            p = os.path.join(path, m)
            if not os.path.isfile(p):
                raise GruliteError(f"{name!r}: {m} is not a regular file")
            size = os.path.getsize(p)
            if m.endswith(".json") and size > _MAX_JSON_BYTES:
                raise GruliteError(f"{name!r}: {m} has {size} bytes; more than the "
                                   f"{_MAX_JSON_BYTES} a model description needs")
            with open(p, "rb") as f:
                return f.read()
    else:
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"\x89HDF"):
            raise GruliteError(f"{name!r} is a legacy Keras HDF5 (.h5) file; grulite reads the "
                               "Keras 3 .keras format: re-save with model.save('model.keras')")
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise GruliteError(f"{name!r} is not a .keras archive (a zip holding config.json and "
                               f"model.weights.h5): {e}") from None
        with zf:
            members = set(zf.namelist())
            blobs = {}
            for m in ("config.json", "model.weights.h5", "metadata.json"):
                if m in members:
                    _check_member_size(name, zf.getinfo(m))
                    try:
                        blobs[m] = zf.read(m)
                    except Exception as e:  # BadZipFile (CRC), zlib.error, EOFError, ...
                        raise GruliteError(f"{name!r}: cannot read {m} from the archive: "
                                           f"{e}") from None

        def read(m: str) -> bytes:
            return blobs[m]
    if "config.json" not in members:
        raise GruliteError(f"{name!r} has no config.json; a .keras archive holds config.json and "
                           f"model.weights.h5 (found: {', '.join(sorted(members)) or 'nothing'})")
    if "model.weights.h5" not in members:
        sharded = " (sharded weights are not supported)" if "model.weights.json" in members else ""
        raise GruliteError(f"{name!r} has no model.weights.h5{sharded}; found: "
                           f"{', '.join(sorted(members))}")
    try:
        config = json.loads(read("config.json").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise GruliteError(f"{name!r}: config.json is not valid JSON: {e}") from None
    except RecursionError:
        raise GruliteError(f"{name!r}: config.json is nested too deeply to be a model "
                           "description") from None
    if not isinstance(config, dict):
        raise GruliteError(f"{name!r}: config.json holds a {type(config).__name__}; expected a "
                           "model description (an object with class_name and config)")
    meta = {}
    if "metadata.json" in members:
        try:
            meta = json.loads(read("metadata.json").decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            meta = {}               # only the Keras version is read from it
    try:
        h5 = h5py.File(io.BytesIO(read("model.weights.h5")), "r")
    except Exception as e:  # OSError for a truncated or non-HDF5 file
        raise GruliteError(f"{name!r}: model.weights.h5 is not a readable HDF5 file: {e}") from None
    return config, h5, (meta if isinstance(meta, dict) else {})


# ---------------------------------------------------------------------------
# the layer chain


def _snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case: how the weights file names groups."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_name(spec: dict) -> str:
    cfg = spec.get("config") or {}
    return str(spec.get("name") or cfg.get("name") or "?")


def _history(obj: Any, out: list) -> list:
    """Every keras_history [layer, node, tensor] in a node's args/kwargs
    (also the older form of inbound nodes, [[layer, node, tensor, kwargs]])."""
    if isinstance(obj, list) and len(obj) == 4 and isinstance(obj[0], str) \
            and isinstance(obj[1], int) and isinstance(obj[2], int) and isinstance(obj[3], dict):
        out.append((obj[0], obj[1], obj[2]))
        return _history(obj[3], out)
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = (obj.get("config") or {}).get("keras_history")
            if isinstance(h, list) and len(h) == 3:
                out.append((str(h[0]), int(h[1]), int(h[2])))
            return out
        for v in obj.values():
            _history(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _history(v, out)
    return out


def _refs(value: Any) -> list:
    """[name, node, tensor] triples of input_layers / output_layers (flat or nested)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [(value[0], int(value[1]), int(value[2]))]
    out = []
    if isinstance(value, (list, tuple)):
        for v in value:
            out += _refs(v)
    elif isinstance(value, dict):
        for v in value.values():
            out += _refs(v)
    return out


# The ops a functional model saves to compute Masking's mask for the layers
# after it: any(not_equal(x, mask_value), axis=-1), handed to them as their
# ``mask`` argument.
_MASK_OPS = ("NotEqual", "Any")


def _split_mask(node: Any) -> tuple:
    """(the node without its ``mask`` argument, the mask's keras_history)."""
    masks = []
    if isinstance(node, dict) and isinstance(node.get("kwargs"), dict) and "mask" in node["kwargs"]:
        kwargs = dict(node["kwargs"])
        masks.append(kwargs.pop("mask"))
        node = dict(node, kwargs=kwargs)
    return node, _history(masks, [])


def _number(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _check_mask_ops(source: str, by_name: dict, sources: dict, masked: dict) -> None:
    """Checks that every ``mask`` argument of the chain is Masking's rule:
    Any(NotEqual(t, v), axis=-1) with t the Masking layer's input and v its
    mask_value.  sources: layer -> the layer its data comes from; masked:
    layer -> the layer its mask comes from."""
    maskings = [n for n, s in by_name.items() if s.get("class_name") == "Masking"]
    for user, src in masked.items():
        bad = f"{source}: the mask given to layer {user!r} "
        spec = by_name.get(src) or {}
        cfg = spec.get("config") or {}
        if spec.get("class_name") != "Any" or cfg.get("axis") not in (-1, [-1]) or \
                cfg.get("keepdims"):
            raise GruliteError(bad + f"comes from {src!r} ({spec.get('class_name')}); grulite "
                               "imports the mask of a Masking layer only")
        ne = by_name.get(sources.get(src, "")) or {}
        node = (ne.get("inbound_nodes") or [{}])[0]
        args = node.get("args") if isinstance(node, dict) else None
        hist = _history(args, [])
        v = _number(args[1]) if isinstance(args, list) and len(args) == 2 else None
        if ne.get("class_name") != "NotEqual" or len(hist) != 1 or v is None:
            raise GruliteError(bad + "is not any(not_equal(x, value), axis=-1); grulite imports "
                               "the mask of a Masking layer only")
        ok = False
        for m in maskings:
            mv = _number((by_name[m].get("config") or {}).get("mask_value", 0.0))
            if sources.get(m) == hist[0][0] and mv is not None and \
                    (mv == v or (math.isnan(mv) and math.isnan(v))):
                ok = True
        if not ok:
            raise GruliteError(bad + f"compares {hist[0][0]!r} with {v!r}, which is not what a "
                               "Masking layer of the model does; grulite imports the mask of a "
                               "Masking layer only")


def _chain(config: dict, source: str) -> tuple:
    """(layer specs in order, model outputs as (layer, tensor index)) of a
    Sequential or single-chain functional model."""
    cls = config.get("class_name")
    body = config.get("config") or {}
    specs = body.get("layers")
    if cls == "Sequential":
        if not isinstance(specs, list):
            raise GruliteError(f"{source}: Sequential config has no layer list")
        for s in specs:
            if s.get("class_name") in ("Sequential", "Functional", "Model"):
                raise GruliteError(f"{source}: nested model {_layer_name(s)!r} inside the "
                                   "Sequential; only flat models are supported")
        return specs, None
    if cls in ("Functional", "Model") and isinstance(specs, list):
        by_name = {_layer_name(s): s for s in specs}
        inputs = _refs(body.get("input_layers"))
        outputs = _refs(body.get("output_layers"))
        if len(inputs) != 1:
            raise GruliteError(f"{source}: the model has {len(inputs)} inputs; grulite imports "
                               "models with one input sequence")
        consumers: dict = {}
        sources: dict = {}          # layer -> the layer its data comes from
        masked: dict = {}           # layer -> the layer its mask argument comes from
        for s in specs:
            nodes = s.get("inbound_nodes") or []
            if s.get("class_name") == "InputLayer":
                continue
            name = _layer_name(s)
            if s.get("class_name") in ("Sequential", "Functional", "Model"):
                raise GruliteError(f"{source}: nested model {name!r}; only flat models are "
                                   "supported")
            if len(nodes) != 1:
                raise GruliteError(f"{source}: layer {name!r} is called {len(nodes)} times; "
                                   "shared layers are not supported")
            node, mask_hist = _split_mask(nodes[0])
            hist = _history(node, [])
            if s.get("class_name") in _MASK_OPS and len(hist) == 1:
                # Masking's mask, computed again by the saved model: not on the chain
                sources[name] = hist[0][0]
                continue
            if len(mask_hist) > 1:
                raise GruliteError(f"{source}: layer {name!r} takes {len(mask_hist)} masks; "
                                   "grulite imports a single chain of layers")
            if mask_hist:
                masked[name] = mask_hist[0][0]
            if len(hist) != 1:
                extra = "" if not hist else " (an initial_state input or a merge)"
                raise GruliteError(f"{source}: layer {name!r} takes {len(hist)} tensors{extra}; "
                                   "grulite imports a single chain of layers")
            src, _, tensor = hist[0]
            if tensor != 0:
                raise GruliteError(f"{source}: layer {name!r} reads output {tensor} of {src!r} "
                                   "(a state); grulite imports chains fed by each layer's "
                                   "main output")
            consumers.setdefault(src, []).append(name)
            sources[name] = src
        order = []
        cur = inputs[0][0]
        seen = {cur}
        while cur in consumers:
            nxt = consumers[cur]
            if len(nxt) != 1:
                raise GruliteError(f"{source}: the output of {cur!r} feeds {', '.join(nxt)}; "
                                   "grulite imports a single chain of layers (no branches)")
            cur = nxt[0]
            if cur in seen or cur not in by_name:
                raise GruliteError(f"{source}: the layer graph is not a chain at {cur!r}")
            seen.add(cur)
            order.append(by_name[cur])
        used_ops = set(masked.values())
        used_ops |= {sources[n] for n in used_ops if n in sources}
        unused = [n for n, s in by_name.items() if n not in seen and n not in used_ops
                  and s.get("class_name") != "InputLayer"]
        if unused:
            raise GruliteError(f"{source}: layers {', '.join(unused)} are not on the chain from "
                               "the input; grulite imports a single chain of layers")
        last = _layer_name(order[-1]) if order else inputs[0][0]
        bad = [o[0] for o in outputs if o[0] != last]
        if not outputs or bad:
            raise GruliteError(f"{source}: the model's outputs come from {', '.join(bad) or 'nowhere'}; "
                               f"grulite imports models whose outputs are those of the last "
                               f"layer ({last!r})")
        _check_mask_ops(source, by_name, sources, masked)
        head_spec = by_name.get(inputs[0][0])
        return ([head_spec] if head_spec else []) + order, [o[2] for o in outputs]
    raise GruliteError(f"{source}: top-level class {cls!r} is not a Sequential or functional "
                       "model (subclassed models keep no layer graph in config.json)")


@contextlib.contextmanager
def _h5_errors(source: str, what: str):
    """Whatever h5py raises on a damaged model.weights.h5 (RuntimeError,
    OSError, KeyError, ...) as a GruliteError naming the file and `what`."""
    try:
        yield
    except (GruliteError, MemoryError):
        raise
    except Exception as e:                      # noqa: BLE001 - h5py raises almost anything
        raise GruliteError(f"{source}: model.weights.h5 is damaged: cannot read {what} "
                           f"({type(e).__name__}: {str(e)[:200]})") from None


class _Var:
    """A variable of model.weights.h5 before it is read: its dataset, name
    and shape."""

    __slots__ = ("ds", "name", "shape", "bf16")

    def __init__(self, ds: Any, name: str, shape: tuple, bf16: bool):
        self.ds, self.name, self.shape, self.bf16 = ds, name, shape, bf16

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class _Weights:
    """The variable groups of model.weights.h5, by layer name."""

    def __init__(self, h5: Any, specs: list, source: str):
        self.h5 = h5
        self.source = source
        self.by_name: dict = {}
        with _h5_errors(source, "the layer groups"):
            root = h5.get("layers")
            groups = list(root.keys()) if root is not None and hasattr(root, "keys") else []
            for g in groups:        # Keras >= 3.x stores the layer name on <group>/vars
                v = root[g].get("vars") if hasattr(root[g], "get") else None
                nm = v.attrs.get("name") if v is not None else None
                if isinstance(nm, bytes):
                    nm = nm.decode("utf-8", "replace")
                if nm:
                    self.by_name.setdefault(str(nm), "layers/" + g)
        used: dict = {}             # else: snake_case(class) + _1, _2 in layer order
        for s in specs:
            base = _snake(str(s.get("class_name", "")))
            if base in used:
                used[base] += 1
                path = f"{base}_{used[base]}"
            else:
                used[base] = 0
                path = base
            self.by_name.setdefault(_layer_name(s), "layers/" + path)

    def vars(self, lname: str, sub: str = "") -> list:
        """The variables <layer group>/<sub>vars/0, 1, ... (float datasets
        stored in the file) as _Var, not read yet: check their ``shape``
        first, then ``read`` them."""
        h5py = _h5py()
        path = self.by_name.get(lname)
        full = f"{path}/{sub}vars" if path else None
        with _h5_errors(self.source, full or lname):
            grp = self.h5.get(full) if full else None
            if grp is None or not hasattr(grp, "keys"):
                raise GruliteError(f"{self.source}: no weights for layer {lname!r} in "
                                   f"model.weights.h5 (looked for {full})")
            keys = sorted((k for k in grp.keys() if k.isdigit()), key=int)
            if keys != [str(i) for i in range(len(keys))]:
                raise GruliteError(f"{self.source}: {full} holds variables {keys}; expected "
                                   "0..n-1")
            out = []
            for k in keys:
                ds = grp[k]
                where = f"{self.source}: {full}/{k}"
                if not isinstance(ds, h5py.Dataset) or ds.shape is None:
                    raise GruliteError(f"{where} is not an array")
                bf16 = ds.attrs.get("dtype") in ("bfloat16", b"bfloat16")
                if ds.dtype.kind != "f" and not (bf16 and ds.dtype == np.uint16):
                    raise GruliteError(f"{where} has dtype {ds.dtype}; expected float weights "
                                       "(quantized layers are not supported)")
                if ds.is_virtual or ds.external:
                    raise GruliteError(f"{where} keeps its data outside model.weights.h5")
                out.append(_Var(ds, f"{full}/{k}", tuple(int(n) for n in ds.shape), bf16))
        return out

    def read(self, v: _Var) -> np.ndarray:
        """A variable from ``vars`` (its shape checked) as float32."""
        with _h5_errors(self.source, v.name):
            stored = v.ds.id.get_storage_size()
            nbytes = v.size * v.ds.dtype.itemsize
            if nbytes > _MAX_DATASET_RATIO * stored + 4096:
                raise GruliteError(f"{self.source}: {v.name} in model.weights.h5 has shape "
                                   f"{v.shape} ({nbytes} bytes) but stores {stored} bytes; "
                                   "its values were never written")
            a = np.asarray(v.ds[()])
        if v.bf16 and a.dtype == np.uint16:
            a = (a.astype(np.uint32) << 16).view(np.float32)
        if a.shape != v.shape or a.dtype.kind != "f":
            raise GruliteError(f"{self.source}: {v.name} in model.weights.h5 read as "
                               f"{a.dtype} {a.shape}; expected float {v.shape}")
        return a.astype(np.float32)


def _act_name(value: Any) -> str:
    """The name of a Keras activation given as a string or serialized.

    Keras writes its own activations as their name ("tanh"); a dict is an
    older spelling of one (module ``keras...``, registered name = name) or
    a custom function / object, which comes back with a "custom " prefix
    so that no table here takes it for a built-in."""
    if isinstance(value, dict):
        cfg = value.get("config")
        name = cfg if isinstance(cfg, str) else (cfg or {}).get("name") or value.get("class_name")
        module, reg = value.get("module"), value.get("registered_name")
        keras_module = module is None or str(module).startswith("keras")
        if isinstance(cfg, str) and keras_module and reg in (None, name):
            return str(name)
        where = "" if keras_module or module == "builtins" else f" (module {module})"
        return f"custom {name}{where}"
    return "linear" if value is None else str(value)


def _act(value: Any, where: str) -> str:
    """grulite's activation name for a Keras activation."""
    name = _act_name(value)
    if name not in _ACTIVATIONS:
        raise GruliteError(f"{where}: activation {name!r} is not supported; expected one of "
                           f"{', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _check_dtype(cfg: dict, where: str) -> None:
    pol = cfg.get("dtype")
    name = pol
    if isinstance(pol, dict):
        name = (pol.get("config") or {}).get("name") or pol.get("class_name")
        if "Quantized" in str(pol.get("class_name", "")):
            name = "quantized " + str(name)
    if name is not None and re.search(r"int8|int4|float8|quantized|gptq", str(name)):
        raise GruliteError(f"{where}: dtype policy {name!r} (quantized) is not supported; "
                           "import the float model and use dtype='int8' in grulite")


def _is_gru(spec: dict) -> bool:
    """GRU, RNN(GRUCell) or Bidirectional of one of those."""
    cls = spec.get("class_name")
    cfg = spec.get("config") or {}
    if cls == "Bidirectional":
        return _is_gru(cfg.get("layer") or {})
    if cls == "RNN":
        return (cfg.get("cell") or {}).get("class_name") == "GRUCell"
    return cls == "GRU"


def _gru_cell(spec: dict, where: str) -> tuple:
    """(cell config, rnn config, class description) of GRU or RNN(GRUCell)."""
    cls = spec.get("class_name")
    cfg = spec.get("config") or {}
    if cls == "GRU":
        return cfg, cfg
    if cls == "RNN":
        cell = cfg.get("cell") or {}
        if cell.get("class_name") != "GRUCell":
            raise GruliteError(f"{where}: RNN with a {cell.get('class_name')!r} cell; only "
                               "GRUCell is supported")
        return cell.get("config") or {}, cfg
    raise GruliteError(f"{where}: {cls!r} is not a GRU")


def _gru_direction(weights: list, cell: dict, in_size: int, where: str,
                   read: Callable[[Any], np.ndarray]) -> tuple:
    """PyTorch-layout (w_ih, w_hh, b_ih, b_hh) of one Keras GRU cell's weights
    (datasets: their shapes are checked, then `read` reads them)."""
    H = int(cell.get("units", 0))
    use_bias = bool(cell.get("use_bias", True))
    reset_after = bool(cell.get("reset_after", True))
    want = 3 if use_bias else 2
    if len(weights) != want or H < 1:
        raise GruliteError(f"{where}: {len(weights)} weight arrays for a GRU with units={H}, "
                           f"use_bias={use_bias}; expected {want} (kernel, recurrent_kernel"
                           f"{', bias' if use_bias else ''})")
    K, U = weights[0], weights[1]
    if K.shape != (in_size, 3 * H):
        raise GruliteError(f"{where}: kernel has shape {K.shape}; expected (input, 3*units) = "
                           f"{(in_size, 3 * H)}")
    if U.shape != (H, 3 * H):
        raise GruliteError(f"{where}: recurrent_kernel has shape {U.shape}; expected (units, "
                           f"3*units) = {(H, 3 * H)}")
    want_b = (2, 3 * H) if reset_after else (3 * H,)
    if use_bias and weights[2].shape != want_b:
        raise GruliteError(f"{where}: bias has shape {weights[2].shape}; expected {want_b} for "
                           f"reset_after={reset_after}")
    perm = np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])
    w_ih, w_hh = read(K)[:, perm].T, read(U)[:, perm].T
    b_ih = b_hh = None
    if use_bias:
        b = read(weights[2])
        if reset_after:
            b_ih, b_hh = b[0][perm], b[1][perm]
        else:
            b_ih, b_hh = b[perm], np.zeros(3 * H, np.float32)
    return (np.ascontiguousarray(w_ih), np.ascontiguousarray(w_hh), b_ih, b_hh)


def keras2(version: Any) -> bool:
    """Whether a keras_version (metadata.json) is Keras 2 or older (whose
    hard_sigmoid is clip(0.2 x + 0.5, 0, 1)); unknown versions are Keras 3."""
    m = re.match(r"\s*(\d+)\.", str(version)) if version is not None else None
    return bool(m) and int(m.group(1)) < 3


def gru_activation(name: str, keras_2: bool = False) -> Optional[tuple]:
    """grulite's ``(name, alpha, beta)`` for a Keras activation, or None when
    it is none of the C core's GRU functions.  ``keras_2``: the archive was
    written by Keras 2 (hard_sigmoid differs)."""
    if keras_2 and name in _GRU_ACTIVATIONS_KERAS2:
        return _GRU_ACTIVATIONS_KERAS2[name]
    return _GRU_ACTIVATIONS.get(name)


def _gru_activations(cell: dict, where: str, keras_2: bool) -> tuple:
    """(f, g) of a GRU cell: recurrent_activation (r and z) and activation (n)."""
    pair = []
    for attr, default in (("recurrent_activation", "sigmoid"), ("activation", "tanh")):
        name = _act_name(cell.get(attr, default))
        act = gru_activation(name, keras_2)
        if act is None:
            what = "a custom function" if name.startswith("custom ") else "not supported"
            raise GruliteError(
                f"{where}: {attr}={name.removeprefix('custom ')!r} is {what}; grulite maps the "
                f"Keras activations that are one of its GRU functions: "
                f"{', '.join(_GRU_ACTIVATIONS)}")
        pair.append(act)
    return tuple(pair)


def _check_gru_cfg(cell: dict, rnn: dict, where: str, keras_2: bool = False) -> tuple:
    """Checks a GRU (or a Bidirectional's direction); returns its (f, g)."""
    pair = _gru_activations(cell, where, keras_2)
    _check_dtype(cell, where)
    _check_dtype(rnn, where)
    return pair


# ---------------------------------------------------------------------------
# the mapping


class _Mapper:
    """Walks the layer chain, collecting grulite layers and head layers.

    State between layers: ``width`` of the current tensor's features,
    ``seq`` (it is a sequence, not a last output) and ``parity`` (the
    sequence is in reversed time order, after an odd number of
    go_backwards layers).
    """

    def __init__(self, weights: _Weights, source: str, keras_2: bool = False):
        self.weights = weights
        self.source = source
        self.keras_2 = keras_2
        self.masking: Optional[str] = None       # the Masking layer's name, when there is one
        self.mask_value: Optional[float] = None  # its mask_value (None: NaN, masks nothing)
        self.layers: list = []
        self.dense: list = []
        self.width: Optional[int] = None
        self.declared_in: Optional[int] = None   # InputLayer's last dimension
        self.seq = True
        self.parity = False
        self.last_gru: dict = {}
        self.n_params = 0

    def add(self, spec: dict) -> None:
        cls = str(spec.get("class_name"))
        cfg = spec.get("config") or {}
        where = f"{self.source} layer {_layer_name(spec)!r} ({cls})"
        if cls == "InputLayer":
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if isinstance(shape, list) and shape and isinstance(shape[-1], int):
                self.declared_in = int(shape[-1])
        elif cls in _IDENTITY:
            pass
        elif cls == "Masking":
            self.mask(cfg, where)
        elif cls in ("GRU", "RNN", "Bidirectional"):
            self.recurrent(spec, cls, cfg, where)
        elif cls in ("Dense", "TimeDistributed"):
            self.dense_layer(spec, cls, cfg, where)
        elif cls in ("Activation", "ReLU", "Softmax"):
            self.activation(cls, cfg, where)
        else:
            raise GruliteError(f"{where}: layer type {cls!r} is not supported (grulite imports "
                               "GRU, RNN(GRUCell), Bidirectional(GRU), Dense, "
                               "TimeDistributed(Dense), Activation, Dropout and InputLayer)")

    def mask(self, cfg: dict, where: str) -> None:
        """Masking: its mask_value goes into the model's metadata, and the
        model computes lengths from it (a step is masked when every feature
        equals it; grulite takes trailing padding only)."""
        if self.layers or self.dense:
            raise GruliteError(f"{where}: Masking after a GRU or Dense layer is not imported; "
                               "grulite applies the mask value to the model's input (Masking "
                               "as the first layer)")
        if self.masking is not None:
            raise GruliteError(f"{where}: a second Masking layer (after {self.masking!r}); "
                               "grulite imports one Masking layer on the model's input")
        v = cfg.get("mask_value", 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise GruliteError(f"{where}: mask_value={v!r}; grulite imports a single number (a "
                               "step is masked when every feature equals it)")
        self.masking = str(cfg.get("name") or "masking")
        # NaN equals nothing: Keras masks no step, and neither does grulite.
        self.mask_value = None if math.isnan(v) else float(v)

    def recurrent(self, spec: dict, cls: str, cfg: dict, where: str) -> None:
        """GRU, RNN(GRUCell) or Bidirectional(GRU)."""
        if self.dense:
            raise GruliteError(f"{where}: a recurrent layer after Dense layers; grulite's head "
                               "must come after the last GRU")
        if not self.seq:
            raise GruliteError(f"{where}: its input is the last output of the GRU before it "
                               "(return_sequences=False); every GRU but the last must return "
                               "sequences")
        bidir = cls == "Bidirectional"
        if bidir:
            cells, rnn, subs, pairs, merge = self._bidirectional(cfg, where)
            ret_seq = bool(cfg.get("return_sequences", rnn.get("return_sequences")))
            ret_state = bool(cfg.get("return_state", rnn.get("return_state")))
        else:
            merge = "concat"
            cell, rnn = _gru_cell(spec, where)
            pairs = [_check_gru_cfg(cell, rnn, where, self.keras_2)]
            cells, subs = [cell], ["cell/"]
            ret_seq = bool(rnn.get("return_sequences", False))
            ret_state = bool(rnn.get("return_state", False))
            if self.mask_value is not None and rnn.get("zero_output_for_mask") and not ret_seq:
                raise GruliteError(f"{where}: zero_output_for_mask=True with "
                                   "return_sequences=False after Masking: Keras returns zeros "
                                   "as the last output of a padded row, grulite the output at "
                                   "its last valid step; not imported")
        if self.mask_value is not None and self.parity:
            raise GruliteError(f"{where}: a GRU after a go_backwards GRU, with Masking: Keras "
                               "hands it the go_backwards layer's outputs in reversed time order "
                               "but the input's mask unreversed, so it reads padding as data; "
                               "grulite does not reproduce that (remove Masking and pass "
                               "lengths=, or avoid go_backwards below another GRU)")
        lname = _layer_name(spec)
        dirs = []
        for c, sub, direction in zip(cells, subs, ("forward", "backward")):
            arrays = self.weights.vars(lname, sub)
            if self.width is None:
                if not arrays or arrays[0].ndim != 2:
                    raise GruliteError(f"{where}: kernel missing or not 2-D")
                self.width = int(arrays[0].shape[0])
                if self.declared_in is not None and self.declared_in != self.width:
                    raise GruliteError(f"{where}: kernel has {self.width} input rows; the "
                                       f"model's input has {self.declared_in} features")
            dirs.append(_gru_direction(arrays, c, self.width,
                                       where + (f" {direction}" if bidir else ""),
                                       self.weights.read))
            self.n_params += sum(a.size for a in arrays)
        if not bidir:
            # Keras runs go_backwards layers on the flipped sequence and returns
            # the outputs unflipped: the time order flips at each such layer.
            self.parity = self.parity != bool(rnn.get("go_backwards", False))
        H = int(cells[0].get("units", 0))
        use_bias = bool(cells[0].get("use_bias", True))
        self.layers.append(dict(
            name=lname, input_size=self.width, hidden_size=H, num_directions=len(dirs),
            reverse=self.parity and not bidir, reset_after=bool(cells[0].get("reset_after", True)),
            bias=use_bias, weight_ih=[d[0] for d in dirs], weight_hh=[d[1] for d in dirs],
            bias_ih=[d[2] for d in dirs] if use_bias else [],
            bias_hh=[d[3] for d in dirs] if use_bias else [],
            activations=None if all(p == _DEFAULT_PAIR for p in pairs) else list(pairs),
            clip=None, merge=merge))
        self.width = H if merge != "concat" else len(dirs) * H
        self.seq = ret_seq
        self.last_gru = dict(name=lname, return_sequences=ret_seq, return_state=ret_state)

    def _bidirectional(self, cfg: dict, where: str) -> tuple:
        merge = cfg.get("merge_mode", "concat")
        if merge not in ("concat", "sum", "mul", "ave"):
            raise GruliteError(f"{where}: merge_mode={merge!r}; grulite merges the two "
                               "directions with concat, sum, mul or ave (merge_mode=None, two "
                               "separate outputs, is not imported)")
        fcell, frnn = _gru_cell(cfg.get("layer") or {}, where)
        back = cfg.get("backward_layer")
        if back:
            bcell, brnn = _gru_cell(back, where)
        else:
            bcell, brnn = fcell, dict(frnn, go_backwards=not frnn.get("go_backwards"))
        pairs = [_check_gru_cfg(fcell, frnn, where, self.keras_2),
                 _check_gru_cfg(bcell, brnn, where + " backward layer", self.keras_2)]
        _check_dtype(cfg, where)
        if frnn.get("go_backwards") or not brnn.get("go_backwards"):
            raise GruliteError(f"{where}: the wrapped GRU has go_backwards=True; Bidirectional "
                               "is imported with a forward GRU only")
        for key in ("units", "reset_after", "use_bias"):
            if fcell.get(key, True) != bcell.get(key, True):
                raise GruliteError(f"{where}: forward and backward layers differ in {key} "
                                   f"({fcell.get(key)} vs {bcell.get(key)}); grulite's two "
                                   "directions share one configuration")
        if self.parity:
            raise GruliteError(f"{where}: Bidirectional after a go_backwards layer (its input is "
                               "in reversed time order) is not supported")
        return ([fcell, bcell], frnn, ["forward_layer/cell/", "backward_layer/cell/"], pairs,
                merge)

    def dense_layer(self, spec: dict, cls: str, cfg: dict, where: str) -> None:
        """Dense (or TimeDistributed(Dense)): a head layer."""
        if not self.layers:
            raise GruliteError(f"{where}: a Dense layer before any GRU; grulite's head comes "
                               "after the GRU layers")
        dcfg, sub = cfg, ""
        if cls == "TimeDistributed":
            inner = cfg.get("layer") or {}
            if inner.get("class_name") != "Dense":
                raise GruliteError(f"{where}: TimeDistributed({inner.get('class_name')}) is not "
                                   "supported; only TimeDistributed(Dense)")
            dcfg, sub = inner.get("config") or {}, "layer/"
        _check_dtype(dcfg, where)
        arrays = self.weights.vars(_layer_name(spec), sub)
        use_bias = bool(dcfg.get("use_bias", True))
        if len(arrays) != (2 if use_bias else 1) or arrays[0].ndim != 2:
            raise GruliteError(f"{where}: {len(arrays)} weight arrays; expected a 2-D kernel"
                               f"{' and a bias' if use_bias else ''}")
        kern = arrays[0]
        if kern.shape[0] != self.width:
            raise GruliteError(f"{where}: kernel has shape {kern.shape}; expected "
                               f"({self.width}, units) after a layer of width {self.width}")
        units = dcfg.get("units")
        if isinstance(units, int) and kern.shape[1] != units:
            raise GruliteError(f"{where}: kernel has shape {kern.shape}; expected "
                               f"({self.width}, units={units})")
        if use_bias and arrays[1].shape != (kern.shape[1],):
            raise GruliteError(f"{where}: bias has shape {arrays[1].shape}; expected "
                               f"({kern.shape[1]},)")
        read = self.weights.read
        kern, bias = read(kern), (read(arrays[1]) if use_bias else None)
        self.dense.append(dict(name=_layer_name(spec), in_features=self.width,
                               out_features=int(kern.shape[1]),
                               activation=_act(dcfg.get("activation"), where),
                               weight=np.ascontiguousarray(kern.T), bias=bias))
        self.n_params += sum(a.size for a in arrays)
        self.width = int(kern.shape[1])

    def activation(self, cls: str, cfg: dict, where: str) -> None:
        """An activation layer, folded into the Dense layer before it."""
        if cls == "Activation":
            act = _act(cfg.get("activation"), where)
        elif cls == "ReLU":
            if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or \
                    cfg.get("threshold", 0):
                raise GruliteError(f"{where}: ReLU with max_value/negative_slope/threshold is "
                                   "not supported")
            act = "relu"
        else:
            if cfg.get("axis", -1) != -1:
                raise GruliteError(f"{where}: Softmax over axis {cfg.get('axis')}; only the last "
                                   "axis is supported")
            act = "softmax"
        if act == "none":
            return
        if not self.dense or self.dense[-1]["activation"] != "none":
            raise GruliteError(f"{where}: an activation layer is imported only right after a "
                               "Dense layer with a linear activation")
        self.dense[-1]["activation"] = act


def image(path: Union[str, os.PathLike], dtype: str = "auto", *,
                     head: bool = True) -> tuple:
    """The .grl image of a Keras 3 ``.keras`` model, and a summary.

    Parameters
    ----------
    path : str or PathLike
        A ``.keras`` archive (or the directory of an unzipped one).
    dtype : {"auto", "float32", "float16", "bfloat16", "int8"}
        Storage type of the GRU weights.
    head : bool
        Map the Dense layers after the last GRU onto grulite's head (default);
        False imports the GRU layers only.

    Returns
    -------
    (bytes, dict)
        The image and a summary: ``layers`` and ``dense`` (as
        :func:`grulite.importers._image.image_from_layers` takes them, plus the Keras
        ``name``), ``parameters`` (Keras' parameter count of the imported
        layers), ``prefix`` (the GRU layer names, comma-separated),
        ``time_reversed`` (Keras' sequence outputs are grulite's reversed in
        time), ``head_all_steps`` (the head is per step:
        ``predict(x, all_steps=True)``), ``outputs`` (each Keras output in
        grulite's terms), ``keras_version`` and ``mask_value`` (Masking's,
        or None).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    GruliteError
        h5py missing, not a readable archive, or layers grulite cannot map
        (the message names the layer and what was found).
    """
    p = os.fspath(path)
    source = repr(os.path.basename(p.rstrip("/\\")))
    with reading(p, ".keras archive"):
        config, h5, kmeta = _read_archive(p)
    with reading(p, ".keras archive"), h5:
        try:
            specs, out_tensors = _chain(config, source)
            if not any(_is_gru(s) for s in specs):
                kinds = ", ".join(f"{_layer_name(s)} ({s.get('class_name')})" for s in specs
                                  if s.get("class_name") != "InputLayer") or "none"
                raise GruliteError(f"{source}: no GRU layer in this model; its layers are: "
                                   f"{kinds}")
            mp = _Mapper(_Weights(h5, specs, source), source,
                         keras2(kmeta.get("keras_version")))
            for spec in specs:
                mp.add(spec)
        except GruliteError:
            raise
        except (AttributeError, KeyError, IndexError, TypeError, ValueError,
                RecursionError) as e:
            # a config.json of the wrong shape (a list where a dict belongs, ...)
            raise GruliteError(f"{source}: malformed model description in config.json "
                               f"({type(e).__name__}: {e})") from None
    layers, dense, top = mp.layers, mp.dense, mp.layers[-1]
    all_steps = bool(dense) and mp.seq      # Keras applies Dense to every step of a sequence
    n_params = mp.n_params
    if not head:
        n_params -= count_parameters([], dense)
        dense, all_steps = [], False
    # Keras' last output of a Bidirectional / go_backwards top GRU is its
    # final state (the backward direction ends at step 0): the head reads
    # the final states then.
    head_from = ("state" if dense and not all_steps and
                 (top["num_directions"] == 2 or top["reverse"]) else "output")

    names = [l["name"] for l in layers]
    outputs = _describe_outputs(layers, mp.last_gru, dense, None if mp.dense else out_tensors,
                                mp.parity, all_steps)
    meta = {
        "source": os.path.basename(p.rstrip("/\\")),
        "format": "keras",
        "keras": {"version": kmeta.get("keras_version"), "layers": names,
                  "head": [[d["name"], d["activation"]] for d in dense],
                  "time_reversed": bool(mp.parity), "head_all_steps": all_steps,
                  "outputs": [o["grulite"] for o in outputs]},
    }
    if mp.mask_value is not None:
        # Read back by Model.mask_value: lengths come from x when none are given.
        meta["mask_value"] = mp.mask_value
    image = image_from_layers(int(layers[0]["input_size"]), layers, dense, meta,
                              batch_first=True, dtype=dtype, head_from=head_from)
    summary = dict(layers=layers, dense=dense, parameters=int(n_params), prefix=", ".join(names),
                   time_reversed=bool(mp.parity), head_all_steps=all_steps, outputs=outputs,
                   keras_version=kmeta.get("keras_version"), mask_value=mp.mask_value)
    return image, summary


def _describe_outputs(layers: list, last_gru: dict, dense: list, out_tensors: Optional[list],
                      parity: bool, all_steps: bool) -> list:
    """Each Keras output in grulite's terms."""
    flip = "[:, ::-1]" if parity else ""
    L = len(layers)
    uniform = all(l["hidden_size"] == layers[0]["hidden_size"]
                  and l["num_directions"] == layers[0]["num_directions"] for l in layers)
    D = layers[-1]["num_directions"]

    def state(d: int) -> str:
        if uniform:
            return f"h_n[{sum(l['num_directions'] for l in layers) - D + d}]"
        return f"h_n[{L - 1}][{d}]"
    if dense:
        what = (f"predict(x, all_steps=True){flip}" if all_steps else "predict(x)")
        return [dict(kind="head", grulite=what)]
    tensors = out_tensors if out_tensors is not None else [0]
    out = []
    for t in tensors:
        if t == 0 and last_gru["return_sequences"]:
            out.append(dict(kind="sequence", grulite=f"y{flip}"))
        elif t == 0:
            merge = layers[-1].get("merge", "concat")
            what = (state(0) if D == 1
                    else f"concatenate([{state(0)}, {state(1)}], axis=-1)" if merge == "concat"
                    else f"{state(0)} + {state(1)}" if merge == "sum"
                    else f"{state(0)} * {state(1)}" if merge == "mul"
                    else f"({state(0)} + {state(1)}) / 2")
            out.append(dict(kind="last", grulite=what))
        elif 1 <= t <= D:
            out.append(dict(kind="state", grulite=state(t - 1)))
        else:
            raise GruliteError(f"model output {t} of {last_gru['name']!r} is not an output or "
                               "state of that layer")
    return out
