#!/usr/bin/env python3
"""Generate grulite's parity fixtures (tests/fixtures/*.npz).

Re-run (from the repository root; needs torch==2.13.0, onnx, onnxruntime):

    python3 tools/make_fixtures.py            # rewrites tests/fixtures/*.npz
    python3 tools/make_fixtures.py --check    # regenerates in memory and diffs

The output is deterministic: fixed seeds per case, one torch thread,
deterministic algorithms, and .npz (zip) members written with a fixed
timestamp, so re-running gives byte-identical files.

Two files are written:

* ``torch_gru.npz`` -- reference outputs of real ``torch.nn.GRU`` modules
  (reset_after=True, PyTorch's formulation), some with an ``nn.Linear`` head.
* ``ort_gru.npz``   -- ``reset_after=False`` cases (ONNX
  ``linear_before_reset=0``) judged by ONNX Runtime: PyTorch-layout weights
  (gates r, z, n) are converted to ONNX layout (gates z, r, h), a graph of
  ONNX ``GRU`` nodes is built by hand with ``onnx.helper`` and run in
  onnxruntime; its outputs are mapped back to grulite's conventions.

Every case is stored under keys ``<case>/<field>``:

    <case>/config      JSON (0-d unicode array): sizes, flags, prefix, head...
    <case>/sd/<key>    the state_dict tensors, keys with the case's prefix
                       ("gru.", "rnn.", "encoder.gru." or "" for a bare GRU)
    <case>/x           input: (B, T, I) if batch_first else (T, B, I), or
                       unbatched (T, I)
    <case>/h0          optional initial state (L*D, B, H) (or (L*D, H))
    <case>/lengths     optional int64 (B,) valid steps (unsorted)
    <case>/y           reference outputs, zero past each length (torch:
                       pad_packed_sequence(..., total_length=T))
    <case>/h_n         reference final state (L*D, B, H)
    <case>/head_out    optional: head output at each sequence's last valid
                       step, e.g. softmax(fc(y[b, len_b - 1]))

The generator functions (``torch_case``, ``ort_case``) are also imported by
tests/test_parity.py to run live random configurations.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

# The numpy reference GRU and the file writers the tests use too (tests/support/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.files import npz_bytes  # noqa: E402
from support.reference import layers_from_state_dict, ref_gru  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures")
TORCH_FILE = "torch_gru.npz"
ORT_FILE = "ort_gru.npz"

ONNX_OPSET = 14      # GRU-14 (adds `layout`; we use the default layout=0)
ONNX_IR_VERSION = 8  # accepted by every onnxruntime >= 1.10


# ---------------------------------------------------------------------------
# shared helpers


def _lengths(rng: np.random.Generator, B: int, T: int) -> np.ndarray:
    """Unsorted lengths in [1, T], with at least one full-length sequence
    (pack_padded_sequence keeps T only if some sequence reaches it; we pad
    back with total_length=T anyway) and, for B >= 2, at least one short."""
    lens = rng.integers(1, T + 1, size=B)
    lens[rng.integers(B)] = T
    if B >= 2 and T >= 2 and (lens == T).all():
        lens[rng.integers(B)] = rng.integers(1, T)
    return lens.astype(np.int64)


# ---------------------------------------------------------------------------
# torch.nn.GRU cases (reset_after=True)



def _inputs(rng, B, T, I, LD, H, unbatched, batch_first, x_scale, h0, lengths):
    """Random x (in the case's layout), optional h0 and lengths."""
    if unbatched:
        x = rng.standard_normal((T, I))
    elif batch_first:
        x = rng.standard_normal((B, T, I))
    else:
        x = rng.standard_normal((T, B, I))
    x = (x * x_scale).astype(np.float32)
    h0_a = None
    if h0:
        shape = (LD, H) if unbatched else (LD, B, H)
        h0_a = (rng.standard_normal(shape) * 0.8).astype(np.float32)
    len_a = _lengths(rng, B, T) if lengths else None
    return x, h0_a, len_a

def torch_case(name: str, seed: int, input_size: int, hidden_size: int, num_layers: int = 1,
               bidirectional: bool = False, bias: bool = True, batch_first: bool = True,
               batch: int = 3, steps: int = 6, lengths: bool = False, h0: bool = False,
               unbatched: bool = False, scale: float = 1.0, x_scale: float = 1.0,
               prefix: str = "gru.", head=None) -> dict:
    """Runs a seeded torch.nn.GRU (plus an optional Linear head) and returns
    the case dict described in the module docstring.

    head: None or a list of (name, out_features, activation) Linear layers
    applied to the top layer's output at each sequence's last valid step.
    """
    import torch
    import torch.nn as nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if unbatched:
        assert not lengths and batch == 1
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, bias=bias,
                 batch_first=batch_first, bidirectional=bidirectional)
    with torch.no_grad():
        for p in gru.parameters():
            p.mul_(scale)
    D = 2 if bidirectional else 1
    head_mods = []
    in_f = D * hidden_size
    for hname, out_f, act in (head or []):
        lin = nn.Linear(in_f, out_f)
        head_mods.append((hname, lin, act))
        in_f = out_f
    gru.eval()

    B, T, I = batch, steps, input_size
    x, h0_a, len_a = _inputs(rng, B, T, I, num_layers * D, hidden_size, unbatched, batch_first,
                             x_scale, h0, lengths)

    with torch.no_grad():
        xt = torch.from_numpy(x)
        ht = None if h0_a is None else torch.from_numpy(h0_a)
        if len_a is not None:
            packed = pack_padded_sequence(xt, torch.from_numpy(len_a), batch_first=batch_first,
                                          enforce_sorted=False)
            yp, hn = gru(packed, ht)
            y, _ = pad_packed_sequence(yp, batch_first=batch_first, padding_value=0.0,
                                       total_length=T)
        else:
            y, hn = gru(xt, ht)
        head_out = None
        if head_mods:
            yb = y if (batch_first or unbatched) else y.transpose(0, 1)
            if unbatched:
                last = yb[-1]
            else:
                idx = torch.from_numpy(len_a - 1) if len_a is not None else \
                    torch.full((B,), T - 1, dtype=torch.int64)
                last = yb[torch.arange(B), idx]
            v = last
            torch_act = {"none": lambda t: t, "relu": torch.relu, "tanh": torch.tanh,
                         "sigmoid": torch.sigmoid, "softmax": lambda t: torch.softmax(t, -1)}
            for _, lin, act in head_mods:
                v = torch_act[act](lin(v))
            head_out = v.numpy()

    p = prefix
    sd = {p + k: v.detach().numpy().copy() for k, v in gru.state_dict().items()}
    for hname, lin, _ in head_mods:
        for k, v in lin.state_dict().items():
            sd[f"{hname}.{k}"] = v.detach().numpy().copy()
    config = dict(name=name, source="torch", seed=seed, input_size=input_size,
                  hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                  bias=bias, batch_first=batch_first, unbatched=unbatched, reset_after=True,
                  scale=scale, x_scale=x_scale, prefix=prefix,
                  head=[[h[0], h[2]] for h in head_mods] or None)
    return dict(name=name, config=config, sd=sd, x=x, h0=h0_a, lengths=len_a,
                y=y.numpy().astype(np.float32), h_n=hn.numpy().astype(np.float32),
                head_out=head_out)


