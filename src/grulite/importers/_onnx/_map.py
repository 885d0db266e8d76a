"""Mapping an ONNX graph's GRU nodes and head onto grulite layers.

:class:`Mapper` follows the GRU's data through the graph: the glue between
GRU nodes (Transpose, Reshape, Squeeze, Gather, Slice, ... tracked axis by
axis with labels T / B / D / H / F), the GRU nodes themselves (gate order
z, r, h -> r, z, n; initial_h and sequence_lens as the model's h0 and
lengths) and the head (Gemm or MatMul + Add, each with at most one
activation).  The conventions are in :mod:`grulite.importers._onnx`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from grulite import _core
from grulite._errors import GruliteError
from grulite.importers._image import count_parameters
from grulite.importers._onnx._fold import BIG
from grulite.importers._onnx._graph import _V, Graph, _text

__all__ = ["Mapper"]

# Op types mapped on runtime tensors (anything may be folded when all its
# inputs are constants).
_GLUE = ("Identity", "Dropout", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
         "Flatten", "Gather", "Slice", "Concat")
_HEAD = ("Gemm", "MatMul", "Add", "Relu", "Tanh", "Sigmoid", "Softmax")
_SHAPE = ("Shape", "Size", "ConstantOfShape", "Expand")
_ACT = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax"}
assert all(a in _core.ACTIVATIONS for a in _ACT.values())


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
    activations: Any = None   # per direction ((f, alpha, beta), (g, alpha, beta)), or None
    clip: Optional[float] = None


def _zrh_to_rzn(a: np.ndarray) -> np.ndarray:
    """ONNX gate blocks (z, r, h) along axis 0 -> PyTorch's (r, z, n)."""
    z, r, h = np.split(a, 3, axis=0)
    return np.concatenate([r, z, h], axis=0)


class Mapper(Graph):
    """The GRU layers and head of one ONNX model (``run()``, then
    ``summary()``)."""

    SUPPORTED_OPS = ("GRU",) + _GLUE + _HEAD + _SHAPE + ("Constant",)

    def __init__(self, model: Any, path: str):
        super().__init__(model, path)
        self.layers: list[_Layer] = []
        self.dense: list[dict] = []
        self.dense_state = ""         # "matmul" | "dense" | "act" for the last dense layer
        self.head_ver = 0
        self.head_stage: Optional[int] = None
        self.batch_first: Optional[bool] = None
        self.t_label: Optional[str] = None        # which of A0 / A1 is time
        self.static_T: Optional[int] = None
        self.static_B: Optional[int] = None

    # ---- what is known of a value's axes ------------------------------

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

    # ---- glue: following the GRU's data through reshapes ----------------

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
            self._set(nd, self._hin_rows(nd, v, i, i + 1 if i != -1 else BIG))
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
            return replace(v, r0=v.r0 + s, r1=-1 if e >= BIG else v.r0 + e, sliced=True)
        rs = range(n)[slice(s, min(e, BIG))]
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
                (e >= BIG or (size is not None and e >= size))
            if full:
                continue
            if lab == "T" and st == 1 and e >= BIG and self._last_index(s):
                new[ax] = "T1"
            elif lab == "T" and st == 1 and self.static_T is not None and \
                    range(self.static_T)[slice(s, e)] == range(self.static_T - 1, self.static_T):
                new[ax] = "T1"
            elif lab == "S":
                rows = tuple(rows[slice(s, min(e, BIG), st)])
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

    def _gru_activations(self, nd, a, D: int):
        """The GRU's activations per direction and its clip, as ONNX Runtime
        reads them: ``activations`` f, g of each direction (2*D names, any
        case); ``activation_alpha`` / ``activation_beta`` consumed in that
        order by the functions that take them.  A list that runs out takes
        the ONNX operators' default where ONNX and ONNX Runtime agree
        (LeakyRelu 0.01, HardSigmoid 0.2 / 0.5, Elu 1.0) and is refused
        where they do not (Affine, ScaledTanh, ThresholdedRelu); values left
        over are refused (ONNX Runtime ignores them)."""
        from grulite._activations import DEFAULT, PARAMS, canonical

        names = [str(s) for s in a.get("activations", [])] or ["Sigmoid", "Tanh"] * D
        if len(names) != 2 * D:
            self._fail(nd, f"attribute activations={names}: a GRU with {D} direction(s) takes "
                           f"{2 * D} (f and g of each direction)")
        lists = {k: [float(v) for v in a.get(f"activation_{k}", [])] for k in ("alpha", "beta")}
        used = {"alpha": 0, "beta": 0}
        agreed = {"leaky_relu", "hard_sigmoid", "elu"}
        parsed = []
        for i, raw in enumerate(names):
            try:
                name = canonical(raw, "activations")
            except GruliteError:
                self._fail(nd, f"activation {raw!r} (activations[{i}]) is not one of ONNX's: "
                               "Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, "
                               "ScaledTanh, HardSigmoid, Elu, Softsign, Softplus")
            vals = [0.0, 0.0]
            for j, key in enumerate(("alpha", "beta")[:len(PARAMS.get(name, ()))]):
                lst = lists[key]
                if used[key] < len(lst):
                    vals[j] = lst[used[key]]
                    used[key] += 1
                elif name in agreed:
                    vals[j] = PARAMS[name][j]
                else:
                    self._fail(nd, f"activation {raw} (activations[{i}]) needs its {key} in "
                                   f"activation_{key}, which has {len(lst)} value(s) for the "
                                   "functions before it (ONNX gives no default for it)")
                if not math.isfinite(vals[j]):
                    self._fail(nd, f"activation {raw} (activations[{i}]): {key} {vals[j]} is not "
                                   "finite")
            parsed.append((name, vals[0], vals[1]))
        for key in ("alpha", "beta"):
            if used[key] < len(lists[key]):
                self._fail(nd, f"attribute activation_{key}={lists[key]} has "
                               f"{len(lists[key])} value(s); the activations {names} take "
                               f"{used[key]}")
        pairs = [(parsed[2 * d], parsed[2 * d + 1]) for d in range(D)]
        acts = None if all(p == DEFAULT for p in pairs) else pairs
        clip = None
        if "clip" in a:
            clip = float(a["clip"])
            if not math.isfinite(clip) or clip <= 0:
                self._fail(nd, f"attribute clip={clip}: expected a finite value > 0")
        return acts, clip

    def _op_GRU(self, nd, kinds, a):
        ins = list(nd.input) + [""] * (6 - len(nd.input))
        known = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                 "hidden_size", "layout", "linear_before_reset", "output_sequence"}
        for key in a:
            if key not in known:
                self._fail(nd, f"unknown GRU attribute {key!r}")
        direction = a.get("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            self._fail(nd, f"direction {direction!r}: expected forward, reverse or bidirectional")
        D = 2 if direction == "bidirectional" else 1
        acts, clip = self._gru_activations(nd, a, D)
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
                     reset_after=bool(lbr), bias=Bv is not None, layout=layout,
                     activations=acts, clip=clip)
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
                               node=l.node, layout=l.layout, activations=l.activations,
                               clip=l.clip))
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
        n_params = count_parameters(layers, dense)
        tensors = {}
        for l in self.layers:
            tensors.update(l.tensors)
        return dict(prefix=", ".join(l.node for l in self.layers), layers=layers, dense=dense,
                    parameters=int(n_params), batch_first=bool(self.batch_first),
                    inputs=inputs, outputs=dict(self.outputs), opset=self.opset,
                    producer=" ".join(_text(x) for x in (self.model.producer_name,
                                                         self.model.producer_version) if x),
                    tensors=tensors)
