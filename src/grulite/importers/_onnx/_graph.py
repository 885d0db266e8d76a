"""Reading an ONNX graph for the GRU importer.

:class:`Graph` loads the constants, prunes the nodes that feed no graph
output, gives the graph inputs their roles (the sequence x, initial_h,
sequence_lens) and walks the nodes in order: constants are folded
(:mod:`._fold`), ops on shapes and zeros are followed, and every other node
goes to the subclass's ``_op_<OpType>`` handler (:mod:`._map`), with what
it knows about each input (:class:`_V`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from grulite._errors import GruliteError
from grulite.importers._onnx._fold import CONTROL_FLOW, FOLD_OPS, Folder, shape_value

__all__ = ["Graph"]

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


class Graph:
    """One ONNX model being read; subclasses map its runtime values."""

    SUPPORTED_OPS: tuple = ("Constant",)       # op types the subclass maps

    def __init__(self, model: Any, path: str):
        from onnx import AttributeProto, numpy_helper
        self.nh = numpy_helper
        self.graph_attr = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
        self.model = model
        self.path = path
        self.graph = model.graph
        self.opset = 1
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = int(o.version)
        self.const: dict[str, np.ndarray] = {}
        self.folder = Folder(model, self.const, self._fail, self._attrs)
        self.vals: dict[str, _V] = {}
        self.x_name: Optional[str] = None
        self.x_shape: tuple = ()
        self.unsupported: dict[str, list[str]] = {}
        self.op_types: list[str] = []

    def _check_outputs(self) -> None:
        """Checks the graph outputs once every node is read (subclasses)."""

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

    # ---- reading the graph -------------------------------------------

    def run(self) -> None:
        g = self.graph
        for t in g.initializer:
            self.folder.store(t.name, self._to_array(t))
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
        if op in CONTROL_FLOW or any(a.type in self.graph_attr for a in nd.attribute):
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
            if op not in FOLD_OPS:
                self._mark_bad(nd, op)
                return
            self.folder.fold(nd)
            return
        if any(v.kind == "bad" for v in vals):
            if op not in self.SUPPORTED_OPS:
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
        self.folder.store(nd.output[0], arr)

    def _shape_op(self, nd, kinds) -> None:
        """Ops on shapes and zero tensors (see _fold.shape_value)."""
        kind, dims, scalar = shape_value(nd, kinds, self._attrs(nd), self._ints)
        for o in nd.output:
            if o:
                self.vals[o] = _V(kind, dims=dims, scalar=scalar)
