"""Makes the ONNX import fixtures in tests/fixtures/onnx/ (judged by ONNX Runtime).

Re-run from the repository root (needs onnx, onnxruntime and, for the torch
exports, torch==2.13.0)::

    python tools/make_onnx_fixtures.py

Writes ``tests/fixtures/onnx/<case>.onnx`` and one ``expected.npz`` holding,
per case, the inputs fed to ONNX Runtime and its outputs::

    <case>/x          the input sequence as the graph takes it
    <case>/h0         optional initial state as the graph takes it
    <case>/lengths    optional sequence_lens (int32)
    <case>/out<i>     ONNX Runtime's i-th graph output
    __cases__         JSON: the list of case configurations

Two families:

* ``node_*``: one ONNX ``GRU`` node built with ``onnx.helper`` over the
  attribute space (direction, linear_before_reset, layout, with / without B,
  sequence_lens and initial_h as graph inputs).  Outputs ``Y``, ``Y_h`` in
  ONNX's form.  ONNX Runtime refuses ``layout=1``: those cases are run as
  the equivalent ``layout=0`` model on transposed inputs and the outputs are
  transposed back to ``layout=1`` form (Y (B, T, D, H), Y_h (B, D, H)).
* ``stack_*`` (GRU nodes chained by hand with torch's glue, a Gemm +
  Softmax head) and ``torch_*`` (``torch.onnx.export(..., dynamo=False)``
  of modules with ``nn.GRU`` and Linear / softmax heads).  Their outputs
  are named in the case's ``outputs``: ``y``, ``h_n``, ``predict`` (the
  head on the last step) or ``predict_all`` (the head on every step).

The builders are imported by tests/test_onnx.py for the live tests (fresh
seeds, judged by ONNX Runtime when it is installed).
"""
from __future__ import annotations

import itertools
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "onnx")
EXPECTED = "expected.npz"
OPSET = 14          # GRU-14 has `layout`
IR_VERSION = 8

DIRECTIONS = ("forward", "reverse", "bidirectional")


# ---------------------------------------------------------------------------
# single GRU nodes


def node_config(direction: str, lbr: int, layout: int, bias: bool, lens: bool, h0: bool,
                seed: int = 0, I: int = 3, H: int = 4, B: int = 3, T: int = 5) -> dict:
    name = (f"node_{direction[:3]}_lbr{lbr}_layout{layout}_{'b' if bias else 'nob'}"
            f"{'_lens' if lens else ''}{'_h0' if h0 else ''}")
    return dict(name=name, family="node", direction=direction, lbr=lbr, layout=layout,
                bias=bias, lens=lens, h0=h0, seed=seed, I=I, H=H, B=B, T=T)


def all_node_configs(seed: int = 0) -> list:
    """The whole attribute space (96 configurations)."""
    return [node_config(d, lbr, lay, b, ln, h, seed=seed + i)
            for i, (d, lbr, lay, b, ln, h) in enumerate(
                itertools.product(DIRECTIONS, (0, 1), (0, 1), (True, False), (False, True),
                                  (False, True)))]


def fixture_node_configs() -> list:
    """24 committed cases: every direction x linear_before_reset x layout x
    bias, with sequence_lens / initial_h alternating so that each
    direction and layout sees all four combinations."""
    out = []
    for i, (d, lbr, lay, b) in enumerate(itertools.product(DIRECTIONS, (0, 1), (0, 1),
                                                            (True, False))):
        k = (lbr * 2 + (0 if b else 1) + lay) % 4
        out.append(node_config(d, lbr, lay, b, lens=bool(k & 1), h0=bool(k & 2), seed=100 + i))
    return out


def _weights(cfg: dict):
    rng = np.random.default_rng(cfg["seed"])
    D = 2 if cfg["direction"] == "bidirectional" else 1
    H, I = cfg["H"], cfg["I"]
    k = 1.0 / np.sqrt(H)
    s = np.float32(cfg.get("w_scale", 1.0))       # smaller for unbounded activations
    W = rng.uniform(-k, k, (D, 3 * H, I)).astype(np.float32) * 2 * s
    R = rng.uniform(-k, k, (D, 3 * H, H)).astype(np.float32) * 2 * s
    Bv = rng.uniform(-k, k, (D, 6 * H)).astype(np.float32) * s if cfg["bias"] else None
    return W, R, Bv, rng