# ---------------------------------------------------------------------------
# ONNX Runtime cases (reset_after=False, linear_before_reset=0)


def pt_to_onnx_gates(a: np.ndarray) -> np.ndarray:
    """Reorders the gate blocks of a PyTorch tensor (r, z, n along axis 0)
    to ONNX's order (z, r, h)."""
    r, z, n = np.split(a, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def build_onnx_gru(input_size: int, layers: list, direction: str, with_h0: bool,
                   with_lengths: bool):
    """An ONNX model of stacked GRU nodes (layout=0, time-major).

    layers: per layer dict(hidden_size, W (D,3H,in), R (D,3H,H), B (D,6H) or None).
    Graph inputs: X (T, B, I), [sequence_lens (B,) int32], [initial_h_l{k}
    (D, B, H_k) per layer].  Outputs: Y (T, D, B, H_top) and Y_h_l{k}.
    Between layers Y (T, D, B, H) -> Transpose(0, 2, 1, 3) -> Reshape
    (T, B, D*H), the next layer's X.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    D = 2 if direction == "bidirectional" else 1
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", input_size])]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    nodes, inits, outputs = [], [], []
    cur = "X"
    for k, L in enumerate(layers):
        H = L["hidden_size"]
        inits.append(numpy_helper.from_array(L["W"].astype(np.float32), f"W_l{k}"))
        inits.append(numpy_helper.from_array(L["R"].astype(np.float32), f"R_l{k}"))
        b_name = ""
        if L["B"] is not None:
            b_name = f"B_l{k}"
            inits.append(numpy_helper.from_array(L["B"].astype(np.float32), b_name))
        h_name = ""
        if with_h0:
            h_name = f"initial_h_l{k}"
            inputs.append(helper.make_tensor_value_info(h_name, TensorProto.FLOAT, [D, "B", H]))
        y_name = "Y" if k == len(layers) - 1 else f"Y_l{k}"
        ins = [cur, f"W_l{k}", f"R_l{k}", b_name,
               "sequence_lens" if with_lengths else "", h_name]
        while ins and ins[-1] == "":
            ins.pop()
        nodes.append(helper.make_node("GRU", ins, [y_name, f"Y_h_l{k}"], name=f"gru_l{k}",
                                      hidden_size=H, direction=direction,
                                      linear_before_reset=0))
        outputs.append(helper.make_tensor_value_info(f"Y_h_l{k}", TensorProto.FLOAT, [D, "B", H]))
        if k < len(layers) - 1:
            nodes.append(helper.make_node("Transpose", [y_name], [f"Yt_l{k}"], perm=[0, 2, 1, 3]))
            shape_name = f"shape_l{k}"
            inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), shape_name))
            nodes.append(helper.make_node("Reshape", [f"Yt_l{k}", shape_name], [f"X_l{k + 1}"]))
            cur = f"X_l{k + 1}"
    outputs.insert(0, helper.make_tensor_value_info("Y", TensorProto.FLOAT,
                                                    ["T", D, "B", layers[-1]["hidden_size"]]))
    graph = helper.make_graph(nodes, "grulite_ort_reference", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="grulite-make_fixtures")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


def run_ort_gru(sd: dict, prefix: str, input_size: int, hidden_sizes: list, bidirectional: bool,
                bias: bool, x_tbi: np.ndarray, h0_layers: list | None, lengths: np.ndarray | None):
    """Runs the PyTorch-layout weights in `sd` through ONNX Runtime.

    x_tbi: (T, B, I) float32.  h0_layers: per layer (D, B, H_k) or None.
    Returns (Y (T, D, B, H_top), [Y_h per layer (D, B, H_k)]).
    """
    import onnxruntime as ort

    sfx = ["", "_reverse"] if bidirectional else [""]
    layers = []
    for k, H in enumerate(hidden_sizes):
        W = np.stack([pt_to_onnx_gates(sd[f"{prefix}weight_ih_l{k}{s}"]) for s in sfx])
        R = np.stack([pt_to_onnx_gates(sd[f"{prefix}weight_hh_l{k}{s}"]) for s in sfx])
        Bv = None
        if bias:
            Bv = np.stack([np.concatenate([pt_to_onnx_gates(sd[f"{prefix}bias_ih_l{k}{s}"]),
                                           pt_to_onnx_gates(sd[f"{prefix}bias_hh_l{k}{s}"])])
                           for s in sfx])
        layers.append(dict(hidden_size=H, W=W, R=R, B=Bv))
    direction = "bidirectional" if bidirectional else "forward"
    model = build_onnx_gru(input_size, layers, direction, h0_layers is not None,
                           lengths is not None)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feeds = {"X": np.ascontiguousarray(x_tbi, dtype=np.float32)}
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
    if h0_layers is not None:
        for k, h in enumerate(h0_layers):
            feeds[f"initial_h_l{k}"] = np.ascontiguousarray(h, dtype=np.float32)
    outs = sess.run(None, feeds)
    return outs[0], outs[1:]


def ort_case(name: str, seed: int, input_size: int, hidden_size: int, num_layers: int = 1,
             bidirectional: bool = False, bias: bool = True, batch_first: bool = True,
             batch: int = 3, steps: int = 6, lengths: bool = False, h0: bool = False,
             unbatched: bool = False, scale: float = 1.0, x_scale: float = 1.0,
             prefix: str = "gru.") -> dict:
    """A reset_after=False case judged by ONNX Runtime (no torch needed).

    Weights are drawn like torch's default init, U(-1/sqrt(H), 1/sqrt(H))
    (times `scale`), in PyTorch layout and naming; outputs are mapped to
    grulite's conventions: y = Y transposed (T, D, B, H) -> (B, T, D*H)
    (or (T, B, D*H) when not batch_first), h_n = the Y_h of each layer
    concatenated (L*D, B, H).
    """
    if unbatched:
        assert not lengths and batch == 1
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    H = hidden_size
    sfx = ["", "_reverse"] if bidirectional else [""]
    k_init = 1.0 / np.sqrt(H)
    sd = {}
    in_f = input_size
    for k in range(num_layers):
        for s in sfx:
            sd[f"{prefix}weight_ih_l{k}{s}"] = rng.uniform(-k_init, k_init, (3 * H, in_f))
            sd[f"{prefix}weight_hh_l{k}{s}"] = rng.uniform(-k_init, k_init, (3 * H, H))
            if bias:
                sd[f"{prefix}bias_ih_l{k}{s}"] = rng.uniform(-k_init, k_init, (3 * H,))
                sd[f"{prefix}bias_hh_l{k}{s}"] = rng.uniform(-k_init, k_init, (3 * H,))
        in_f = D * H
    sd = {k: (v * scale).astype(np.float32) for k, v in sd.items()}

    B, T, I = batch, steps, input_size
    x, h0_a, len_a = _inputs(rng, B, T, I, num_layers * D, H, unbatched, batch_first,
                             x_scale, h0, lengths)

    if unbatched:
        x_tbi = x[:, None, :]
    elif batch_first:
        x_tbi = x.transpose(1, 0, 2)
    else:
        x_tbi = x
    h0_layers = None
    if h0_a is not None:
        h0b = h0_a[:, None, :] if unbatched else h0_a
        h0_layers = [h0b[k * D:(k + 1) * D] for k in range(num_layers)]
    Y, Yh = run_ort_gru(sd, prefix, input_size, [H] * num_layers, bidirectional, bias,
                        x_tbi, h0_layers, len_a)
    # Y (T, D, B, H) -> (T, B, D*H)
    y_tb = Y.transpose(0, 2, 1, 3).reshape(Y.shape[0], Y.shape[2], D * H)
    if unbatched:
        y = y_tb[:, 0]
    elif batch_first:
        y = y_tb.transpose(1, 0, 2)
    else:
        y = y_tb
    h_n = np.concatenate(Yh, axis=0)
    if unbatched:
        h_n = h_n[:, 0]
    config = dict(name=name, source="onnxruntime", seed=seed, input_size=input_size,
                  hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                  bias=bias, batch_first=batch_first, unbatched=unbatched, reset_after=False,
                  scale=scale, x_scale=x_scale, prefix=prefix, head=None)
    return dict(name=name, config=config, sd=sd, x=x, h0=h0_a, lengths=len_a,
                y=np.ascontiguousarray(y, dtype=np.float32),
                h_n=np.ascontiguousarray(h_n, dtype=np.float32), head_out=None)


# ---------------------------------------------------------------------------
# the committed cases

TORCH_CASES = [
    dict(name="basic", seed=1, input_size=3, hidden_size=17, batch=4, steps=7, prefix="gru."),
    dict(name="tiny_i1_h1_2layers_h0", seed=2, input_size=1, hidden_size=1, num_layers=2,
         batch_first=False, batch=3, steps=9, h0=True, prefix="rnn."),
    dict(name="bidir_2layers_lengths", seed=3, input_size=17, hidden_size=3, num_layers=2,
         bidirectional=True, batch=5, steps=8, lengths=True, prefix="encoder.gru."),
    dict(name="nobias_h129_lengths_timemajor", seed=4, input_size=5, hidden_size=129,
         bias=False, batch_first=False, batch=3, steps=6, lengths=True, prefix=""),
    dict(name="i129_3layers_bidir_h0_lengths", seed=5, input_size=129, hidden_size=17,
         num_layers=3, bidirectional=True, batch=4, steps=5, lengths=True, h0=True,
         prefix="gru."),
    dict(name="unbatched_bidir_h0", seed=6, input_size=4, hidden_size=3, num_layers=2,
         bidirectional=True, batch=1, steps=6, unbatched=True, h0=True, prefix="rnn."),
    dict(name="unbatched_uni", seed=7, input_size=3, hidden_size=17, batch=1, steps=5,
         unbatched=True, batch_first=False, prefix=""),
    dict(name="saturating_bidir_h0_lengths", seed=8, input_size=17, hidden_size=17,
         num_layers=2, bidirectional=True, batch=4, steps=7, lengths=True, h0=True,
         scale=4.0, x_scale=3.0, prefix="encoder.gru."),
    dict(name="saturating_3layers_nobias_timemajor", seed=9, input_size=3, hidden_size=33,
         num_layers=3, bias=False, batch_first=False, batch=2, steps=10, scale=4.0,
         x_scale=3.0, prefix="gru."),
    dict(name="single_step_b1_3layers_bidir", seed=10, input_size=17, hidden_size=3,
         num_layers=3, bidirectional=True, batch=1, steps=1, h0=True, prefix="gru."),
    dict(name="head_softmax_lengths", seed=11, input_size=3, hidden_size=17, num_layers=2,
         batch=5, steps=7, lengths=True, prefix="gru.", head=[("fc", 5, "softmax")]),
    dict(name="head_bidir_mlp_timemajor", seed=12, input_size=4, hidden_size=3,
         bidirectional=True, batch_first=False, batch=4, steps=6, lengths=True, prefix="rnn.",
         head=[("fc1", 7, "tanh"), ("fc2", 3, "softmax")]),
]

ORT_CASES = [
    dict(name="ort_forward_h0_lengths", seed=101, input_size=3, hidden_size=17, batch=4,
         steps=7, lengths=True, h0=True, prefix="gru."),
    dict(name="ort_bidir_h0_lengths_timemajor", seed=102, input_size=17, hidden_size=3,
         bidirectional=True, batch_first=False, batch=5, steps=8, lengths=True, h0=True,
         prefix="encoder.gru."),
    dict(name="ort_bidir_2layers_lengths", seed=103, input_size=5, hidden_size=17,
         num_layers=2, bidirectional=True, batch=3, steps=6, lengths=True, prefix=""),
    dict(name="ort_nobias_h0_i1", seed=104, input_size=1, hidden_size=129, bias=False,
         batch=2, steps=5, h0=True, prefix="rnn."),
    dict(name="ort_saturating_2layers_h0_lengths", seed=105, input_size=17, hidden_size=17,
         num_layers=2, batch=4, steps=9, lengths=True, h0=True, scale=4.0, x_scale=3.0,
         prefix="gru."),
    dict(name="ort_unbatched_bidir_h0", seed=106, input_size=4, hidden_size=1,
         bidirectional=True, batch=1, steps=6, unbatched=True, h0=True, prefix="rnn."),
]


# ---------------------------------------------------------------------------
# storage


def case_to_arrays(case: dict) -> dict:
    """Flattens a case into {"<name>/<field>": array}."""
    n = case["name"]
    out = {f"{n}/config": np.array(json.dumps(case["config"], sort_keys=True))}
    for k, v in case["sd"].items():
        out[f"{n}/sd/{k}"] = np.ascontiguousarray(v, dtype=np.float32)
    for field in ("x", "h0", "lengths", "y", "h_n", "head_out"):
        v = case.get(field)
        if v is not None:
            out[f"{n}/{field}"] = np.ascontiguousarray(v)
    return out


def load_cases(path: str) -> list:
    """Reads a fixture file back into a list of case dicts (sorted by name)."""
    cases: dict = {}
    with np.load(path, allow_pickle=False) as f:
        for key in f.files:
            name, _, field = key.partition("/")
            c = cases.setdefault(name, dict(name=name, sd={}, h0=None, lengths=None,
                                            head_out=None))
            if field == "config":
                c["config"] = json.loads(str(f[key][()]))
            elif field.startswith("sd/"):
                c["sd"][field[3:]] = f[key]
            else:
                c[field] = f[key]
    return [cases[k] for k in sorted(cases)]


def check_ort_semantics(case: dict, tol: float = 1e-5) -> list:
    """Compares an ORT case with the float64 numpy reference (torch/grulite
    semantics: 0 past a length, reverse starting at each sequence's own
    last step, h_n at the last valid step).  Returns a list of problems."""
    c = case["config"]
    D = 2 if c["bidirectional"] else 1
    x = case["x"]
    if c["unbatched"]:
        xb = x[None]
    elif c["batch_first"]:
        xb = x
    else:
        xb = x.transpose(1, 0, 2)
    h0 = case["h0"]
    h0_layers = None
    if h0 is not None:
        h0b = h0[:, None] if c["unbatched"] else h0
        h0_layers = [h0b[k * D:(k + 1) * D] for k in range(c["num_layers"])]
    y_ref, hn_ref = ref_gru(layers_from_state_dict(case["sd"], c["prefix"]), xb, h0_layers,
                            case["lengths"], reset_after=c["reset_after"])
    y = case["y"]
    y = y[None] if c["unbatched"] else (y if c["batch_first"] else y.transpose(1, 0, 2))
    hn = case["h_n"][:, None] if c["unbatched"] else case["h_n"]
    problems = []
    ey = np.abs(y - y_ref).max()
    eh = np.abs(hn - np.concatenate(hn_ref)).max()
    if ey > tol:
        problems.append(f"{case['name']}: Y differs from the reference by {ey:.3g}")
    if eh > tol:
        problems.append(f"{case['name']}: Y_h differs from the reference by {eh:.3g}")
    if case["lengths"] is not None:
        for b, L in enumerate(case["lengths"]):
            if np.any(y[b, L:] != 0):
                problems.append(f"{case['name']}: ORT output past length {L} of sequence {b} "
                                "is not 0")
    return problems


def generate() -> dict:
    """{file name: bytes} of every fixture file."""
    torch_cases = [torch_case(**spec) for spec in TORCH_CASES]
    ort_cases = [ort_case(**spec) for spec in ORT_CASES]
    problems = []
    for case in ort_cases:
        problems += check_ort_semantics(case)
    for p in problems:
        print("ORT DISAGREES:", p, file=sys.stderr)
    files = {}
    for fname, cases in ((TORCH_FILE, torch_cases), (ORT_FILE, ort_cases)):
        arrays = {}
        for case in cases:
            arrays.update(case_to_arrays(case))
        files[fname] = npz_bytes(arrays)
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=FIXTURE_DIR, help="output directory (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and compare with the files on disk")
    args = ap.parse_args(argv)
    files = generate()
    if args.check:
        bad = 0
        for fname, data in files.items():
            path = os.path.join(args.out, fname)
            same = os.path.exists(path) and open(path, "rb").read() == data
            print(f"{fname}: {'identical' if same else 'DIFFERENT'}")
            bad += not same
        return 1 if bad else 0
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for fname, data in files.items():
        with open(os.path.join(args.out, fname), "wb") as fh:
            fh.write(data)
        total += len(data)
        print(f"wrote {os.path.join(args.out, fname)} ({len(data)} bytes)")
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
