"""Constant folding and shape arithmetic for the ONNX importer.

Exports without constant folding compute the GRU weights with Slice /
Concat / Unsqueeze / Transpose on initializers, and every exporter emits
shape arithmetic (Shape -> Gather -> Concat -> Reshape) and the zero
initial state (ConstantOfShape / Expand).  :class:`Folder` evaluates ops of
:data:`FOLD_OPS` whose inputs are all constants (with ONNX's reference
evaluator), within a budget that grows with the constants the file holds;
:func:`shape_value` follows ops on run-time shapes and zero tensors.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

__all__ = ["Folder", "FOLD_OPS", "CONTROL_FLOW", "BIG", "shape_value"]

BIG = 1 << 62          # slice ends at or above this are "to the end"

# Ops evaluated when all their inputs are constants.  Anything else on
# constants is reported like any other unsupported op; control flow is
# refused outright (a Loop's trip count alone can keep the evaluator busy
# for ever).
_FOLD_SAME = ("Identity", "Dropout", "Cast", "CastLike", "Transpose", "Reshape", "Squeeze",
              "Unsqueeze", "Flatten", "Slice", "Split", "Concat", "Shape", "Size", "Neg")
_FOLD_BROADCAST = ("Add", "Sub", "Mul", "Div")
_FOLD_CREATE = ("Gather", "ConstantOfShape", "Expand", "Tile", "Range")
FOLD_OPS = _FOLD_SAME + _FOLD_BROADCAST + _FOLD_CREATE
CONTROL_FLOW = ("Loop", "Scan", "If", "SequenceMap")
# Elements one folded output may have, and all folded outputs together, at
# least (both grow with the constants the file holds: exports without
# folding copy each weight a few times).
_FOLD_MIN_ELEMENTS = 1 << 24
_FOLD_MIN_TOTAL = 1 << 26
_FOLD_TOTAL_RATIO = 8

Fail = Callable[[Any, str], Any]          # (node, message) -> raises
Attrs = Callable[[Any], dict]             # node -> its attributes


class Folder:
    """Evaluates constant subgraphs of one model into ``const`` (name ->
    array), within the budget the stored constants warrant."""

    def __init__(self, model: Any, const: dict, fail: Fail, attrs: Attrs):
        from onnx import TensorProto
        self.model, self.const, self.fail, self.attrs = model, const, fail, attrs
        self.numeric_types = {getattr(TensorProto, t) for t in (
            "FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8",
            "UINT16", "UINT32", "UINT64", "BOOL")}
        self.stored_elements = 0      # of the initializers and Constant nodes
        self.folded_elements = 0      # of the outputs fold made so far

    def store(self, name: str, arr: Any) -> None:
        """A constant the file holds (an initializer or a Constant node)."""
        self.const[name] = np.asarray(arr)
        self.stored_elements += self.const[name].size

    def elements(self, nd: Any) -> int:
        """An upper bound on the elements of the outputs of `nd` (an op of
        FOLD_OPS on constant inputs), computed from the inputs' shapes and
        values without evaluating it."""
        from onnx import TensorProto
        op = nd.op_type
        ins = [np.asarray(self.const[x]) if x else None for x in nd.input]
        for x in ins:
            if x is not None and x.dtype.kind not in "biufc":
                self.fail(nd, f"an input of dtype {x.dtype}: grulite evaluates constant "
                              "subgraphs of numbers only")

        def prod(dims) -> int:
            n = 1
            for d in dims:
                n *= max(int(d), 0)
            return n

        def values(x, what: str) -> list:
            if x is None or x.dtype.kind not in "iu" or x.ndim > 1 or x.size > 64:
                self.fail(nd, f"its {what} is not a 1-D integer tensor of at most 64 entries")
            return [int(v) for v in x.reshape(-1)]

        def broadcast(shapes) -> list:
            rank = max((len(sh) for sh in shapes), default=0)
            out = []
            for i in range(rank):
                dims = {int(sh[len(sh) - rank + i]) for sh in shapes if len(sh) - rank + i >= 0}
                if len(dims - {1}) > 1:
                    self.fail(nd, f"input shapes {[tuple(sh) for sh in shapes]} do not "
                                  "broadcast")
                out.append(max(dims - {1}, default=1))
            return out

        if op in _FOLD_SAME:
            if op == "Cast":
                if self.attrs(nd).get("to") == TensorProto.STRING:
                    self.fail(nd, "casts constants to strings, which grulite does not evaluate")
            return sum(x.size for x in ins if x is not None) + 64
        if op in _FOLD_BROADCAST:
            return prod(broadcast([x.shape for x in ins if x is not None]))
        data = ins[0] if ins else None
        if op == "Gather":
            if data is None or len(ins) < 2 or ins[1] is None or data.ndim == 0:
                return 0                                # the evaluator refuses it
            axis = int(self.attrs(nd).get("axis", 0))
            if not -data.ndim <= axis < data.ndim:
                return 0
            rest = data.size // data.shape[axis] if data.shape[axis] else 0
            return ins[1].size * rest
        if op == "ConstantOfShape":
            value = self.attrs(nd).get("value")
            if value is not None and value.data_type not in self.numeric_types:
                self.fail(nd, "fills a tensor with non-numeric values, which grulite does "
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
                self.fail(nd, f"Range({start}, {limit}, {delta}) has no end")
            return max(int(np.ceil((limit - start) / delta)), 0)
        return 0

    def fold(self, nd: Any) -> None:
        """Evaluates a node whose inputs are all constants, if its outputs are
        no larger than the constants in the file warrant."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        n = self.elements(nd)
        limit = max(_FOLD_MIN_ELEMENTS, self.stored_elements)
        budget = max(_FOLD_MIN_TOTAL, _FOLD_TOTAL_RATIO * self.stored_elements)
        if n > limit or self.folded_elements + n > budget:
            what = (f"{n} elements (the limit is {limit}, from the constants this file holds)"
                    if n > limit else f"{n} more elements (with {self.folded_elements} already "
                    f"computed the limit is {budget}, from the constants this file holds)")
            self.fail(nd, f"evaluating it on its constant inputs would make {what}; tensors "
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
            self.fail(nd, f"cannot evaluate it on its constant inputs: {type(e).__name__}: {e}")
        for name, arr in zip([o for o in nd.output if o], outs):
            self.const[name] = np.asarray(arr)
            self.folded_elements += self.const[name].size


def shape_value(nd: Any, kinds: list, a: dict, ints: Callable) -> tuple:
    """What an op on shapes and zero tensors (torch's zero initial state)
    makes: ("zeros", None, False) or ("shape", dims, scalar), dims being
    the symbolic entries of the shape vector when they can be followed
    (see :func:`_shape_dims`).  kinds: the inputs as the graph reader's
    ``(kind, value)`` pairs; ints(nd, attrs, key, pos): an integer list
    given as an attribute or a constant input."""
    from onnx import numpy_helper
    op = nd.op_type
    first_k, first = kinds[0] if kinds else ("none", None)

    def is_zero(k, v):
        return (k == "val" and v.kind == "zeros") or \
               (k == "const" and np.asarray(v).dtype.kind in "fiu" and not np.any(v))

    out = "shape"
    if op == "ConstantOfShape":
        val = a.get("value")
        fill = 0 if val is None else np.asarray(numpy_helper.to_array(val)).reshape(-1)
        out = "zeros" if not np.any(fill) else "shape"
    elif op in ("Expand", "Slice", "Reshape", "Unsqueeze", "Squeeze", "Transpose",
                "Identity", "Cast", "Gather", "Tile", "Flatten", "Dropout"):
        out = "zeros" if is_zero(first_k, first) else "shape"
    elif op == "Concat":
        out = "zeros" if all(is_zero(k, v) for k, v in kinds if k != "none") else "shape"
    elif op == "Mul" and any(is_zero(k, v) for k, v in kinds):
        out = "zeros"
    if out == "zeros":
        return out, None, False
    return (out,) + _shape_dims(nd, kinds, a, ints)


def _shape_dims(nd: Any, kinds: list, a: dict, ints: Callable) -> tuple:
    """Symbolic entries of a shape vector computed from Shape(...):
    ints, or ("axis", label, size) for a run-time size (torch's x.size(0))."""
    from grulite._errors import GruliteError
    op = nd.op_type

    def entries(k, v) -> tuple:
        if k == "const":
            arr = np.asarray(v)
            if arr.dtype.kind not in "iu" or arr.ndim > 1:
                return None, False
            return tuple(int(x) for x in arr.reshape(-1)), arr.ndim == 0
        if k == "val" and v.kind == "shape" and v.dims is not None:
            return v.dims, v.scalar
        return None, False

    d0: Optional[tuple]
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
            st, en = ints(nd, a, "starts", 1), ints(nd, a, "ends", 2)
            ax = ints(nd, a, "axes", 3) or [0]
            sp = ints(nd, a, "steps", 4) or [1]
            if ax in ([0], [-1]):
                return tuple(d0[slice(st[0], min(en[0], BIG), sp[0])]), False
    except (IndexError, TypeError, ValueError, GruliteError):
        pass
    return None, False
