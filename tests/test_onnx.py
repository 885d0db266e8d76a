"""ONNX import (grulite.importers._onnx), judged by ONNX Runtime.

* Fixture tests: the committed graphs in tests/fixtures/onnx/ and ONNX
  Runtime's outputs on them (tools/make_onnx_fixtures.py); they need the
  onnx package but not onnxruntime.
* Live tests (when onnxruntime, and torch for the exports, import): fresh
  weights over the whole GRU attribute space and fresh torch exports, run in
  ONNX Runtime and compared.
* Errors: refused attributes, unsupported graphs, corrupt and missing files.

Conventions checked (see grulite.importers._onnx): y = Y.transpose(0, 2, 1, 3)
.reshape(T, B, D*H) for layout 0, Y.reshape(B, T, D*H) for layout 1;
h0 / h_n (L*D, B, H) (layout 1's (B, D, H) transposed).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import grulite
from conftest import load_tool
from grulite import GruliteError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from grulite import from_onnx  # noqa: E402
from grulite.importers._onnx import image as image_from_onnx  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
FIX_DIR = os.path.join(TESTS_DIR, "fixtures", "onnx")
ATOL = 2e-5


tool = load_tool("make_onnx_fixtures")


def _expected():
    with np.load(os.path.join(FIX_DIR, tool.EXPECTED)) as f:
        data = {k: f[k] for k in f.files}
    cases = json.loads(bytes(data.pop("__cases__")).decode("utf-8"))
    return {c["name"]: c for c in cases}, data


CASES, ARRAYS = _expected()


def _arrays(name: str) -> tuple:
    feeds = {k.split("/", 1)[1]: v for k, v in ARRAYS.items() if k.startswith(name + "/")}
    outs = [feeds.pop(f"out{i}") for i in range(sum(k.startswith("out") for k in feeds))]
    return feeds, outs


def _close(got, want, what: str):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    assert err <= ATOL, f"{what}: max abs error {err:.3g} > {ATOL}"


# ---------------------------------------------------------------------------
# judging a model against ONNX outputs


def check_node(model, cfg: dict, x, h0_onnx, lengths, Y, Y_h):
    """A single-GRU-node model against ONNX's (Y, Y_h), mapping conventions."""
    D = 2 if cfg["direction"] == "bidirectional" else 1
    c = model.config
    assert c.num_layers == 1
    lay = c.layers[0]
    assert lay.num_directions == D
    assert lay.reverse == (cfg["direction"] == "reverse")
    assert lay.reset_after == bool(cfg["lbr"])
    assert lay.bias == bool(cfg["bias"])
    assert c.batch_first == (cfg["layout"] == 1)
    if cfg["layout"] == 0:
        T, _, B, H = Y.shape
        y_ref = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
        h_ref = Y_h
        h0 = h0_onnx
    else:
        B, T, _, H = Y.shape
        y_ref = Y.reshape(B, T, D * H)
        h_ref = Y_h.transpose(1, 0, 2)
        h0 = None if h0_onnx is None else h0_onnx.transpose(1, 0, 2)
    y, h_n = model(x, h0=h0, lengths=lengths)
    _close(y, y_ref, f"{cfg['name']} y")
    _close(h_n, h_ref, f"{cfg['name']} h_n")


def check_outputs(model, cfg: dict, feeds: dict, outs: list):
    """A stack / torch-export model against the graph's outputs, named in
    cfg["outputs"] (y, h_n, predict, predict_all)."""
    x, h0 = feeds["x"], feeds.get("h0")
    assert model.config.batch_first == cfg["batch_first"]
    y, h_n = model(x, h0=h0)
    for kind, want in zip(cfg["outputs"], outs):
        if kind == "y":
            got = y
        elif kind == "h_n":
            got = h_n
        elif kind == "predict":
            got = model.predict(x, h0=h0)
        elif kind == "predict_all":
            got = model.predict(x, h0=h0, all_steps=True)
        else:
            raise AssertionError(kind)
        _close(got, want, f"{cfg['name']} {kind}")


