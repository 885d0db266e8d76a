"""Importing GRU models from ONNX files.

``from_onnx(path)`` reads an ONNX graph with the ``onnx`` package (the
optional extra ``pip install grulite[onnx]``; ONNX Runtime is never needed)
and turns it into a grulite model through ``_convert.image_from_layers``.

What imports
------------
* ``GRU`` nodes with every attribute of the ONNX operator: ``direction``
  forward / reverse / bidirectional (``reverse`` is a model with one
  backward direction, ``LayerConfig.reverse``), ``linear_before_reset`` 0
  (``reset_after=False``) and 1 (``reset_after=True``), ``layout`` 0 and 1,
  with or without ``B``, ``sequence_lens`` and ``initial_h`` as graph inputs
  (the model's ``lengths`` and ``h0``), ``hidden_size`` (checked against
  the shapes).  ``W``, ``R`` and ``B`` must be constants (initializers,
  ``Constant`` nodes, or computed from them alone by the ops exports
  without constant folding use: Slice, Concat, Unsqueeze, Transpose,
  Reshape, Cast, ..., see ``_FOLD_OPS``; a folded tensor may not be much
  larger than the constants the file holds).
* Stacks of GRU nodes, each reading the previous one's ``Y`` through the
  glue ``torch.onnx.export`` emits (Squeeze / Transpose / Reshape /
  Unsqueeze / Flatten / Identity / Dropout / Cast), then optionally a head:
  the last step (Gather / Slice of the time axis, or the top layer's
  final state ``h_n[-1]`` of a forward top layer), Linear layers (``Gemm``,
  or ``MatMul`` + ``Add``) each followed by at most one activation (Relu,
  Tanh, Sigmoid, Softmax over the features) -> the grulite dense head.  A
  head applied to every step (``MatMul`` on the whole sequence) is the same
  head; call ``predict(x, all_steps=True)`` to get it for every step.
* A ``torch.onnx.export(model, ..., dynamo=False)`` of a module holding an
  ``nn.GRU`` (any number of layers, bidirectional, ``batch_first`` either
  way) and ``nn.Linear`` / softmax heads imports as a whole.  The zero
  initial state torch writes into the graph (``Expand`` / ``ConstantOfShape``
  of zeros) is the model's default ``h0``.

Refused, with a ``GruliteError`` naming the node: the ``clip`` attribute,
activations other than (Sigmoid, Tanh) per direction, ``activation_alpha``
/ ``activation_beta``; a constant ``sequence_lens`` or a constant non-zero
``initial_h`` (make them graph inputs); op types not listed above (the
message lists the graph's op types and the ones grulite does not map);
graphs without a GRU, with several GRUs reading one sequence, or with
several heads; control flow (Loop, Scan, If: any node with a subgraph);
attributes of the wrong type.

Conventions: ONNX -> grulite
----------------------------
The imported model keeps grulite's conventions (DESIGN.md):

* Gates: ONNX stores them as (z, r, h) in ``W`` (D, 3H, I), ``R`` (D, 3H, H)
  and ``B`` (D, 6H) = [Wb (3H), Rb (3H)]; grulite / PyTorch use (r, z, n).
  The importer reorders the blocks; the function is the same.
* Layout: a graph whose input ``X`` is time-major (``layout=0``, or a torch
  export with ``batch_first=False``) gives a model with
  ``batch_first=False``; ``layout=1`` (or a torch export with
  ``batch_first=True``, which transposes ``X`` before the GRU) gives
  ``batch_first=True``.  ``x`` is passed to the model exactly as to the graph.
* ``y``: ONNX's ``GRU`` returns a 4-D ``Y`` of shape (T, D, B, H)
  (``layout=0``) or (B, T, D, H) (``layout=1``); the model's ``y`` is the
  top layer's output with both directions side by side, forward first::

      y = Y.transpose(0, 2, 1, 3).reshape(T, B, D*H)     # layout 0: y (T, B, D*H)
      y = Y.reshape(B, T, D*H)                           # layout 1: y (B, T, D*H)

  (which is what torch's export computes with its Transpose + Reshape glue).
* ``h0`` / ``h_n``: always (L*D, B, H), the layers' ``initial_h`` / ``Y_h``
  stacked along axis 0.  For ``layout=1``, where ONNX's ``initial_h`` /
  ``Y_h`` are (B, D, H): ``h_n = Y_h.transpose(1, 0, 2)``.  The summary's
  ``"inputs"`` says which graph input feeds ``h0`` (and which rows); a torch
  export with an ``h0`` input (L*D, B, H) takes the same array.
* ``lengths``: ONNX's ``sequence_lens`` (B,) with the same semantics
  (outputs past a length are 0, ``Y_h`` at each sequence's last valid step,
  the reverse direction starts there).  One input feeds every layer.
* Heads read the last step of the top layer: ``y[:, -1]`` (``y[-1]`` time
  major).  Without ``lengths`` this is what the graph computes; with
  ``lengths``, ``predict`` reads each sequence's last *valid* step, where a
  graph gathering index -1 of the padded output would read zeros.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

import numpy as np

from grulite._convert import ACTIVATION_NAMES, image_from_layers
from grulite._errors import GruliteError, reading

__all__ = ["image_from_onnx", "from_onnx"]

_BIG = 1 << 62          # slice ends at or above this are "to the end"

# Op types mapped on runtime tensors (anything may be folded when all its
# inputs are constants).
_GLUE = ("Identity", "Dropout", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
         "Flatten", "Gather", "Slice", "Concat")
_HEAD = ("Gemm", "MatMul", "Add", "Relu", "Tanh", "Sigmoid", "Softmax")
_SHAPE = ("Shape", "Size", "ConstantOfShape", "Expand")
SUPPORTED_OPS = ("GRU",) + _GLUE + _HEAD + _SHAPE + ("Constant",)

# Ops evaluated when all their inputs are constants (exports without constant
# folding compute the GRU weights with Slice / Concat / Unsqueeze /
# Transpose; the rest is the shape arithmetic exporters emit).  Anything else
# on constants is reported like any other unsupported op; control flow is
# refused outright (a Loop's trip count alone can keep the evaluator busy
# for ever).
_FOLD_SAME = ("Identity", "Dropout", "Cast", "CastLike", "Transpose", "Reshape", "Squeeze",
              "Unsqueeze", "Flatten", "Slice", "Split", "Concat", "Shape", "Size", "Neg")
_FOLD_BROADCAST = ("Add", "Sub", "Mul", "Div")
_FOLD_CREATE = ("Gather", "ConstantOfShape", "Expand", "Tile", "Range")
_FOLD_OPS = _FOLD_SAME + _FOLD_BROADCAST + _FOLD_CREATE
_CONTROL_FLOW = ("Loop", "Scan", "If", "SequenceMap")
# Elements one folded output may have, and all folded outputs together, at
# least (both grow with the constants the file holds: exports without
# folding copy each weight a few times).
_FOLD_MIN_ELEMENTS = 1 << 24
_FOLD_MIN_TOTAL = 1 << 26
_FOLD_TOTAL_RATIO = 8

# Attribute types of the ops the importer reads attributes of (by name).
_ATTR_TYPES = {
    "hidden_size": "INT", "layout": "INT", "linear_before_reset": "INT", "axis": "INT",
    "to": "INT", "transA": "INT", "transB": "INT", "allowzero": "INT", "start": "INT",
    "end": "INT", "output_sequence": "INT", "is_test": "INT", "seed": "INT",
    "clip": "FLOAT", "alpha": "FLOAT", "beta": "FLOAT", "ratio": "FLOAT",
    "direction": "STRING", "activations": "STRINGS",
    "activation_alpha": "FLOATS", "activation_beta": "FLOATS",
    "perm": "INTS", "axes": "INTS", "starts": "INTS", "ends": "INTS", "split": "INTS",
    "consumed_inputs": "INTS",
    "value": "TENSOR", "value_float": "FLOAT", "value_floats": "FLOATS", "value_int": "INT",
    "value_ints": "INTS", "value_string": "STRING", "value_strings": "STRINGS",
    "sparse_value": "SPARSE_TENSOR",
}
_ACT = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax"}
assert all(a in ACTIVATION_NAMES for a in _ACT.values())


def _need_onnx():
    try:
        import onnx  # noqa: F401
        from onnx import numpy_helper  # noqa: F401
    except ImportError:
        raise GruliteError("reading ONNX needs the onnx package: "
                           "pip install grulite[onnx]") from None
    return onnx


@dataclass
class _V:
    """What the importer knows about one runtime tensor.

    kind: "seq"   (top-layer-so-far sequence of stage `stage`; labels T / T1 /
                   B / F / D / H, or A0 / A1 for the graph input before the
                   first GRU says which axis is time),
          "state" (Y_h rows, label S: rows are (layer, direction)),
          "head"  (after `n` dense layers),
          "hin" / "len" (graph inputs used as initial_h / sequence_lens),
          "zeros" (computed all-zero tensor), "shape" (shape arithmetic),
          "bad"   (from an op grulite does not map).
    """
    kind: str
    axes: tuple = ()
    stage: int = 0
    rows: tuple = ()
    n: int = 0
    ver: int = 0
    name: str = ""
    r0: int = 0
    r1: int = 0
    sliced: bool = False
    dims: Optional[tuple] = None     # "shape": symbolic entries, see _shape_dims
    scalar: bool = False


@dataclass
class _Layer:
    node: str
    D: int
    H: int
    I: int
    reverse: bool
    reset_after: bool
    bias: bool
    layout: int
    weight_ih: list = field(default_factory=list)
    weight_hh: list = field(default_factory=list)
    bias_ih: list = field(default_factory=list)
    bias_hh: list = field(default_factory=list)
    h0: Any = None            # None (zeros) or (input name, r0, r1)
    lengths: Optional[str] = None
    tensors: dict = field(default_factory=dict)


def _text(value: Any) -> str:
    """A protobuf string field: protobuf hands back bytes that are not UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _texts(obj: Any) -> Any:
    """`obj` (a summary) with every bytes name in it (keys too) made text."""
    if isinstance(obj, bytes):
        return _text(obj)
    if isinstance(obj, dict):
        return {_texts(k): _texts(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_texts(v) for v in obj)
    return obj


def _zrh_to_rzn(a: np.ndarray) -> np.ndarray:
    """ONNX gate blocks (z, r, h) along axis 0 -> PyTorch's (r, z, n)."""
    z, r, h = np.split(a, 3, axis=0)
    return np.concatenate([r, z, h], axis=0)


class _Importer:
    def __init__(self, model, path: str):
        from onnx import AttributeProto, TensorProto, numpy_helper
        self.nh = numpy_helper
        self.graph_attr = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
        self.numeric_types = {getattr(TensorProto, t) for t in (
            "FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8",
            "UINT16", "UINT32", "UINT64", "BOOL")}
        self.model = model
        self.path = path
        self.graph = model.graph
        self.opset = 1
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = int(o.version)
        self.const: dict[str, np.ndarray] = {}
        self.vals: dict[str, _V] = {}
        self.layers: list[_Layer] = []
        self.dense: list[dict] = []
        self.dense_state = ""         # "matmul" | "dense" | "act" for the last dense layer
        self.head_ver = 0
        self.head_stage: Optional[int] = None
        self.batch_first: Optional[bool] = None
        self.t_label: Optional[str] = None        # which of A0 / A1 is time
        self.x_name: Optional[str] = None
        self.x_shape: tuple = ()
        self.static_T: Optional[int] = None
        self.static_B: Optional[int] = None
        self.unsupported: dict[str, list[str]] = {}
        self.op_types: list[str] = []
        self.stored_elements = 0      # of the initializers and Constant nodes
        self.folded_elements = 0      # of the outputs _fold made so far

    # ---- helpers -----------------------------------------------------

    @staticmethod
    def _nname(node) -> str:
        return _text(node.name or (node.output[0] if node.output else node.op_type))

    def _where(self, node) -> str:
        return f"node {self._nname(node)!r} ({node.op_type})"

    def _fail(self, node, msg: str):
        raise GruliteError(f"{os.path.basename(self.path)}: {self._where(node)}: {msg}")

    def _attrs(self, node) -> dict:
        from onnx import AttributeProto, helper
        out = {}
        for a in node.attribute:
            if a.ref_attr_name:
                self._fail(node, f"attribute {a.name!r} refers to a function attribute "
                                 f"({a.ref_attr_name!r}); only plain values are supported")
            known = a.type in AttributeProto.AttributeType.values()
            found = AttributeProto.AttributeType.Name(a.type) if known else f"type {a.type}"
            want = _ATTR_TYPES.get(a.name)
            if not known or found == "UNDEFINED" or (want is not None and found != want):
                self._fail(node, f"attribute {a.name!r} has type {found}; expected "
                                 f"{want or 'a defined type'}")
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list):
                v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
            out[a.name] = v
        return out

    def _ints(self, node, attrs, key: str, pos: int) -> Optional[list]:
        """Integer list given as attribute `key` (old opsets) or input `pos`."""
        if key in attrs:
            return [int(v) for v in attrs[key]]
        if len(node.input) > pos and node.input[pos]:
            name = node.input[pos]
            if name not in self.const:
                self._fail(node, f"its {key} ({name!r}) is computed at run time; grulite needs "
                                 "them constant")
            return [int(v) for v in np.asarray(self.const[name]).reshape(-1)]
        return None

    def _stage_info(self, stage: int) -> dict:
        if stage == 0:
            I = self.x_shape[-1] if self.x_shape and isinstance(self.x_shape[-1], int) else None
            return dict(F=I, D=None, H=None)
        L = self.layers[stage - 1]
        return dict(F=L.D * L.H, D=L.D, H=L.H)

    def _size(self, v: _V, lab: str) -> Optional[int]:
        if lab in ("1", "T1"):
            return 1
        if lab == "S":
            return len(v.rows)
        if v.kind == "head" and lab == "F":
            return self.dense[v.n - 1]["out_features"]
        info = self._stage_info(v.stage)
        if lab == "F":
            return info["F"]
        if lab == "D":
            return info["D"]
        if lab == "H":
            return info["H"]
        return None            # T, B (and A0 / A1): run-time sizes

    def _is_feature(self, v: _V, lab: str) -> bool:
        if lab == "F":
            return True
        return lab == "H" and v.kind == "seq" and v.stage > 0 and self.layers[v.stage - 1].D == 1

    def _describe(self, v: _V) -> str:
        names = {"S": "L*D", "T1": "1", "A0": "?", "A1": "?",
                 "F": "out" if v.kind == "head" else ("I" if v.stage == 0 else "D*H")}
        return "(" + ", ".join(names.get(lab, lab) for lab in v.axes) + ")"

    # ---- reading the graph -------------------------------------------

    def run(self) -> None:
        g = self.graph
        for t in g.initializer:
            self.const[t.name] = self._to_array(t)
            self.stored_elements += self.const[t.name].size
        for t in getattr(g, "sparse_initializer", []):
            raise GruliteError(f"{os.path.basename(self.path)}: sparse initializer "
                               f"{t.values.name!r}: sparse tensors are not supported")
        nodes = list(g.node)
        # Liveness: only nodes that feed a graph output matter.
        producer = {}
        for i, nd in enumerate(nodes):
            for o in nd.output:
                if o:
                    producer[o] = i
        live = set()
        stack = [o.name for o in g.output]
        seen = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            i = producer.get(name)
            if i is None or i in live:
                continue
            live.add(i)
            stack.extend(x for x in nodes[i].input if x)
        nodes = [nd for i, nd in enumerate(nodes) if i in live]
        self.op_types = sorted({(nd.domain + "::" if nd.domain not in ("", "ai.onnx") else "")
                                + nd.op_type for nd in nodes})
        if "GRU" not in self.op_types:
            raise GruliteError(f"{os.path.basename(self.path)}: no GRU node in this ONNX graph "
                               f"(op types: {', '.join(self.op_types) or 'none'}); grulite imports "
                               "graphs built around ONNX GRU nodes")
        self._assign_inputs(nodes, producer, g)
        for nd in nodes:
            self._guarded(nd)
        if self.unsupported:
            bad = ", ".join(f"{op} ({', '.join(repr(n) for n in names[:3])}"
                            f"{', ...' if len(names) > 3 else ''})"
                            for op, names in sorted(self.unsupported.items()))
            raise GruliteError(
                f"{os.path.basename(self.path)}: cannot map this ONNX graph onto a grulite model. "
                f"Op types in the graph: {', '.join(self.op_types)}. Not supported here: {bad}. "
                "grulite imports GRU nodes, the glue between them (Transpose, Reshape, Squeeze, "
                "Unsqueeze, Concat, Gather, Slice, ...) and a head of Gemm / MatMul+Add layers "
                "with Relu, Tanh, Sigmoid or Softmax on the last step")
        self._check_outputs()

    def _to_array(self, t) -> np.ndarray:
        try:
            return np.asarray(self.nh.to_array(t))
        except Exception as e:
            raise GruliteError(f"{os.path.basename(self.path)}: tensor {t.name!r} cannot be "
                               f"read: {e}") from None

    def _assign_inputs(self, nodes, producer, g) -> None:
        """Roles of the graph inputs: x, initial_h sources, sequence_lens."""
        by_out = {}
        for nd in nodes:
            for o in nd.output:
                by_out[o] = nd
        inputs = {i.name: i for i in g.input if i.name not in self.const}

        def origin(name: str) -> Optional[str]:
            for _ in range(10000):
                if name in inputs:
                    return name
                nd = by_out.get(name)
                if nd is None or nd.op_type in ("GRU",) or not nd.input:
                    return None
                name = nd.input[0]
            return None

        roles: dict[str, str] = {}

        def claim(name: Optional[str], role: str, node):
            if name is None:
                return
            old = roles.get(name)
            if old is not None and old != role:
                self._fail(node, f"graph input {name!r} is used both as {old} and as {role}")
            roles[name] = role

        for nd in nodes:
            if nd.op_type != "GRU":
                continue
            ins = list(nd.input) + [""] * 6
            claim(origin(ins[0]) if ins[0] else None, "x", nd)
            if ins[4]:
                claim(origin(ins[4]), "sequence_lens", nd)
            if ins[5]:
                claim(origin(ins[5]), "initial_h", nd)
        xs = [n for n, r in roles.items() if r == "x"]
        if len(xs) > 1:
            raise GruliteError(f"{os.path.basename(self.path)}: the GRU nodes read several graph "
                               f"inputs as their sequence ({', '.join(map(repr, xs))}); grulite "
                               "models take one input sequence")
        used = {x for nd in nodes for x in nd.input}
        for name, vi in inputs.items():
            if name not in used:
                continue
            role = roles.get(name)
            shape = tuple(d.dim_value if d.HasField("dim_value") else None
                          for d in vi.type.tensor_type.shape.dim) \
                if vi.type.tensor_type.HasField("shape") else None
            if role == "x":
                if shape is not None and len(shape) != 3:
                    raise GruliteError(f"{os.path.basename(self.path)}: graph input {name!r} has "
                                       f"rank {len(shape)}; the GRU input must be 3-D "
                                       "(steps, batch, features) or (batch, steps, features)")
                self.x_name = name
                self.x_shape = shape or (None, None, None)
                self.vals[name] = _V("seq", ("A0", "A1", "F"), stage=0)
            elif role == "initial_h":
                rows = shape[0] if shape and isinstance(shape[0], int) else None
                self.vals[name] = _V("hin", name=name, r0=0, r1=rows if rows is not None else -1,
                                     axes=tuple(f"h{i}" for i in range(len(shape or (0, 0, 0)))))
            elif role == "sequence_lens":
                self.vals[name] = _V("len", name=name)
            else:
                ops = sorted({nd.op_type for nd in nodes if name in nd.input})
                raise GruliteError(f"{os.path.basename(self.path)}: graph input {name!r} (read "
                                   f"by {', '.join(ops)}) is not the GRU's input sequence, "
                                   "initial_h or sequence_lens; grulite models take only those "
                                   "(x, h0, lengths), with the GRU reading x through reshapes "
                                   "only (op types in the graph: "
                                   f"{', '.join(self.op_types)})")

    def _value(self, name: str):
        """('const', array) | ('val', _V) | ('none', None)."""
        if not name:
            return "none", None
        if name in self.const:
            return "const", self.const[name]
        if name in self.vals:
            return "val", self.vals[name]
        raise GruliteError(f"{os.path.basename(self.path)}: tensor {name!r} is used before it is "
                           "computed (the graph is not topologically sorted, or the name is "
                           "undefined)")

    # ---- nodes -------------------------------------------------------

    def _node(self, nd) -> None:
        op = nd.op_type
        if nd.domain not in ("", "ai.onnx"):
            self._mark_bad(nd, f"{nd.domain}::{op}")
            return
        if op in _CONTROL_FLOW or any(a.type in self.graph_attr for a in nd.attribute):
            self._fail(nd, "control flow and subgraphs are not supported: grulite maps a "
                           "plain graph of GRU nodes, their glue and a dense head")
        if op == "Constant":
            self._constant(nd)
            return
        kinds = [self._value(x) for x in nd.input]
        vals = [v for k, v in kinds if k == "val"]
        if not vals:
            if op == "GRU":
                self._fail(nd, "its input X is a constant; it must come from a graph input")
            if op not in _FOLD_OPS:
                self._mark_bad(nd, op)
                return
            self._fold(nd)
            return
        if any(v.kind == "bad" for v in vals):
            if op not in SUPPORTED_OPS:
                self.unsupported.setdefault(op, []).append(self._nname(nd))
            for o in nd.output:
                self.vals[o] = _V("bad")
            return
        if all(v.kind in ("shape", "zeros") for v in vals) and op != "GRU":
            self._shape_op(nd, kinds)
            return
        handler = getattr(self, "_op_" + op, None)
        if handler is None:
            self._mark_bad(nd, op)
            return
        handler(nd, kinds, self._attrs(nd))

    def _guarded(self, nd) -> None:
        """_node, with what a malformed node makes Python raise (a field of the
        wrong type, an index out of range, ...) as a GruliteError naming it."""
        try:
            self._node(nd)
            return
        except GruliteError:
            raise
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError,
                RecursionError) as e:
            err = e
        self._fail(nd, f"malformed node ({type(err).__name__}: {str(err)[:200]})")

    def _mark_bad(self, nd, op: str) -> None:
        self.unsupported.setdefault(op, []).append(self._nname(nd))
        for o in nd.output:
            self.vals[o] = _V("bad")

    def _constant(self, nd) -> None:
        from onnx import numpy_helper
        a = self._attrs(nd)
        if "value" in a:
            arr = numpy_helper.to_array(a["value"])
        elif "value_float" in a:
            arr = np.array(a["value_float"], np.float32)
        elif "value_floats" in a:
            arr = np.array(a["value_floats"], np.float32)
        elif "value_int" in a:
            arr = np.array(a["value_int"], np.int64)
        elif "value_ints" in a:
            arr = np.array(a["value_ints"], np.int64)
        else:
            self._fail(nd, f"Constant with {', '.join(a) or 'no value'}: only dense numeric "
                           "values are supported")
        self.const[nd.output[0]] = np.asarray(arr)
        self.stored_elements += self.const[nd.output[0]].size

    def _fold_elements(self, nd) -> int:
        """An upper bound on the elements of the outputs of `nd` (an op of
        _FOLD_OPS on constant inputs), computed from the inputs' shapes and
        values without evaluating it."""
        from onnx import TensorProto
        op = nd.op_type
        ins = [np.asarray(self.const[x]) if x else None for x in nd.input]
        for x in ins:
            if x is not None and x.dtype.kind not in "biufc":
                self._fail(nd, f"an input of dtype {x.dtype}: grulite evaluates constant "
                               "subgraphs of numbers only")

        def prod(dims) -> int:
            n = 1
            for d in dims:
                n *= max(int(d), 0)
            return n

        def values(x, what: str) -> list:
            if x is None or x.dtype.kind not in "iu" or x.ndim > 1 or x.size > 64:
                self._fail(nd, f"its {what} is not a 1-D integer tensor of at most 64 entries")
            return [int(v) for v in x.reshape(-1)]

        def broadcast(shapes) -> list:
            rank = max((len(sh) for sh in shapes), default=0)
            out = []
            for i in range(rank):
                dims = {int(sh[len(sh) - rank + i]) for sh in shapes if len(sh) - rank + i >= 0}
                if len(dims - {1}) > 1:
                    self._fail(nd, f"input shapes {[tuple(sh) for sh in shapes]} do not "
                                   "broadcast")
                out.append(max(dims - {1}, default=1))
            return out

        if op in _FOLD_SAME:
            if op == "Cast":
                if self._attrs(nd).get("to") == TensorProto.STRING:
                    self._fail(nd, "casts constants to strings, which grulite does not evaluate")
            return sum(x.size for x in ins if x is not None) + 64
        if op in _FOLD_BROADCAST:
            return prod(broadcast([x.shape for x in ins if x is not None]))
        data = ins[0] if ins else None
        if op == "Gather":
            if data is None or len(ins) < 2 or ins[1] is None or data.ndim == 0:
                return 0                                # the evaluator refuses it
            axis = int(self._attrs(nd).get("axis", 0))
            if not -data.ndim <= axis < data.ndim:
                return 0
            rest = data.size // data.shape[axis] if data.shape[axis] else 0
            return ins[1].size * rest
        if op == "ConstantOfShape":
            value = self._attrs(nd).get("value")
            if value is not None and value.data_type not in self.numeric_types:
                self._fail(nd, "fills a tensor with non-numeric values, which grulite does "
                               "not evaluate")
            return prod(values(data, "shape"))
        if op == "Expand":
            shape = values(ins[1] if len(ins) > 1 else None, "shape")
            return prod(broadcast([data.shape, shape]))
        if op == "Tile":
            reps = values(ins[1] if len(ins) > 1 else None, "repeats")
            if data is None or len(reps) != data.ndim:
                return 0
            return prod(d * r for d, r in zip(data.shape, reps))
        if op == "Range":
            if len(ins) < 3 or any(x is None or x.size != 1 for x in ins):
                return 0
            start, limit, delta = (x.reshape(-1)[0].item() for x in ins[:3])
            if delta == 0 or not all(np.isfinite([start, limit, delta])):
                self._fail(nd, f"Range({start}, {limit}, {delta}) has no end")
            return max(int(np.ceil((limit - start) / delta)), 0)
        return 0

    def _fold(self, nd) -> None:
        """Evaluates a node whose inputs are all constants, if its outputs are
        no larger than the constants in the file warrant."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        n = self._fold_elements(nd)
        limit = max(_FOLD_MIN_ELEMENTS, self.stored_elements)
        budget = max(_FOLD_MIN_TOTAL, _FOLD_TOTAL_RATIO * self.stored_elements)
        if n > limit or self.folded_elements + n > budget:
            what = (f"{n} elements (the limit is {limit}, from the constants this file holds)"
                    if n > limit else f"{n} more elements (with {self.folded_elements} already "
                    f"computed the limit is {budget}, from the constants this file holds)")
            self._fail(nd, f"evaluating it on its constant inputs would make {what}; tensors "
                           "this large computed inside the graph are not supported")
        feeds = {x: self.const[x] for x in nd.input if x}
        try:
            ins = [helper.make_tensor_value_info(
                       x, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.shape(a))
                   for x, a in feeds.items()]
            outs = [helper.make_empty_tensor_value_info(o) for o in nd.output if o]
            one = helper.make_model(helper.make_graph([nd], "fold", ins, outs),
                                    opset_imports=list(self.model.opset_import))
            one.ir_version = self.model.ir_version or 8
            outs = ReferenceEvaluator(one).run(None, feeds)
        except Exception as e:
            self._fail(nd, f"cannot evaluate it on its constant inputs: {type(e).__name__}: {e}")
        for name, arr in zip([o for o in nd.output if o], outs):
            self.const[name] = np.asarray(arr)
            self.folded_elements += self.const[name].size

    def _shape_op(self, nd, kinds) -> None:
        """Ops on shapes and zero tensors (torch's zero initial state)."""
        op = nd.op_type
        a = self._attrs(nd)
        first_k, first = kinds[0] if kinds else ("none", None)

        def is_zero(k, v):
            return (k == "val" and v.kind == "zeros") or \
                   (k == "const" and np.asarray(v).dtype.kind in "fiu" and not np.any(v))

        out = "shape"
        if op == "ConstantOfShape":
            val = a.get("value")
            fill = 0 if val is None else np.asarray(self.nh.to_array(val)).reshape(-1)
            out = "zeros" if not np.any(fill) else "shape"
        elif op in ("Expand", "Slice", "Reshape", "Unsqueeze", "Squeeze", "Transpose",
                    "Identity", "Cast", "Gather", "Tile", "Flatten", "Dropout"):
            out = "zeros" if is_zero(first_k, first) else "shape"
        elif op == "Concat":
            out = "zeros" if all(is_zero(k, v) for k, v in kinds if k != "none") else "shape"
        elif op == "Mul" and any(is_zero(k, v) for k, v in kinds):
            out = "zeros"
        dims, scalar = (self._shape_dims(nd, kinds, a) if out == "shape" else (None, False))
        for o in nd.output:
            if o:
                self.vals[o] = _V(out, dims=dims, scalar=scalar)

    def _shape_dims(self, nd, kinds, a) -> tuple:
        """Symbolic entries of a shape vector computed from Shape(...):
        ints, or ("axis", label) for a run-time size (torch's x.size(0))."""
        op = nd.op_type

        def entries(k, v):
            if k == "const":
                arr = np.asarray(v)
                if arr.dtype.kind not in "iu" or arr.ndim > 1:
                    return None, False
                return tuple(int(x) for x in arr.reshape(-1)), arr.ndim == 0
            if k == "val" and v.kind == "shape" and v.dims is not None:
                return v.dims, v.scalar
            return None, False

        d0, sc0 = entries(*kinds[0]) if kinds else (None, False)
        try:
            if op in ("Identity", "Cast"):
                return d0, sc0
            if op == "Gather" and d0 is not None and not sc0 and int(a.get("axis", 0)) == 0 \
                    and kinds[1][0] == "const":
                idx = np.asarray(kinds[1][1])
                picked = tuple(d0[int(i)] for i in idx.reshape(-1))
                return picked, idx.ndim == 0
            if op == "Unsqueeze" and d0 is not None and sc0:
                return d0, False
            if op == "Squeeze" and d0 is not None and not sc0 and len(d0) == 1:
                return d0, True
            if op == "Concat" and int(a.get("axis", 0)) in (0, -1):
                parts = [entries(k, v) for k, v in kinds if k != "none"]
                if all(p is not None and not sc for p, sc in parts):
                    return tuple(e for p, _ in parts for e in p), False
            if op == "Slice" and d0 is not None and not sc0:
                st, en = self._ints(nd, a, "starts", 1), self._ints(nd, a, "ends", 2)
                ax = self._ints(nd, a, "axes", 3) or [0]
                sp = self._ints(nd, a, "steps", 4) or [1]
                if ax in ([0], [-1]):
                    return tuple(d0[slice(st[0], min(en[0], _BIG), sp[0])]), False
        except (IndexError, TypeError, ValueError, GruliteError):
            pass
        return None, False

    # -- glue ----------------------------------------------------------

    def _runtime(self, nd, kinds, pos: int = 0) -> _V:
        k, v = kinds[pos] if pos < len(kinds) else ("none", None)
        if k != "val":
            self._fail(nd, f"input {pos} is {'absent' if k == 'none' else 'a constant'}; "
                           "expected the GRU's data")
        return v

    def _set(self, nd, v: _V) -> None:
        self.vals[nd.output[0]] = v

    def _op_Identity(self, nd, kinds, a):
        self._set(nd, self._runtime(nd, kinds))

    def _op_Dropout(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        self._set(nd, v)
        if len(nd.output) > 1 and nd.output[1]:
            self.vals[nd.output[1]] = _V("bad")
            self.unsupported.setdefault("Dropout mask output", []).append(self._nname(nd))

    def _op_Cast(self, nd, kinds, a):
        from onnx import TensorProto
        v = self._runtime(nd, kinds)
        to = a.get("to")
        if v.kind == "len":
            if to not in (TensorProto.INT32, TensorProto.INT64):
                self._fail(nd, "casts sequence_lens to a non-integer type")
        elif to not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
            self._fail(nd, f"casts the GRU's data to type {to}; only float types keep the values")
        self._set(nd, v)

    def _norm_axis(self, nd, axis: int, rank: int) -> int:
        if not -rank <= axis < rank:
            self._fail(nd, f"axis {axis} is out of range for a {rank}-D tensor")
        return axis % rank

    def _check_kind(self, nd, v: _V, kinds=("seq", "head", "state")) -> None:
        if v.kind not in kinds:
            if v.kind == "hin":
                self._fail(nd, f"grulite maps only Slice / Gather of rows (axis 0) of the initial "
                               f"state input {v.name!r}; this {nd.op_type} is not one of them")
            if v.kind == "len":
                self._fail(nd, f"sequence_lens input {v.name!r} may only be cast before the GRU")
            self._fail(nd, f"{nd.op_type} on a {v.kind} value is not supported")

    def _after_axes(self, nd, v: _V, axes: tuple) -> _V:
        """A value with new axes; a state that lost its S axis becomes a step."""
        if v.kind == "state" and "S" not in axes:
            if len(v.rows) != 1:
                self._fail(nd, "merges several state rows")
            k, d = v.rows[0]
            L = self.layers[k]
            if L.D != 1 or L.reverse:
                what = "the backward direction" if (d == 1 or L.reverse) else "one direction"
                self._fail(nd, f"reads the final state of {what} of GRU layer {k} "
                               f"({L.node!r}); grulite heads read the top layer's output at the "
                               "last step, which is the final state only for a forward, "
                               "unidirectional layer")
            axes = tuple("F" if lab == "H" else lab for lab in axes)
            return _V("seq", axes, stage=k + 1)
        return replace(v, axes=axes)

    def _op_Transpose(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        self._check_kind(nd, v)
        r = len(v.axes)
        perm = a.get("perm") or list(range(r))[::-1]
        if sorted(perm) != list(range(r)):
            self._fail(nd, f"perm {perm} does not fit a {r}-D tensor {self._describe(v)}")
        self._set(nd, replace(v, axes=tuple(v.axes[p] for p in perm)))

    def _droppable(self, v: _V, lab: str) -> bool:
        return self._size(v, lab) == 1

    def _op_Squeeze(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        self._check_kind(nd, v)
        axes = self._ints(nd, a, "axes", 1)
        r = len(v.axes)
        if axes is None:
            axes = [i for i, lab in enumerate(v.axes) if self._droppable(v, lab)]
        axes = {self._norm_axis(nd, x, r) for x in axes}
        for i in axes:
            if not self._droppable(v, v.axes[i]):
                self._fail(nd, f"squeezes axis {i} ({v.axes[i]}) of {self._describe(v)}, which "
                               "is not known to have size 1")
        self._set(nd, self._after_axes(nd, v, tuple(l for i, l in enumerate(v.axes)
                                                    if i not in axes)))

    def _op_Unsqueeze(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        self._check_kind(nd, v)
        axes = self._ints(nd, a, "axes", 1) or []
        out_r = len(v.axes) + len(axes)
        axes = sorted(self._norm_axis(nd, x, out_r) for x in axes)
        new = list(v.axes)
        for i in axes:
            new.insert(i, "1")
        self._set(nd, replace(v, axes=tuple(new)))

    def _merge(self, nd, v: _V, group: list) -> str:
        if len(group) == 1:
            return group[0]
        keep = [lab for lab in group if not self._droppable(v, lab)]
        if not keep:
            return "1"
        if len(keep) == 1:
            return keep[0]
        if keep == ["D", "H"]:
            return "F"
        self._fail(nd, f"merges axes {', '.join(group)} of {self._describe(v)}; grulite maps only "
                       "merging (directions, hidden) into features, in that order")

    def _match(self, nd, v: _V, axes: list, dims: list, from_right: bool) -> tuple:
        """Greedy matching of output dims (> 0) to input axes; returns
        (groups, rest of axes)."""
        axes = list(axes)
        dims = list(dims)
        if from_right:
            axes.reverse()
            dims.reverse()
        groups = []
        for d in dims:
            grp, prod = [], 1
            while prod != d or (not grp and axes and self._size(v, axes[0]) == 1 and d == 1):
                if not axes:
                    self._fail(nd, f"reshape to dim {d} does not fit {self._describe(v)}")
                s = self._size(v, axes[0])
                if s is None:                   # a graph exported for a fixed batch / length
                    s = {"B": self.static_B, "T": self.static_T}.get(axes[0])
                if s is None:
                    self._fail(nd, f"reshapes axis {axes[0]} of {self._describe(v)} to a fixed "
                                   f"size {d}; grulite maps only reshapes that keep the time and "
                                   "batch axes (0 or -1 in the shape)")
                grp.append(axes.pop(0))
                prod *= s
                if prod > d:
                    self._fail(nd, f"reshape to dim {d} splits an axis of {self._describe(v)}")
            groups.append(grp)
        if from_right:
            groups = [list(reversed(g)) for g in reversed(groups)]
            axes.reverse()
        return groups, axes

    def _op_Reshape(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        self._check_kind(nd, v)
        k, shp = kinds[1] if len(kinds) > 1 else ("none", None)
        if k == "const":
            shp = [int(s) for s in np.asarray(shp).reshape(-1)]
        elif k == "val" and shp.kind == "shape" and shp.dims is not None and not shp.scalar:
            shp = list(shp.dims)         # torch's x.view(x.size(0), -1)
        else:
            self._fail(nd, "its target shape is computed at run time in a way grulite cannot "
                           "follow; grulite maps constant shapes (torch exports use [0, 0, -1]) "
                           "and shapes made of the input's own sizes")
        shown = [e if isinstance(e, int) else e[1] for e in shp]
        if a.get("allowzero", 0) and 0 in shp:
            self._fail(nd, "allowzero=1 with a 0 in the shape")
        if shp.count(-1) > 1:
            self._fail(nd, f"shape {shown} has several -1")
        ax = list(v.axes)
        out: list = [None] * len(shp)
        # Anchors (output j <- input i): 0 copies the input axis at the same
        # index; a run-time size of axis T / B (from Shape) keeps that axis.
        anchors = []
        for j, e in enumerate(shp):
            if isinstance(e, tuple):
                _, lab, size = e
                if ax.count(lab) == 1 and lab in ("T", "B", "A0", "A1", "S"):
                    anchors.append((j, ax.index(lab)))
                    continue
                if size is None:
                    self._fail(nd, f"reshapes to the run-time size of axis {lab}, which is not "
                                   f"an axis of {self._describe(v)}")
                shp[j] = size
            elif e == 0:
                if j >= len(ax):
                    self._fail(nd, f"shape {shown} copies axis {j} of a {len(ax)}-D tensor")
                anchors.append((j, j))
        if any(b[0] <= a_[0] or b[1] <= a_[1] for a_, b in zip(anchors, anchors[1:])):
            self._fail(nd, f"shape {shown} reorders the axes of {self._describe(v)}")
        for j, i in anchors:
            out[j] = ax[i]
        bounds = [-1] + [j for j, _ in anchors] + [len(shp)]
        ibounds = [-1] + [i for _, i in anchors] + [len(ax)]
        for s in range(len(bounds) - 1):
            oj = list(range(bounds[s] + 1, bounds[s + 1]))
            seg_in = ax[ibounds[s] + 1: ibounds[s + 1]]
            if not oj:
                if any(not self._droppable(v, lab) for lab in seg_in):
                    self._fail(nd, f"shape {shown} drops axes {seg_in} of {self._describe(v)}")
                continue
            dims = [shp[j] for j in oj]
            if -1 in dims:
                m = dims.index(-1)
                left, rest = self._match(nd, v, seg_in, dims[:m], False)
                right, rest = self._match(nd, v, rest, dims[m + 1:], True)
                groups = left + [rest] + right
            else:
                groups, rest = self._match(nd, v, seg_in, dims, False)
                if rest:
                    if any(not self._droppable(v, lab) for lab in rest) or not groups:
                        self._fail(nd, f"shape {shown} does not cover {self._describe(v)}")
                    groups[-1] = groups[-1] + rest
            for j, grp in zip(oj, groups):
                out[j] = self._merge(nd, v, grp)
        self._set(nd, self._after_axes(nd, v, tuple(out)))

    def _op_Flatten(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        self._check_kind(nd, v)
        r = len(v.axes)
        axis = int(a.get("axis", 1))
        axis = axis % r if -r <= axis < 0 else axis
        out = (self._merge(nd, v, list(v.axes[:axis])) if axis else "1",
               self._merge(nd, v, list(v.axes[axis:])) if axis < r else "1")
        self._set(nd, self._after_axes(nd, v, out))

    def _last_index(self, idx: int) -> bool:
        return idx == -1 or (self.static_T is not None and idx == self.static_T - 1)

    def _op_Gather(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        k, idx = kinds[1]
        if k != "const":
            self._fail(nd, "gathers with indices computed at run time")
        idx = np.asarray(idx)
        axis = int(a.get("axis", 0))
        if v.kind == "hin":
            if axis % 3 != 0:
                self._fail(nd, f"gathers axis {axis} of the initial state input {v.name!r}; "
                               "grulite maps only rows (axis 0)")
            flat = [int(i) for i in idx.reshape(-1)]
            if idx.ndim != 1 or len(flat) != 1:
                self._fail(nd, f"gathers rows {flat} of {v.name!r}; use a 1-D index or Slice")
            i = flat[0]
            self._set(nd, self._hin_rows(nd, v, i, i + 1 if i != -1 else _BIG))
            return
        self._check_kind(nd, v)
        r = len(v.axes)
        axis = self._norm_axis(nd, axis, r)
        lab = v.axes[axis]
        flat = [int(i) for i in idx.reshape(-1)]
        if lab in ("T", "T1"):
            if len(flat) != 1 or not (self._last_index(flat[0]) or (lab == "T1" and flat[0] == 0)):
                self._fail(nd, f"gathers time steps {flat} of {self._describe(v)}; grulite heads "
                               "read the last step (index -1)")
            new = "T1" if idx.ndim == 1 else None
        elif lab == "S":
            try:
                rows = tuple(v.rows[i] for i in flat)
            except IndexError:
                self._fail(nd, f"row index {flat} out of range for {len(v.rows)} state rows")
            if idx.ndim == 0:
                self._set(nd, self._after_axes(nd, replace(v, rows=rows),
                                               v.axes[:axis] + v.axes[axis + 1:]))
            else:
                self._set(nd, replace(v, rows=rows))
            return
        elif self._droppable(v, lab) and len(flat) == 1 and flat[0] in (0, -1):
            new = lab if idx.ndim == 1 else None
        else:
            self._fail(nd, f"gathers along axis {axis} ({lab}) of {self._describe(v)}; grulite "
                           "maps only taking the last time step or rows of the final state")
        axes = v.axes[:axis] + ((new,) if new else ()) + v.axes[axis + 1:]
        self._set(nd, self._after_axes(nd, v, axes))

    def _hin_rows(self, nd, v: _V, s: int, e: int) -> _V:
        """Rows [s:e] of an initial-state input (r1 < 0: row count unknown)."""
        n = v.r1 - v.r0 if v.r1 >= 0 else None
        if n is None:
            if s < 0 or e < 0:
                self._fail(nd, f"slices {v.name!r} from its end, but its row count is unknown")
            return replace(v, r0=v.r0 + s, r1=-1 if e >= _BIG else v.r0 + e, sliced=True)
        rs = range(n)[slice(s, min(e, _BIG))]
        if not len(rs):
            self._fail(nd, f"takes no rows of {v.name!r}")
        return replace(v, r0=v.r0 + rs.start, r1=v.r0 + rs.stop, sliced=True)

    def _op_Slice(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        if "starts" in a:                          # opset < 10: attributes
            starts, ends = [int(x) for x in a["starts"]], [int(x) for x in a["ends"]]
            axes = [int(x) for x in a.get("axes", range(len(starts)))]
            steps = [1] * len(starts)
        else:
            starts = self._ints(nd, a, "starts", 1)
            ends = self._ints(nd, a, "ends", 2)
            axes = self._ints(nd, a, "axes", 3)
            steps = self._ints(nd, a, "steps", 4)
            if starts is None or ends is None:
                self._fail(nd, "missing starts / ends")
            axes = list(range(len(starts))) if axes is None else axes
            steps = [1] * len(starts) if steps is None else steps
        if v.kind == "hin":
            for s, e, ax, st in zip(starts, ends, axes, steps):
                if ax % 3 != 0 or st != 1:
                    self._fail(nd, f"slices axis {ax} (step {st}) of the initial state input "
                                   f"{v.name!r}; grulite maps only row ranges (axis 0, step 1)")
                v = self._hin_rows(nd, v, s, e)
            self._set(nd, v)
            return
        self._check_kind(nd, v)
        r = len(v.axes)
        new = list(v.axes)
        rows = v.rows
        for s, e, ax, st in zip(starts, ends, axes, steps):
            ax = self._norm_axis(nd, ax, r)
            lab = v.axes[ax]
            size = self._size(v, lab)
            full = st == 1 and (s == 0 or (size is not None and s <= -size)) and \
                (e >= _BIG or (size is not None and e >= size))
            if full:
                continue
            if lab == "T" and st == 1 and e >= _BIG and self._last_index(s):
                new[ax] = "T1"
            elif lab == "T" and st == 1 and self.static_T is not None and \
                    range(self.static_T)[slice(s, e)] == range(self.static_T - 1, self.static_T):
                new[ax] = "T1"
            elif lab == "S":
                rows = tuple(rows[slice(s, min(e, _BIG), st)])
                if not rows:
                    self._fail(nd, "slices away every state row")
            else:
                self._fail(nd, f"slices [{s}:{e}:{st}] of axis {ax} ({lab}) of "
                               f"{self._describe(v)}; grulite maps only taking the last time "
                               "step or rows of the final state")
        self._set(nd, replace(v, axes=tuple(new), rows=rows))

    def _op_Concat(self, nd, kinds, a):
        parts = [(k, x) for k, x in kinds if k != "none"]
        if any(k != "val" or x.kind != "state" for k, x in parts):
            what = sorted({("constant" if k == "const" else x.kind) for k, x in parts})
            self._fail(nd, f"concatenates {', '.join(what)} tensors; grulite maps Concat only "
                           "for stacking the layers' final states (h_n); each GRU layer must read "
                           "exactly the previous layer's output")
        first = parts[0][1]
        r = len(first.axes)
        axis = self._norm_axis(nd, int(a.get("axis", 0)), r)
        if any(x.axes != first.axes for _, x in parts) or first.axes[axis] != "S":
            self._fail(nd, "concatenates final states along an axis other than their rows")
        rows = tuple(row for _, x in parts for row in x.rows)
        self._set(nd, replace(first, rows=rows))

    # -- the GRU -------------------------------------------------------

    def _op_GRU(self, nd, kinds, a):
        where = self._where(nd)
        ins = list(nd.input) + [""] * (6 - len(nd.input))
        known = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                 "hidden_size", "layout", "linear_before_reset", "output_sequence"}
        for key in a:
            if key not in known:
                self._fail(nd, f"unknown GRU attribute {key!r}")
        if "clip" in a:
            self._fail(nd, f"attribute clip={a['clip']}: grulite does not clip the gate inputs; "
                           "export the model without clip")
        for key in ("activation_alpha", "activation_beta"):
            if key in a:
                self._fail(nd, f"attribute {key}={a[key]}: grulite computes the default "
                               "activations (Sigmoid, Tanh), which take no alpha / beta")
        direction = a.get("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            self._fail(nd, f"direction {direction!r}: expected forward, reverse or bidirectional")
        D = 2 if direction == "bidirectional" else 1
        if "activations" in a:
            acts = [str(s) for s in a["activations"]]
            if [s.lower() for s in acts] != ["sigmoid", "tanh"] * D:
                self._fail(nd, f"attribute activations={acts}: grulite computes "
                               f"{['Sigmoid', 'Tanh'] * D} (the defaults) only")
        layout = int(a.get("layout", 0))
        if layout not in (0, 1):
            self._fail(nd, f"layout={layout}: expected 0 or 1")
        lbr = int(a.get("linear_before_reset", 0))
        if lbr not in (0, 1):
            self._fail(nd, f"linear_before_reset={lbr}: expected 0 or 1")

        # X: the previous stage's sequence.
        k0, x = kinds[0]
        if k0 != "val" or x.kind != "seq":
            what = "a constant" if k0 == "const" else (x.kind if k0 == "val" else "absent")
            self._fail(nd, f"its input X is {what}; expected the graph's input sequence or the "
                           "previous GRU layer's output")
        stage = x.stage
        if stage != len(self.layers):
            other = self.layers[stage].node if stage < len(self.layers) else "?"
            self._fail(nd, f"reads the same sequence as GRU node {other!r}; grulite maps a single "
                           "stack of GRU layers, each reading the previous one's output")
        if "T1" in x.axes or ("T" not in x.axes and stage > 0):
            self._fail(nd, f"its input X {self._describe(x)} is not a whole sequence")
        want = ("T", "B") if layout == 0 else ("B", "T")
        if len(x.axes) != 3 or not self._is_feature(x, x.axes[2]):
            self._fail(nd, f"its input X has axes {self._describe(x)}; expected "
                           f"({want[0]}, {want[1]}, features) for layout={layout}")
        if stage == 0:
            if set(x.axes[:2]) != {"A0", "A1"}:
                self._fail(nd, f"its input X has axes {self._describe(x)}")
            t_lab = x.axes[want.index("T")]
            self.t_label = t_lab
            self.batch_first = t_lab == "A1"
            ts = self.x_shape[0 if t_lab == "A0" else 1] if self.x_shape else None
            self.static_T = ts if isinstance(ts, int) and ts > 0 else None
            bs = self.x_shape[1 if t_lab == "A0" else 0] if self.x_shape else None
            self.static_B = bs if isinstance(bs, int) and bs > 0 else None
        elif x.axes[:2] != want:
            self._fail(nd, f"its input X has axes {self._describe(x)}; expected "
                           f"({want[0]}, {want[1]}, features) for layout={layout}")
        F = self._stage_info(stage)["F"]

        # Weights.
        def const(pos: int, what: str, required: bool = True) -> Optional[np.ndarray]:
            k, arr = kinds[pos] if pos < len(kinds) else ("none", None)
            if k == "none":
                if required:
                    self._fail(nd, f"input {what} is missing")
                return None
            if k != "const":
                self._fail(nd, f"input {what} ({ins[pos]!r}) is computed at run time; grulite "
                               "needs it constant (an initializer or Constant node)")
            arr = np.asarray(arr)
            if arr.dtype.kind != "f":
                self._fail(nd, f"input {what} has dtype {arr.dtype}; expected float")
            return arr.astype(np.float32)

        W = const(1, "W")
        R = const(2, "R")
        Bv = const(3, "B", required=False)
        if R.ndim != 3 or R.shape[0] != D or R.shape[1] % 3 or R.shape[1] != 3 * R.shape[2] \
                or R.shape[2] < 1:
            self._fail(nd, f"R has shape {R.shape}; expected (num_directions={D}, 3*hidden_size, "
                           "hidden_size)")
        H = int(R.shape[2])
        if "hidden_size" in a and int(a["hidden_size"]) != H:
            self._fail(nd, f"attribute hidden_size={a['hidden_size']} but R has shape {R.shape} "
                           f"(hidden_size {H})")
        if W.ndim != 3 or W.shape[:2] != (D, 3 * H) or W.shape[2] < 1:
            self._fail(nd, f"W has shape {W.shape}; expected (num_directions={D}, 3*hidden_size="
                           f"{3 * H}, input_size)")
        I = int(W.shape[2])
        if F is not None and F != I:
            src = "the graph input" if stage == 0 else f"GRU layer {stage - 1}"
            self._fail(nd, f"W has shape {W.shape} (input_size {I}) but its input X from {src} "
                           f"has {F} features")
        if Bv is not None and Bv.shape != (D, 6 * H):
            self._fail(nd, f"B has shape {Bv.shape}; expected (num_directions={D}, "
                           f"6*hidden_size={6 * H})")
        lay = _Layer(node=self._nname(nd), D=D, H=H, I=I, reverse=direction == "reverse",
                     reset_after=bool(lbr), bias=Bv is not None, layout=layout)
        for d in range(D):
            lay.weight_ih.append(_zrh_to_rzn(W[d]))
            lay.weight_hh.append(_zrh_to_rzn(R[d]))
            if Bv is not None:
                lay.bias_ih.append(_zrh_to_rzn(Bv[d, :3 * H]))
                lay.bias_hh.append(_zrh_to_rzn(Bv[d, 3 * H:]))
        lay.tensors = {ins[i]: list(np.shape(self.const[ins[i]])) for i in (1, 2, 3) if ins[i]}

        # sequence_lens
        k, v = kinds[4] if len(kinds) > 4 else ("none", None)
        if k == "const":
            self._fail(nd, f"sequence_lens ({ins[4]!r}) is a constant; grulite takes lengths at "
                           "run time: make it a graph input (the model's lengths=)")
        if k == "val":
            if v.kind != "len":
                self._fail(nd, f"sequence_lens ({ins[4]!r}) is computed in the graph; grulite "
                               "maps only a graph input (the model's lengths=)")
            lay.lengths = v.name
        # initial_h
        k, v = kinds[5] if len(kinds) > 5 else ("none", None)
        if k == "const":
            if np.any(np.asarray(v)):
                self._fail(nd, f"initial_h ({ins[5]!r}) is a non-zero constant; grulite takes the "
                               "initial state at run time: make it a graph input (the model's h0=)")
        elif k == "val":
            if v.kind == "zeros":
                pass
            elif v.kind == "hin" and layout == 1:
                if v.sliced:
                    self._fail(nd, f"initial_h is a slice of {v.name!r}; with layout=1 "
                                   "(initial_h (B, D, H)) grulite maps only a whole graph input")
                lay.h0 = (v.name, None, None)
            elif v.kind == "hin":
                n = v.r1 - v.r0 if v.r1 >= 0 else None
                if n is not None and n != D:
                    self._fail(nd, f"initial_h takes rows {v.r0}:{v.r1} of {v.name!r}, "
                                   f"{n} rows; the GRU has {D} direction(s)")
                lay.h0 = (v.name, v.r0, v.r0 + D)
            else:
                self._fail(nd, f"initial_h ({ins[5]!r}) is computed in the graph ({v.kind}); "
                               "grulite maps a graph input (the model's h0=), or zeros")
        self.layers.append(lay)
        s = stage + 1
        if len(nd.output) > 0 and nd.output[0]:
            axes = ("T", "D", "B", "H") if layout == 0 else ("B", "T", "D", "H")
            self.vals[nd.output[0]] = _V("seq", axes, stage=s)
        if len(nd.output) > 1 and nd.output[1]:
            axes = ("S", "B", "H") if layout == 0 else ("B", "S", "H")
            self.vals[nd.output[1]] = _V("state", axes, stage=s,
                                         rows=tuple((stage, d) for d in range(D)))

    # -- the head ------------------------------------------------------

    def _head_input(self, nd, v: _V, axis_pos: int) -> None:
        """Checks that `v` can take a new dense layer."""
        if v.kind == "seq":
            if self.dense:
                self._fail(nd, f"a second head on the GRU output (the first starts at "
                               f"{self.dense[0]['name']!r}); grulite models have one head")
            if v.stage == 0:
                self._fail(nd, "a dense layer on the graph input, before any GRU")
            if "T1" in v.axes:
                self._fail(nd, f"its input {self._describe(v)} keeps a time axis of size 1; "
                               "squeeze it first")
            lab = v.axes[axis_pos]
            if not self._is_feature(v, lab):
                self._fail(nd, f"multiplies axis {lab} of {self._describe(v)}; expected the "
                               "features")
        elif v.kind == "head":
            if v.ver != self.head_ver:
                self._fail(nd, "the head branches (a dense layer reads an earlier head output); "
                               "grulite heads are one chain")
            if v.axes[axis_pos] != "F" or "T1" in v.axes:
                self._fail(nd, f"multiplies axis {v.axes[axis_pos]} of {self._describe(v)}")
        else:
            self._check_kind(nd, v, ("seq", "head"))

    def _add_dense(self, nd, v: _V, weight: np.ndarray, bias: Optional[np.ndarray],
                   state: str) -> None:
        in_f = self._size(v, v.axes[-1]) if v.kind == "head" else self._stage_info(v.stage)["F"]
        if weight.shape[1] != in_f:
            self._fail(nd, f"weight of shape {tuple(weight.shape)} (out, in) does not take "
                           f"{in_f} features")
        if v.kind == "seq":
            self.head_stage = v.stage
        wname = nd.input[1] if len(nd.input) > 1 else ""
        name = self._nname(nd)
        if wname.endswith(".weight"):
            name = wname[:-len(".weight")]
        elif name.startswith("/") and name.count("/") >= 2:        # torch: /fc/MatMul
            name = ".".join(name.strip("/").split("/")[:-1])
        self.dense.append(dict(name=name, in_features=int(in_f),
                               out_features=int(weight.shape[0]), activation="none",
                               weight=np.ascontiguousarray(weight, np.float32),
                               bias=None if bias is None
                               else np.ascontiguousarray(bias, np.float32)))
        self.dense_state = state
        self.head_ver += 1
        axes = tuple("F" if self._is_feature(v, lab) or lab == "F" else lab for lab in v.axes)
        self._set(nd, _V("head", axes, stage=self.head_stage, n=len(self.dense),
                         ver=self.head_ver))

    def _vector(self, nd, c: np.ndarray, out: int, what: str) -> np.ndarray:
        c = np.asarray(c, np.float32)
        if c.ndim > 0 and any(s != 1 for s in c.shape[:-1]) or \
                (c.ndim > 0 and c.shape[-1] not in (1, out)):
            self._fail(nd, f"{what} of shape {c.shape} does not broadcast as a per-feature "
                           f"vector of {out}")
        return np.broadcast_to(c.reshape(-1), (out,)).astype(np.float32)

    def _op_Gemm(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        if v.kind in ("seq", "head") and len(v.axes) != 2:
            self._fail(nd, f"its input A has axes {self._describe(v)}; Gemm takes "
                           "(batch, features)")
        self._head_input(nd, v, 1)
        if a.get("transA", 0):
            self._fail(nd, "transA=1 is not supported")
        if v.axes[0] != "B":
            self._fail(nd, f"its input A has axes {self._describe(v)}; expected (B, features)")
        k, Bm = kinds[1]
        if k != "const" or np.asarray(Bm).ndim != 2:
            self._fail(nd, "its weight B must be a constant 2-D matrix")
        Bm = np.asarray(Bm, np.float32) * np.float32(a.get("alpha", 1.0))
        weight = Bm if a.get("transB", 0) else Bm.T
        bias = None
        if len(kinds) > 2 and kinds[2][0] != "none":
            k, C = kinds[2]
            if k != "const":
                self._fail(nd, "its bias C must be a constant")
            bias = self._vector(nd, C, weight.shape[0], "bias C") * np.float32(a.get("beta", 1.0))
        self._add_dense(nd, v, weight, bias, "dense")

    def _op_MatMul(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        if kinds[1][0] != "const":
            self._fail(nd, "multiplies by a run-time tensor; grulite maps MatMul by a constant "
                           "weight (a Linear layer)")
        self._head_input(nd, v, len(v.axes) - 1)
        Wm = np.asarray(kinds[1][1], np.float32)
        if Wm.ndim != 2:
            self._fail(nd, f"weight of shape {Wm.shape}; expected (in_features, out_features)")
        self._add_dense(nd, v, Wm.T, None, "matmul")

    def _op_Add(self, nd, kinds, a):
        vals = [(i, x) for i, (k, x) in enumerate(kinds) if k == "val"]
        consts = [x for k, x in kinds if k == "const"]
        if len(vals) != 1 or len(consts) != 1:
            self._fail(nd, "adds two run-time tensors; grulite maps Add only as the bias of a "
                           "Linear layer")
        v = vals[0][1]
        if v.kind != "head" or v.ver != self.head_ver or self.dense_state == "act":
            self._fail(nd, f"adds a constant to a {v.kind} value {self._describe(v)}; grulite "
                           "maps Add only as the bias of a Linear layer (MatMul + Add)")
        d = self.dense[-1]
        c = self._vector(nd, consts[0], d["out_features"], "bias")
        d["bias"] = c if d["bias"] is None else (d["bias"] + c).astype(np.float32)
        self.dense_state = "dense"
        self.head_ver += 1
        self._set(nd, replace(v, ver=self.head_ver))

    def _activation(self, nd, kinds, act: str, axis: Optional[int] = None):
        v = self._runtime(nd, kinds)
        if v.kind != "head":
            self._fail(nd, f"{nd.op_type} directly on a {v.kind} value {self._describe(v)}; "
                           "grulite heads are Linear layers each followed by an activation")
        if v.ver != self.head_ver:
            self._fail(nd, "the head branches (an activation reads an earlier head output)")
        if self.dense_state == "act":
            self._fail(nd, f"a second activation after {self.dense[-1]['name']!r} (already "
                           f"{self.dense[-1]['activation']}); grulite takes one per dense layer")
        if axis is not None:
            ax = self._norm_axis(nd, axis, len(v.axes))
            if v.axes[ax] != "F" or ax != len(v.axes) - 1:
                self._fail(nd, f"softmax over axis {axis} ({v.axes[ax]}) of "
                               f"{self._describe(v)}; grulite's softmax runs over the features")
        self.dense[-1]["activation"] = act
        self.dense_state = "act"
        self.head_ver += 1
        self._set(nd, replace(v, ver=self.head_ver))

    def _op_Relu(self, nd, kinds, a):
        self._activation(nd, kinds, "relu")

    def _op_Tanh(self, nd, kinds, a):
        self._activation(nd, kinds, "tanh")

    def _op_Sigmoid(self, nd, kinds, a):
        self._activation(nd, kinds, "sigmoid")

    def _op_Softmax(self, nd, kinds, a):
        default = -1 if self.opset >= 13 else 1
        self._activation(nd, kinds, "softmax", int(a.get("axis", default)))

    def _op_Shape(self, nd, kinds, a):
        v = self._runtime(nd, kinds)
        dims = None
        if v.kind in ("seq", "head", "state"):
            dims = tuple(("axis", lab, self._size(v, lab)) for lab in v.axes)
            dims = dims[slice(int(a.get("start", 0)), a.get("end"))]
        self._set(nd, _V("shape", dims=dims))

    def _op_Size(self, nd, kinds, a):
        self._set(nd, _V("shape"))

    # ---- outputs -----------------------------------------------------

    def _check_outputs(self) -> None:
        L = len(self.layers)
        if self.dense and self.head_stage != L:
            raise GruliteError(f"{os.path.basename(self.path)}: the head "
                               f"({self.dense[0]['name']!r}) reads GRU layer {self.head_stage - 1}"
                               f", not the top layer {L - 1}; grulite heads read the top layer")
        lens = {l.lengths for l in self.layers}
        if len(lens) > 1:
            raise GruliteError(f"{os.path.basename(self.path)}: the GRU layers take different "
                               f"sequence_lens ({', '.join(repr(x) for x in lens)}); grulite "
                               "applies one lengths= to every layer")
        self.outputs = {}
        for o in self.graph.output:
            name = o.name
            if name in self.const or name not in self.vals:
                raise GruliteError(f"{os.path.basename(self.path)}: graph output {name!r} does "
                                   "not depend on the input sequence")
            v = self.vals[name]
            if v.kind == "seq":
                if v.stage != L:
                    raise GruliteError(f"{os.path.basename(self.path)}: graph output {name!r} "
                                       f"is the output of GRU layer {v.stage - 1}, not of the top "
                                       f"layer {L - 1}; a grulite model returns the top layer's y")
                what = "y" if "T" in v.axes else "y at the last step"
                self.outputs[name] = f"{what} {self._describe(v)}"
            elif v.kind == "state":
                rows = [f"l{k}{'_reverse' if d else ''}" for k, d in v.rows]
                self.outputs[name] = f"h_n rows [{', '.join(rows)}] {self._describe(v)}"
            elif v.kind == "head":
                if v.ver != self.head_ver:
                    raise GruliteError(f"{os.path.basename(self.path)}: graph output {name!r} is "
                                       "an intermediate value of the head; a grulite model "
                                       "returns only the head's final output (predict)")
                self.outputs[name] = ("predict(x, all_steps=True) " if "T" in v.axes
                                      else "predict(x) ") + self._describe(v)
            else:
                raise GruliteError(f"{os.path.basename(self.path)}: graph output {name!r} "
                                   f"({v.kind}) is not the GRU output, final state or head output")

    # ---- result ------------------------------------------------------

    def summary(self) -> dict:
        layers = []
        for l in self.layers:
            layers.append(dict(input_size=l.I, hidden_size=l.H, num_directions=l.D,
                               reverse=l.reverse, reset_after=l.reset_after, bias=l.bias,
                               weight_ih=l.weight_ih, weight_hh=l.weight_hh,
                               bias_ih=l.bias_ih, bias_hh=l.bias_hh,
                               node=l.node, layout=l.layout))
        # h0: which graph input (rows) feeds each layer's initial_h.
        def src(l):
            if l.h0 is None:
                return None
            name, r0, r1 = l.h0
            if r0 is None:
                return f"{name}.transpose(1, 0, 2)"     # layout=1: (B, D, H)
            return f"{name}[{r0}:{r1}]"
        per_layer = [src(l) for l in self.layers]
        h0: Any = None
        if all(l.h0 is not None and l.h0[1] is not None for l in self.layers) and \
                len({l.h0[0] for l in self.layers}) == 1:
            pos = 0
            for l in self.layers:
                if l.h0[1] != pos:
                    break
                pos = l.h0[2]
            else:
                h0 = self.layers[0].h0[0]        # the graph input is the model's h0 as is
        if h0 is None and any(p is not None for p in per_layer):
            h0 = per_layer        # h0 = concatenate of these (zeros for None) along axis 0
        inputs = dict(x=self.x_name, lengths=self.layers[0].lengths, h0=h0)
        dense = [dict(d) for d in self.dense]
        n_params = sum(np.size(a) for l in layers for f in ("weight_ih", "weight_hh", "bias_ih",
                                                            "bias_hh") for a in l[f]) + \
            sum(d["weight"].size + (0 if d["bias"] is None else d["bias"].size) for d in dense)
        tensors = {}
        for l in self.layers:
            tensors.update(l.tensors)
        return dict(prefix=", ".join(l.node for l in self.layers), layers=layers, dense=dense,
                    parameters=int(n_params), batch_first=bool(self.batch_first),
                    inputs=inputs, outputs=dict(self.outputs), opset=self.opset,
                    producer=" ".join(_text(x) for x in (self.model.producer_name,
                                                         self.model.producer_version) if x),
                    tensors=tensors)


def _read(path: Union[str, os.PathLike]):
    onnx = _need_onnx()
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such file: {p!r}")
    if os.path.isdir(p):
        raise GruliteError(f"{p!r} is a directory, not an ONNX file")
    try:
        # External data is never followed: it would make a model file read
        # any path it names (onnx < 1.21 allowed symlinks and "..").
        model = onnx.load(p, load_external_data=False)
    except Exception as e:     # DecodeError, ValueError, RecursionError, ...
        raise GruliteError(f"{p!r} is not a readable ONNX model: {type(e).__name__}: {e}") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.input):
        raise GruliteError(f"{p!r} is not a readable ONNX model: it holds no graph")
    ext = _external_tensor(model.graph, onnx.TensorProto.EXTERNAL)
    if ext is not None:
        name, location = ext
        raise GruliteError(f"{p!r}: tensor {_text(name)!r} keeps its data in an external file "
                           f"({_text(location)!r}); grulite imports only self-contained ONNX files "
                           "and never reads external data (re-save with onnx.save_model(model, path, "
                           "save_as_external_data=False))")
    return model, p


def _external_tensor(graph, external: int, depth: int = 0):
    """(name, location) of the first tensor of `graph` (initializers,
    sparse initializers, node attributes, subgraphs) whose data lives in
    an external file, or None."""
    if depth > 64:
        raise GruliteError("subgraphs nested more than 64 deep")
    tensors = list(graph.initializer)
    for sp in graph.sparse_initializer:
        tensors += [sp.values, sp.indices]
    subgraphs = []
    for node in graph.node:
        for a in node.attribute:
            tensors += ([a.t] if a.HasField("t") else []) + list(a.tensors)
            subgraphs += ([a.g] if a.HasField("g") else []) + list(a.graphs)
    for t in tensors:
        if t.data_location == external:
            where = {e.key: e.value for e in t.external_data}.get("location", "")
            return t.name, where
    for g in subgraphs:
        found = _external_tensor(g, external, depth + 1)
        if found is not None:
            return found
    return None


def image_from_onnx(path: Union[str, os.PathLike], dtype: str = "float32") -> tuple:
    """The .grl image of the GRU model in an ONNX file, and a summary.

    The summary (for the command line) has ``layers`` and ``dense`` (as
    given to ``image_from_layers``), ``parameters``, ``prefix`` (the GRU
    node names), ``batch_first``, ``inputs`` (which graph inputs are x, h0,
    lengths), ``outputs`` (what each graph output is in grulite's terms),
    ``opset`` and ``producer``.

    Raises FileNotFoundError for a missing file and GruliteError for a file
    that is not ONNX or a graph grulite cannot map (the message names the
    node and the reason).
    """
    model, p = _read(path)
    with reading(p, "ONNX GRU model"):
        imp = _Importer(model, p)
        imp.run()
        summary = _texts(imp.summary())
    layers = [{k: v for k, v in l.items() if k not in ("node", "layout")}
              for l in summary["layers"]]
    meta = {
        "source": os.path.basename(p),
        "format": "onnx",
        "opset": imp.opset,
        "producer": summary["producer"],
        "nodes": [l["node"] for l in summary["layers"]],
        "inputs": summary["inputs"],
        "outputs": summary["outputs"],
        "tensors": summary["tensors"],
        "head": [[d["name"], d["activation"]] for d in summary["dense"]],
    }
    image = image_from_layers(summary["layers"][0]["input_size"], layers, summary["dense"], meta,
                              batch_first=bool(imp.batch_first), dtype=dtype)
    return image, summary


def from_onnx(path: Union[str, os.PathLike], *, dtype: str = "float32",
              num_threads: Optional[int] = None):
    """Builds a model from the GRU nodes (and head) of an ONNX file.

    See the module documentation for what imports and how ONNX's outputs
    map onto the model's: ``y = Y.transpose(0, 2, 1, 3).reshape(T, B, D*H)``
    for ``layout=0``; h0 / h_n are (L*D, B, H).  Needs the ``onnx`` package
    (``pip install grulite[onnx]``), never onnxruntime.
    """
    from grulite._model import from_bytes
    image, _ = image_from_onnx(path, dtype=dtype)
    return from_bytes(image, num_threads=num_threads)