def build_node_model(cfg: dict, layout: int | None = None):
    """The ONNX model of one GRU node (layout from cfg unless given)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layout = cfg["layout"] if layout is None else layout
    W, R, Bv, _ = _weights(cfg)
    D = W.shape[0]
    H, I = cfg["H"], cfg["I"]
    xs = ["T", "B", I] if layout == 0 else ["B", "T", I]
    hs = [D, "B", H] if layout == 0 else ["B", D, H]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xs)]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    ins = ["X", "W", "R", ""]
    if Bv is not None:
        inits.append(numpy_helper.from_array(Bv, "B"))
        ins[3] = "B"
    ins += ["", ""]
    if cfg["lens"]:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
        ins[4] = "sequence_lens"
    if cfg["h0"]:
        inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, hs))
        ins[5] = "initial_h"
    while ins[-1] == "":
        ins.pop()
    attrs = dict(hidden_size=H, direction=cfg["direction"], linear_before_reset=cfg["lbr"])
    # Other activations and clip (tools/make_variant_fixtures.py).
    for key in ("activations", "activation_alpha", "activation_beta", "clip"):
        if cfg.get(key) is not None:
            attrs[key] = cfg[key]
    if layout:
        attrs["layout"] = 1
    node = helper.make_node("GRU", ins, ["Y", "Y_h"], name="gru", **attrs)
    ys = ["T", D, "B", H] if layout == 0 else ["B", "T", D, H]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ys),
               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, hs)]
    graph = helper.make_graph([node], "grulite_onnx_node", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="grulite-make_onnx_fixtures")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def node_inputs(cfg: dict) -> dict:
    """Feeds for the cfg's own layout: X, [sequence_lens], [initial_h]."""
    _, _, _, rng = _weights(cfg)
    D = 2 if cfg["direction"] == "bidirectional" else 1
    B, T, I, H = cfg["B"], cfg["T"], cfg["I"], cfg["H"]
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    feeds = {"X": x if cfg["layout"] == 0 else np.ascontiguousarray(x.transpose(1, 0, 2))}
    if cfg["lens"]:
        lens = rng.integers(1, T + 1, B).astype(np.int32)
        lens[0] = T
        if B > 1:
            lens[1] = max(1, T - 2)
        feeds["sequence_lens"] = lens
    if cfg["h0"]:
        h = (rng.standard_normal((D, B, H)) * 0.5).astype(np.float32)
        feeds["initial_h"] = h if cfg["layout"] == 0 else np.ascontiguousarray(h.transpose(1, 0, 2))
    return feeds


def ort_session(model_bytes: bytes):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def run_node_ort(cfg: dict, feeds: dict) -> list:
    """ONNX Runtime's (Y, Y_h) in the cfg's layout.  layout=1 (which ONNX
    Runtime refuses) runs as the layout=0 model on transposed inputs."""
    model = build_node_model(cfg, layout=0)
    f0 = dict(feeds)
    if cfg["layout"] == 1:
        f0["X"] = np.ascontiguousarray(feeds["X"].transpose(1, 0, 2))
        if "initial_h" in feeds:
            f0["initial_h"] = np.ascontiguousarray(feeds["initial_h"].transpose(1, 0, 2))
    Y, Y_h = ort_session(model.SerializeToString()).run(None, f0)
    if cfg["layout"] == 1:
        Y = np.ascontiguousarray(Y.transpose(2, 0, 1, 3))       # (T, D, B, H) -> (B, T, D, H)
        Y_h = np.ascontiguousarray(Y_h.transpose(1, 0, 2))      # (D, B, H) -> (B, D, H)
    return [Y, Y_h]