# ---------------------------------------------------------------------------
# committed fixtures (no onnxruntime needed)


NODE_FIXTURES = sorted(n for n, c in CASES.items() if c["family"] == "node")
GRAPH_FIXTURES = sorted(n for n, c in CASES.items() if c["family"] != "node")


def test_fixture_inventory():
    assert len(NODE_FIXTURES) == 24
    seen = {(CASES[n]["direction"], CASES[n]["lbr"], CASES[n]["layout"], CASES[n]["bias"])
            for n in NODE_FIXTURES}
    assert len(seen) == 24                   # the whole attribute space
    for d in tool.DIRECTIONS:                # lens / h0 combinations per direction
        combos = {(CASES[n]["lens"], CASES[n]["h0"]) for n in NODE_FIXTURES
                  if CASES[n]["direction"] == d}
        assert len(combos) == 4, d
    total = sum(os.path.getsize(os.path.join(FIX_DIR, f)) for f in os.listdir(FIX_DIR))
    assert total < 300 * 1024


@pytest.mark.parametrize("name", NODE_FIXTURES)
def test_fixture_node(name):
    cfg = CASES[name]
    feeds, (Y, Y_h) = _arrays(name)
    m = from_onnx(os.path.join(FIX_DIR, name + ".onnx"))
    check_node(m, cfg, feeds["x"], feeds.get("h0"), feeds.get("lengths"), Y, Y_h)


@pytest.mark.parametrize("name", GRAPH_FIXTURES)
def test_fixture_graph(name):
    cfg = CASES[name]
    feeds, outs = _arrays(name)
    m = from_onnx(os.path.join(FIX_DIR, name + ".onnx"))
    check_outputs(m, cfg, feeds, outs)


def test_fixture_torch_structure():
    _, s = image_from_onnx(os.path.join(FIX_DIR, "torch_l3_tm_relu_softmax_dyn.onnx"))
    assert [l["num_directions"] for l in s["layers"]] == [1, 1, 1]
    assert all(l["reset_after"] for l in s["layers"])        # torch: linear_before_reset=1
    assert [(d["name"], d["activation"]) for d in s["dense"]] == [("fc1", "relu"),
                                                                 ("fc2", "softmax")]
    assert s["batch_first"] is False
    assert s["inputs"] == {"x": "x", "lengths": None, "h0": None}
    assert s["prefix"].count(",") == 2                       # three GRU node names
    n = sum(a.size for l in s["layers"] for f in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            for a in l[f]) + sum(d["weight"].size + d["bias"].size for d in s["dense"])
    assert s["parameters"] == n
    m = from_onnx(os.path.join(FIX_DIR, "torch_l2_bf_h0.onnx"))
    assert m.config.batch_first and m.config.num_layers == 2
    assert m.metadata["inputs"]["h0"] == "h0"                # the graph's h0 is the model's
    _, s = image_from_onnx(os.path.join(FIX_DIR, "node_rev_lbr0_layout1_nob_h0.onnx"))
    assert s["layers"][0]["reverse"] and s["layers"][0]["num_directions"] == 1
    assert s["inputs"]["h0"] == ["initial_h.transpose(1, 0, 2)"]
    assert s["outputs"]["Y"] == "y (B, T, D, H)"


def test_fixture_float16_and_threads():
    name = "torch_l2_bidir_bf_softmax"
    feeds, outs = _arrays(name)
    m = from_onnx(os.path.join(FIX_DIR, name + ".onnx"), dtype="float16", num_threads=1)
    assert m.config.dtype == "float16" and m.num_threads == 1
    assert np.max(np.abs(m.predict(feeds["x"]) - outs[0])) < 5e-3


def test_fixture_roundtrip_save(tmp_path):
    name = "stack_bidir2_gemm_softmax"
    feeds, outs = _arrays(name)
    m = from_onnx(os.path.join(FIX_DIR, name + ".onnx"))
    p = tmp_path / "m.grl"
    m.save(p)
    m2 = grulite.load(p)
    assert m2.metadata["format"] == "onnx"
    np.testing.assert_array_equal(m2.predict(feeds["x"], h0=feeds["h0"]),
                                  m.predict(feeds["x"], h0=feeds["h0"]))


