"""Importing GRU models from ONNX files.

``from_onnx(path)`` reads an ONNX graph with the ``onnx`` package (the
optional extra ``pip install grulite[onnx]``; ONNX Runtime is never needed)
and turns it into a grulite model through
``grulite.importers._image.image_from_layers``: :mod:`._graph` reads the
graph, :mod:`._fold` folds constants, :mod:`._map` maps the GRU nodes and
the head.

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
  Reshape, Cast, ..., see ``_fold.FOLD_OPS``; a folded tensor may not be much
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
from typing import Union

from grulite._errors import GruliteError, reading
from grulite.importers._image import image_from_layers
from grulite.importers._lazy import existing_path
from grulite.importers._onnx._graph import _text, _texts
from grulite.importers._onnx._map import Mapper

__all__ = ["image"]


def _need_onnx():
    try:
        import onnx  # noqa: F401
        from onnx import numpy_helper  # noqa: F401
    except ImportError:
        raise GruliteError("reading ONNX needs the onnx package: "
                           "pip install grulite[onnx]") from None
    return onnx


def _read(path: Union[str, os.PathLike]):
    onnx = _need_onnx()
    p = existing_path(path)
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


def image(path: Union[str, os.PathLike], dtype: str = "auto") -> tuple[bytes, dict]:
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
        imp = Mapper(model, p)
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