# ---------------------------------------------------------------------------
# hand-built stacks (torch's glue) with a head


def stack_configs() -> list:
    return [
        dict(name="stack_bidir2_gemm_softmax", family="stack", layers=2, direction="bidirectional",
             lbr=1, h0="sliced", head=True, seed=7, I=3, H=4, B=3, T=6, batch_first=False,
             outputs=["predict", "h_n"]),
        dict(name="stack_fwd3_lbr0_y", family="stack", layers=3, direction="forward", lbr=0,
             h0="none", head=False, seed=8, I=2, H=5, B=2, T=4, batch_first=False,
             outputs=["y", "h_n"]),
    ]


def build_stack_model(cfg: dict):
    """GRU nodes joined as torch joins them (Squeeze, or Transpose +
    Reshape [0, 0, -1] for two directions), final states Concat'ed, an
    optional head Gather(-1) -> Gemm -> Softmax.  One (L*D, B, H) h0 input
    sliced per layer when cfg["h0"] == "sliced"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(cfg["seed"])
    D = 2 if cfg["direction"] == "bidirectional" else 1
    H, I, L = cfg["H"], cfg["I"], cfg["layers"]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I])]
    if cfg["h0"] == "sliced":
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [L * D, "B", H]))
    inits, nodes = [], []

    def const(arr, name):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    cur, states = "x", []
    for k in range(L):
        In = I if k == 0 else D * H
        s = 1.0 / np.sqrt(H)
        W = const(rng.uniform(-s, s, (D, 3 * H, In)).astype(np.float32) * 2, f"W{k}")
        R = const(rng.uniform(-s, s, (D, 3 * H, H)).astype(np.float32) * 2, f"R{k}")
        Bn = const(rng.uniform(-s, s, (D, 6 * H)).astype(np.float32), f"B{k}")
        h = ""
        if cfg["h0"] == "sliced":
            h = f"h0_l{k}"
            nodes.append(helper.make_node(
                "Slice", ["h0", const(np.array([k * D]), f"s{k}"),
                          const(np.array([(k + 1) * D]), f"e{k}"), const(np.array([0]), f"a{k}")],
                [h], name=f"slice_h0_l{k}"))
        ins = [cur, W, R, Bn, ""] + ([h] if h else [])
        nodes.append(helper.make_node("GRU", ins, [f"Y{k}", f"Yh{k}"], name=f"gru_l{k}",
                                      hidden_size=H, direction=cfg["direction"],
                                      linear_before_reset=cfg["lbr"]))
        states.append(f"Yh{k}")
        if D == 1:
            nodes.append(helper.make_node("Squeeze", [f"Y{k}", const(np.array([1]), f"sq{k}")],
                                          [f"y{k}"]))
        else:
            nodes.append(helper.make_node("Transpose", [f"Y{k}"], [f"Yt{k}"], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"Yt{k}", const(np.array([0, 0, -1]),
                                                                       f"shape{k}")], [f"y{k}"]))
        cur = f"y{k}"
    outputs = []
    nodes.append(helper.make_node("Concat", states, ["h_n"], axis=0))
    if cfg["head"]:
        nodes.append(helper.make_node("Gather", [cur, const(np.array(-1), "last")], ["y_last"],
                                      axis=0))
        O = 4
        Wf = const(rng.standard_normal((O, D * H)).astype(np.float32), "fc.weight")
        bf = const(rng.standard_normal(O).astype(np.float32), "fc.bias")
        nodes.append(helper.make_node("Gemm", ["y_last", Wf, bf], ["logits"], transB=1, name="fc"))
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", O]))
    else:
        nodes.append(helper.make_node("Identity", [cur], ["y"]))
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "B", D * H]))
    outputs.append(helper.make_tensor_value_info("h_n", TensorProto.FLOAT, [L * D, "B", H]))
    graph = helper.make_graph(nodes, "grulite_onnx_stack", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="grulite-make_onnx_fixtures")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def stack_inputs(cfg: dict) -> dict:
    rng = np.random.default_rng(cfg["seed"] + 1000)
    D = 2 if cfg["direction"] == "bidirectional" else 1
    feeds = {"x": rng.standard_normal((cfg["T"], cfg["B"], cfg["I"])).astype(np.float32)}
    if cfg["h0"] == "sliced":
        feeds["h0"] = (rng.standard_normal((cfg["layers"] * D, cfg["B"], cfg["H"])) * 0.5
                       ).astype(np.float32)
    return feeds


# ---------------------------------------------------------------------------
# torch.onnx.export'ed modules


def torch_configs() -> list:
    """head: None, "softmax" (Linear + softmax), "relu_softmax" (Linear, ReLU,
    Linear, softmax), "hlast_sigmoid" (sigmoid(Linear(h_n[-1]))), "all_softmax"
    (Linear + softmax on every step), "view" (Linear(last.view(B, -1))).
    second_gru: a second nn.GRU of that hidden size after the first (layers
    of different sizes)."""
    return [
        dict(name="torch_l1_bf_yh", layers=1, bidirectional=False, batch_first=True, head=None,
             h0=False, dynamic=False, outputs=["y", "h_n"]),
        dict(name="torch_l2_bidir_bf_softmax", layers=2, bidirectional=True, batch_first=True,
             head="softmax", h0=False, dynamic=False, outputs=["predict"]),
        dict(name="torch_l3_tm_relu_softmax_dyn", layers=3, bidirectional=False,
             batch_first=False, head="relu_softmax", h0=False, dynamic=True,
             outputs=["predict"]),
        dict(name="torch_l2_bidir_tm_dyn_all", layers=2, bidirectional=True, batch_first=False,
             head="softmax", h0=False, dynamic=True, outputs=["predict", "y", "h_n"]),
        dict(name="torch_l1_bf_hlast_sigmoid", layers=1, bidirectional=False, batch_first=True,
             head="hlast_sigmoid", h0=False, dynamic=False, outputs=["predict"]),
        dict(name="torch_l2_bf_h0", layers=2, bidirectional=False, batch_first=True, head=None,
             h0=True, dynamic=True, outputs=["y", "h_n"]),
        dict(name="torch_l1_bidir_bf_steps", layers=1, bidirectional=True, batch_first=True,
             head="all_softmax", h0=False, dynamic=False, outputs=["predict_all"]),
        dict(name="torch_l2_bf_view_dyn", layers=2, bidirectional=False, batch_first=True,
             head="view", h0=False, dynamic=True, outputs=["predict"]),
        dict(name="torch_l3_tm_hlast_dyn", layers=3, bidirectional=False, batch_first=False,
             head="hlast_sigmoid", h0=False, dynamic=True, outputs=["predict"]),
        dict(name="torch_two_grus_bf", layers=1, bidirectional=True, batch_first=True,
             head="softmax", h0=False, dynamic=True, second_gru=7, outputs=["predict"]),
    ]


def _torch_module(cfg: dict, I: int, H: int, O: int):
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(I, H, num_layers=cfg["layers"], bidirectional=cfg["bidirectional"],
                              batch_first=cfg["batch_first"])
            D = 2 if cfg["bidirectional"] else 1
            width = D * H
            if cfg.get("second_gru"):
                self.gru2 = nn.GRU(D * H, cfg["second_gru"], batch_first=cfg["batch_first"])
                width = cfg["second_gru"]
            if cfg["head"] == "relu_softmax":
                self.fc1 = nn.Linear(width, 7)
                self.fc2 = nn.Linear(7, O)
            elif cfg["head"]:
                self.fc = nn.Linear(width, O)

        def forward(self, x, h0=None):
            y, h = self.gru(x, h0) if h0 is not None else self.gru(x)
            if cfg.get("second_gru"):
                y, h = self.gru2(y)
            head = cfg["head"]
            if head is None:
                return y, h
            if head == "hlast_sigmoid":
                return torch.sigmoid(self.fc(h[-1]))
            if head == "all_softmax":
                return torch.softmax(self.fc(y), dim=-1)
            last = y[:, -1] if cfg["batch_first"] else y[-1]
            if head == "view":
                return self.fc(last.reshape(last.shape[0], -1))
            if head == "relu_softmax":
                return torch.softmax(self.fc2(torch.relu(self.fc1(last))), dim=-1)
            out = torch.softmax(self.fc(last), dim=-1)
            if cfg["outputs"] == ["predict", "y", "h_n"]:
                return out, y, h
            return out

    return Net().eval()


def export_torch(cfg: dict, path: str, seed: int = 0, I: int = 3, H: int = 6, O: int = 4,
                 B: int = 2, T: int = 5, opset: int | None = None,
                 constant_folding: bool = True) -> dict:
    """Exports cfg's module to `path` (dynamo=False); returns the feeds
    (x, [h0]) used for ONNX Runtime, as the graph takes them."""
    import warnings

    import torch

    torch.manual_seed(seed)
    m = _torch_module(cfg, I, H, O)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I) if cfg["batch_first"] else (T, B, I)).astype(np.float32)
    D = 2 if cfg["bidirectional"] else 1
    feeds = {"x": x}
    args = (torch.from_numpy(x),)
    names = ["x"]
    dyn = {"x": {0: "batch", 1: "steps"} if cfg["batch_first"] else {0: "steps", 1: "batch"}}
    if cfg["h0"]:
        h0 = (rng.standard_normal((cfg["layers"] * D, B, H)) * 0.5).astype(np.float32)
        feeds["h0"] = h0
        args = args + (torch.from_numpy(h0),)
        names.append("h0")
        dyn["h0"] = {1: "batch"}
    out_names = [f"out{i}" for i in range(len(cfg["outputs"]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = {} if opset is None else dict(opset_version=opset)
        torch.onnx.export(m, args, path, dynamo=False, input_names=names,
                          output_names=out_names, do_constant_folding=constant_folding,
                          dynamic_axes=dict(dyn) if cfg["dynamic"] else None, **extra)
    return feeds


# ---------------------------------------------------------------------------


def main() -> int:
    import onnx

    os.makedirs(OUT_DIR, exist_ok=True)
    arrays: dict = {}
    cases = []

    def store(cfg, feeds, outs, order):
        n = cfg["name"]
        for key, feed in order.items():
            if feed in feeds:
                arrays[f"{n}/{key}"] = feeds[feed]
        for i, o in enumerate(outs):
            arrays[f"{n}/out{i}"] = np.asarray(o, np.float32)
        cases.append(cfg)

    for cfg in fixture_node_configs():
        model = build_node_model(cfg)
        onnx.save(model, os.path.join(OUT_DIR, cfg["name"] + ".onnx"))
        feeds = node_inputs(cfg)
        store(cfg, feeds, run_node_ort(cfg, feeds),
              {"x": "X", "h0": "initial_h", "lengths": "sequence_lens"})
    for cfg in stack_configs():
        model = build_stack_model(cfg)
        onnx.save(model, os.path.join(OUT_DIR, cfg["name"] + ".onnx"))
        feeds = stack_inputs(cfg)
        store(cfg, feeds, ort_session(model.SerializeToString()).run(None, feeds),
              {"x": "x", "h0": "h0"})
    for i, cfg in enumerate(torch_configs()):
        cfg = dict(cfg, family="torch", seed=10 + i)
        path = os.path.join(OUT_DIR, cfg["name"] + ".onnx")
        feeds = export_torch(cfg, path, seed=cfg["seed"])
        with open(path, "rb") as f:
            outs = ort_session(f.read()).run(None, feeds)
        store(cfg, feeds, outs, {"x": "x", "h0": "h0"})
    arrays["__cases__"] = np.frombuffer(json.dumps(cases).encode("utf-8"), dtype=np.uint8)
    np.savez_compressed(os.path.join(OUT_DIR, EXPECTED), **arrays)
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR))
    print(f"wrote {len(cases)} cases to {OUT_DIR} ({total / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