# ---------------------------------------------------------------------------
# live: ONNX Runtime as the judge


ALL_NODE = tool.all_node_configs(seed=5000)


@pytest.mark.parametrize("cfg", ALL_NODE, ids=[c["name"] for c in ALL_NODE])
def test_live_node_ort(cfg, tmp_path):
    pytest.importorskip("onnxruntime")
    model = tool.build_node_model(cfg)
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    feeds = tool.node_inputs(cfg)
    Y, Y_h = tool.run_node_ort(cfg, feeds)      # layout=1: the transposed layout=0 model
    m = from_onnx(path)
    check_node(m, cfg, feeds["X"], feeds.get("initial_h"), feeds.get("sequence_lens"), Y, Y_h)


@pytest.mark.parametrize("cfg", tool.stack_configs(), ids=lambda c: c["name"])
def test_live_stack_ort(cfg, tmp_path):
    pytest.importorskip("onnxruntime")
    cfg = dict(cfg, seed=cfg["seed"] + 77)
    model = tool.build_stack_model(cfg)
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    feeds = tool.stack_inputs(cfg)
    outs = tool.ort_session(model.SerializeToString()).run(None, feeds)
    check_outputs(from_onnx(path), cfg, feeds, outs)


@pytest.mark.parametrize("cfg", tool.torch_configs(), ids=lambda c: c["name"])
def test_live_torch_export_ort(cfg, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    path = str(tmp_path / "t.onnx")
    feeds = tool.export_torch(cfg, path, seed=321, I=4, H=8, O=5, B=3, T=6)
    with open(path, "rb") as f:
        outs = tool.ort_session(f.read()).run(None, feeds)
    check_outputs(from_onnx(path), dict(cfg, name="live_" + cfg["name"]), feeds, outs)


@pytest.mark.parametrize("opset,folding", [(9, False), (11, True), (11, False), (13, False),
                                           (17, True)])
def test_live_torch_export_opsets(opset, folding, tmp_path):
    """Older opsets (Squeeze / Unsqueeze / Slice attributes) and exports
    without constant folding (weights computed by Slice / Concat /
    Unsqueeze on initializers, folded by the importer)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    for cfg in tool.torch_configs():
        if cfg["name"] not in ("torch_l2_bidir_tm_dyn_all", "torch_l3_tm_hlast_dyn",
                               "torch_l2_bf_view_dyn"):
            continue
        path = str(tmp_path / f"{cfg['name']}.onnx")
        feeds = tool.export_torch(cfg, path, seed=opset, opset=opset, constant_folding=folding)
        with open(path, "rb") as f:
            outs = tool.ort_session(f.read()).run(None, feeds)
        check_outputs(from_onnx(path), dict(cfg, name=f"{cfg['name']}@{opset}"), feeds, outs)


def test_fixture_layers_of_different_sizes():
    name = "torch_two_grus_bf"
    m = from_onnx(os.path.join(FIX_DIR, name + ".onnx"))
    assert [(l.hidden_size, l.num_directions) for l in m.config.layers] == [(6, 2), (7, 1)]
    _, h_n = m(_arrays(name)[0]["x"])
    assert isinstance(h_n, tuple) and [h.shape[0] for h in h_n] == [2, 1]


# ---------------------------------------------------------------------------
# hand-made graphs: accepted variants and errors


def _gru_graph(tmp_path, attrs=None, I=3, H=4, D=1, W=None, initial_h=None, seq_lens=None,
               extra_nodes=(), outputs=None, name="g.onnx", opset=14):
    """One GRU node (X -> Y, Y_h), optional constant initial_h / sequence_lens
    and extra nodes after it."""
    rng = np.random.default_rng(0)
    if W is None:
        W = rng.standard_normal((D, 3 * H, I)).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"),
             numpy_helper.from_array(rng.standard_normal((D, 3 * H, H)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.standard_normal((D, 6 * H)).astype(np.float32), "B")]
    ins = ["X", "W", "R", "B", "", ""]
    if seq_lens is not None:
        inits.append(numpy_helper.from_array(np.asarray(seq_lens, np.int32), "lens"))
        ins[4] = "lens"
    if initial_h is not None:
        inits.append(numpy_helper.from_array(np.asarray(initial_h, np.float32), "h_init"))
        ins[5] = "h_init"
    while ins[-1] == "":
        ins.pop()
    a = dict(hidden_size=H)
    if D == 2:
        a["direction"] = "bidirectional"
    a.update(attrs or {})
    nodes = [helper.make_node("GRU", ins, ["Y", "Y_h"], name="my_gru", **a)] + list(extra_nodes)
    outs = outputs or [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
                       helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, ["T", "B", I])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _raises(path, *words):
    with pytest.raises(GruliteError) as e:
        from_onnx(path)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def test_error_clip(tmp_path):
    for bad in (-1.0, 0.0, float("inf"), float("nan")):
        _raises(_gru_graph(tmp_path, dict(clip=bad)), "my_gru", "clip")


def test_error_activations(tmp_path):
    # unknown names, the wrong count, parameters left over, missing or not finite
    _raises(_gru_graph(tmp_path, dict(activations=["Gelu", "Tanh"])), "my_gru", "Gelu",
            "activations[0]")
    _raises(_gru_graph(tmp_path, dict(activations=["Relu"])), "my_gru", "activations",
            "takes 2")
    _raises(_gru_graph(tmp_path, dict(activations=["Relu", "Tanh"] * 2)), "my_gru", "takes 2")
    _raises(_gru_graph(tmp_path, dict(activations=["Sigmoid", "Tanh"], activation_alpha=[1.0])),
            "my_gru", "activation_alpha", "take 0")
    _raises(_gru_graph(tmp_path, dict(activations=["LeakyRelu", "Tanh"],
                                      activation_alpha=[0.1, 0.2])), "my_gru", "take 1")
    _raises(_gru_graph(tmp_path, dict(activations=["Affine", "Tanh"])), "my_gru", "Affine",
            "alpha")
    _raises(_gru_graph(tmp_path, dict(activations=["Affine", "Tanh"], activation_alpha=[1.0])),
            "my_gru", "Affine", "beta")
    _raises(_gru_graph(tmp_path, dict(activations=["Sigmoid", "ThresholdedRelu"])), "my_gru",
            "ThresholdedRelu")
    _raises(_gru_graph(tmp_path, dict(activations=["Elu", "Tanh"],
                                      activation_alpha=[float("nan")])), "my_gru", "finite")


def test_default_activations_spelled_out(tmp_path):
    m = from_onnx(_gru_graph(tmp_path, dict(activations=["Sigmoid", "Tanh"] * 2), D=2))
    assert m.config.layers[0].bidirectional


def test_error_hidden_size_mismatch(tmp_path):
    _raises(_gru_graph(tmp_path, dict(hidden_size=5)), "my_gru", "hidden_size=5", "hidden_size 4")
    bad_w = np.zeros((1, 9, 3), np.float32)
    _raises(_gru_graph(tmp_path, W=bad_w), "my_gru", "W has shape (1, 9, 3)")


def test_error_direction_vs_shapes(tmp_path):
    _raises(_gru_graph(tmp_path, dict(direction="bidirectional")), "my_gru", "num_directions=2")


def test_initial_h_constant(tmp_path):
    # zeros (what torch exports when no h0 is given): the model's default h0
    m = from_onnx(_gru_graph(tmp_path, initial_h=np.zeros((1, 2, 4))))
    assert m.config.num_layers == 1
    _raises(_gru_graph(tmp_path, initial_h=np.ones((1, 2, 4))), "my_gru", "initial_h",
            "non-zero constant", "graph input")


def test_error_sequence_lens_constant(tmp_path):
    _raises(_gru_graph(tmp_path, seq_lens=[3, 2]), "my_gru", "sequence_lens", "constant",
            "graph input")


def test_error_unsupported_op_lists_types(tmp_path):
    extra = [helper.make_node("Squeeze", ["Y", "ax"], ["y"]),
             helper.make_node("LogSoftmax", ["y"], ["out"], axis=-1, name="logsm")]
    graph_path = _gru_graph(
        tmp_path, extra_nodes=extra,
        outputs=[helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    m = onnx.load(graph_path)
    m.graph.initializer.append(numpy_helper.from_array(np.array([1]), "ax"))
    onnx.save(m, graph_path)
    msg = _raises(graph_path, "LogSoftmax", "'logsm'", "GRU, LogSoftmax, Squeeze")
    assert "Not supported here: LogSoftmax" in msg


def test_error_activation_without_linear(tmp_path):
    extra = [helper.make_node("Relu", ["Y"], ["out"], name="relu")]
    p = _gru_graph(tmp_path, extra_nodes=extra,
                   outputs=[helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    _raises(p, "relu", "Linear")


def test_error_no_gru(tmp_path):
    node = helper.make_node("Add", ["a", "a"], ["b"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT,
                                                                          [2])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    p = tmp_path / "nogru.onnx"
    onnx.save(model, p)
    _raises(p, "no GRU node", "Add")


def test_error_corrupt_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07garbage\xff\xfe not a protobuf" * 10)
    _raises(p, "bad.onnx", "not a readable ONNX model")
    good = open(os.path.join(FIX_DIR, "node_for_lbr1_layout0_b_h0.onnx"), "rb").read()
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(GruliteError):
        from_onnx(p)
    p.write_bytes(b"")
    with pytest.raises(GruliteError):
        from_onnx(p)


def test_error_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        from_onnx(tmp_path / "nope.onnx")
    with pytest.raises(FileNotFoundError):
        image_from_onnx(str(tmp_path / "nope.onnx"))


def test_error_without_onnx_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(GruliteError, match=r"pip install grulite\[onnx\]"):
        from_onnx(os.path.join(FIX_DIR, "node_for_lbr1_layout0_b_h0.onnx"))


def test_error_two_heads_and_mid_layer_output(tmp_path):
    # Y_h of a middle layer is fine; Y of a middle layer as an output is not.
    cfg = dict(tool.stack_configs()[1], name="s")
    model = tool.build_stack_model(cfg)
    model.graph.output.append(helper.make_tensor_value_info("y0", TensorProto.FLOAT, None))
    p = tmp_path / "mid.onnx"
    onnx.save(model, p)
    _raises(p, "'y0'", "GRU layer 0", "top layer")


def test_error_embedding_input(tmp_path):
    """A token input read by Gather (an embedding) is not a GRU input."""
    p = _gru_graph(tmp_path)
    m = onnx.load(p)
    g = m.graph
    g.input[0].CopyFrom(helper.make_tensor_value_info("tokens", TensorProto.INT64, ["T", "B"]))
    g.initializer.append(numpy_helper.from_array(np.zeros((10, 3), np.float32), "emb"))
    g.node.insert(0, helper.make_node("Gather", ["emb", "tokens"], ["X"], name="embed"))
    onnx.save(m, p)
    _raises(p, "'tokens'", "Gather")


def test_error_head_on_lower_layer(tmp_path):
    cfg = dict(tool.stack_configs()[1], name="s")
    model = tool.build_stack_model(cfg)
    g = model.graph
    g.initializer.extend([numpy_helper.from_array(np.array(-1), "minus1"),
                          numpy_helper.from_array(np.ones((5, 2), np.float32), "w_fc")])
    g.node.extend([helper.make_node("Gather", ["y0", "minus1"], ["last0"], axis=0),
                   helper.make_node("MatMul", ["last0", "w_fc"], ["logits"], name="fc_low")])
    g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    p = tmp_path / "low.onnx"
    onnx.save(model, p)
    _raises(p, "GRU layer 0", "top layer 2")
