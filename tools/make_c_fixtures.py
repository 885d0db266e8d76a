#!/usr/bin/env python3
"""Write the reference fixtures of the C tests: tests/c/fixtures/*.bin.

Each fixture holds a small GRU model (weights in PyTorch's layout), an
input batch and the outputs an independent reference computed for it:

  * torch.nn.GRU / nn.Linear (torch 2.13.0, CPU, float32) for every
    reset_after=1 model (PyTorch's own variant);
  * for reset_after=0 (the original GRU paper's formula, ONNX
    linear_before_reset=0), which torch does not have, a float64 numpy
    reference (tests/support/reference.py, shared with the Python tests), which,
    run with reset_after=1 is checked against torch here (max |diff| below
    1e-5 on the torch-made fixtures), so that the reference is itself tested.

The C tests (tests/c/, the test_core executable) read them without Python.  Run from the
repository root:

    python3 tools/make_c_fixtures.py            # writes tests/c/fixtures/
    python3 tools/make_c_fixtures.py --out DIR

Reproducible: fixed seed per fixture, torch.set_num_threads(1).

File format (all little-endian; "i32" int32, "f32" float32; sizes derive
from the header, so there are no per-array lengths):

    char[8]  magic "GLFIX01\\0"
    i32      input_size I, num_layers L, num_dense N, batch B, steps T,
             has_lengths, has_h0, reserved (0)
    L x i32[4]   hidden_size H_l, num_directions D_l, reset_after, has_bias
    N x i32[3]   out_features, activation (GRULITE_ACT_*), has_bias
    for each layer l, each direction d (0 forward, 1 reverse):
        f32 weight_ih (3*H_l, in_l)     gates r, z, n (PyTorch layout)
        f32 weight_hh (3*H_l, H_l)
        f32 bias_ih (3*H_l), bias_hh (3*H_l)      only when has_bias
    for each head layer j:
        f32 weight (out_j, in_j)                  nn.Linear layout
        f32 bias (out_j)                          only when has_bias
    f32 x (B, T, I)                               batch-first
    i32 lengths (B)                               only when has_lengths
    f32 h0 (S*B): layer after layer, direction after direction, B rows of
        H_l floats (torch's (L*D, B, H));  S = sum_l D_l*H_l
                                                  only when has_h0
    f32 y (B, T, D_top*H_top)                     zeros past a length
    f32 h_n (S*B)                                 same layout as h0
    f32 head (B, head_size)                       on each row's last valid
                                                  step; only when N > 0
    f32 head_all (B, T, head_size)                on every step, zeros past
                                                  a length; only when N > 0
    char[8]  end marker "GLFIXEND"
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# The numpy reference GRU and the file writers the tests use too (tests/support/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.reference import last_step, ref_gru, ref_head  # noqa: E402

ACT = {"none": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "softmax": 4}


@dataclass
class Layer:
    hidden: int
    dirs: int
    reset_after: int
    bias: int
    # per direction: (w_ih, w_hh, b_ih, b_hh) float32 numpy, PyTorch layout
    weights: list = field(default_factory=list)


@dataclass
class Dense:
    out: int
    act: str
    bias: int
    weight: np.ndarray = None
    b: np.ndarray = None


# ---- the float64 numpy reference (tests/support/reference.py) -------------

def np_forward(layers, x, lengths, h0_list):
    """float64 forward of the GRU layers; h0_list: per (layer, dir) (B, H).
    Returns y (B, T, D*H) and h_n per (layer, dir) (B, H)."""
    ref_layers = [[dict(w_ih=w[0], w_hh=w[1], b_ih=w[2], b_hh=w[3]) for w in L.weights]
                  for L in layers]
    h0, k = [], 0
    for L in layers:
        h0.append(np.stack(h0_list[k:k + L.dirs]))
        k += L.dirs
    y, h_n = ref_gru(ref_layers, x, h0, lengths, reset_after=[bool(L.reset_after) for L in layers])
    return y, [h for per_layer in h_n for h in per_layer]


def np_head(dense, v):
    return ref_head(v, [(d.weight, d.b if d.bias else None, d.act) for d in dense])


# ---- torch reference -------------------------------------------------------

def torch_forward(modules, dense_mod, x, lengths, h0_list):
    """Stacked torch GRU modules (each may have several layers) run on a
    packed batch.  h0_list: per (layer, dir) (B, H) arrays."""
    inp = torch.from_numpy(x)
    B, T, _ = x.shape
    lens = torch.tensor(lengths, dtype=torch.int64)
    h_n, k = [], 0
    with torch.no_grad():
        for mod in modules:
            nld = mod.num_layers * (2 if mod.bidirectional else 1)
            h0 = torch.from_numpy(np.stack(h0_list[k:k + nld]))
            k += nld
            packed = pack_padded_sequence(inp, lens, batch_first=True, enforce_sorted=False)
            out, hn = mod(packed, h0)
            inp, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            h_n.extend(list(hn.numpy()))
        y = inp.numpy()
        head = head_all = None
        if dense_mod is not None:
            head_all = dense_mod(inp).numpy()
            for b in range(B):
                head_all[b, lengths[b]:] = 0.0
            head = last_step(head_all, lengths)
    return y, h_n, head, head_all


def layers_of_module(mod):
    """Layer descriptions (with float32 numpy weights) of an nn.GRU."""
    out = []
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in mod.state_dict().items()}
    for l in range(mod.num_layers):
        L = Layer(mod.hidden_size, 2 if mod.bidirectional else 1, 1, int(mod.bias))
        for d in range(L.dirs):
            sfx = f"l{l}" + ("_reverse" if d else "")
            H3 = 3 * mod.hidden_size
            L.weights.append((sd[f"weight_ih_{sfx}"], sd[f"weight_hh_{sfx}"],
                              sd.get(f"bias_ih_{sfx}", np.zeros(H3, np.float32)),
                              sd.get(f"bias_hh_{sfx}", np.zeros(H3, np.float32))))
        out.append(L)
    return out


def dense_of_sequential(seq):
    out = []
    mods = list(seq)
    for i, m in enumerate(mods):
        if not isinstance(m, nn.Linear):
            continue
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        act = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
               nn.Softmax: "softmax"}.get(type(nxt), "none")
        out.append(Dense(m.out_features, act, int(m.bias is not None),
                         m.weight.detach().numpy().astype(np.float32),
                         None if m.bias is None else m.bias.detach().numpy().astype(np.float32)))
    return out


# ---- writing ---------------------------------------------------------------

def write_fixture(path, I, layers, dense, x, lengths, h0_list, has_lengths, has_h0,
                  y, h_n, head, head_all):
    B, T, _ = x.shape
    f32 = lambda a: np.ascontiguousarray(a, dtype="<f4").tobytes()  # noqa: E731
    parts = [b"GLFIX01\0",
             struct.pack("<8i", I, len(layers), len(dense), B, T, int(has_lengths), int(has_h0), 0)]
    for L in layers:
        parts.append(struct.pack("<4i", L.hidden, L.dirs, L.reset_after, L.bias))
    for d in dense:
        parts.append(struct.pack("<3i", d.out, ACT[d.act], d.bias))
    for L in layers:
        for d in range(L.dirs):
            w_ih, w_hh, b_ih, b_hh = L.weights[d]
            parts += [f32(w_ih), f32(w_hh)]
            if L.bias:
                parts += [f32(b_ih), f32(b_hh)]
    for d in dense:
        parts.append(f32(d.weight))
        if d.bias:
            parts.append(f32(d.b))
    parts.append(f32(x))
    if has_lengths:
        parts.append(np.asarray(lengths, dtype="<i4").tobytes())
    if has_h0:
        parts.append(f32(np.concatenate([h.reshape(-1) for h in h0_list])))
    parts.append(f32(y))
    parts.append(f32(np.concatenate([h.reshape(-1) for h in h_n])))
    if dense:
        parts += [f32(head), f32(head_all)]
    parts.append(b"GLFIXEND")
    data = b"".join(parts)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def make(out_dir, name, seed, I, B, T, torch_modules=None, layer_defs=None, head_defs=None,
         lengths=None, with_h0=False):
    """Builds one fixture.  Either torch_modules (a list of nn.GRU, stacked)
    or layer_defs (list of (H, D, reset_after, bias)) for numpy-only models."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if torch_modules is not None:
        modules = [m() for m in torch_modules]
        layers = [L for m in modules for L in layers_of_module(m)]
    else:
        modules = None
        layers, in_w = [], I
        for H, D, ra, bias in layer_defs:
            L = Layer(H, D, ra, bias)
            s = 1.0 / np.sqrt(H)
            for _ in range(D):
                L.weights.append(tuple(rng.uniform(-s, s, shp).astype(np.float32) for shp in
                                       [(3 * H, in_w), (3 * H, H), (3 * H,), (3 * H,)]))
                if not bias:
                    L.weights[-1] = L.weights[-1][:2] + (np.zeros(3 * H, np.float32),) * 2
            layers.append(L)
            in_w = D * H
    width = layers[-1].dirs * layers[-1].hidden
    dense_mod, dense = None, []
    if head_defs:
        mods, in_w = [], width
        for out, act, bias in head_defs:
            mods.append(nn.Linear(in_w, out, bias=bool(bias)))
            if act != "none":
                mods.append({"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
                             "softmax": nn.Softmax(dim=-1)}[act])
            in_w = out
        dense_mod = nn.Sequential(*mods)
        dense = dense_of_sequential(dense_mod)

    x = rng.standard_normal((B, T, I)).astype(np.float32)
    has_lengths = lengths is not None
    lens = list(lengths) if has_lengths else [T] * B
    h0_list = []
    for L in layers:
        for _ in range(L.dirs):
            h0_list.append((rng.standard_normal((B, L.hidden)) * 0.5 if with_h0
                            else np.zeros((B, L.hidden))).astype(np.float32))

    ref_y, ref_hn = np_forward(layers, x, lens, h0_list)
    if modules is not None:
        y, h_n, head, head_all = torch_forward(modules, dense_mod, x, lens, h0_list)
        # The numpy reference must agree with torch (it is the only
        # reference for reset_after=0).
        err = max(np.abs(ref_y - y).max(), max(np.abs(a - b).max() for a, b in zip(ref_hn, h_n)))
        assert err < 1e-5, f"{name}: numpy reference differs from torch by {err}"
    else:
        y = ref_y.astype(np.float32)
        h_n = [h.astype(np.float32) for h in ref_hn]
        head = head_all = None
        if dense:
            head_all = np_head(dense, ref_y).astype(np.float32)
            for b in range(B):
                head_all[b, lens[b]:] = 0.0
            head = last_step(head_all, lens)
    if dense and modules is not None:
        ref_head = np_head(dense, ref_y)
        err = np.abs(last_step(ref_head, lens) - head).max()
        assert err < 1e-5, f"{name}: numpy head differs from torch by {err}"

    path = os.path.join(out_dir, name + ".bin")
    n = write_fixture(path, I, layers, dense, x, lens, h0_list, has_lengths, with_h0,
                      y, h_n, head, head_all)
    print(f"{path}: {n} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="example: python3 tools/make_c_fixtures.py --out tests/c/fixtures")
    ap.add_argument("--out", default=os.path.join("tests", "c", "fixtures"))
    args = ap.parse_args()
    assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    # 2-layer bidirectional, lengths (unsorted, one of 1) and h0.
    make(args.out, "bidir2_lengths_h0", 1, I=3, B=4, T=6,
         torch_modules=[lambda: nn.GRU(3, 5, num_layers=2, bidirectional=True, batch_first=True)],
         lengths=[6, 3, 1, 5], with_h0=True)
    # 1 layer, bias=False, full lengths, zero h0.
    make(args.out, "nobias1", 2, I=4, B=3, T=5,
         torch_modules=[lambda: nn.GRU(4, 7, bias=False, batch_first=True)])
    # A 2-layer unidirectional GRU with a 2-layer head (relu, then softmax).
    make(args.out, "head2_relu_softmax", 3, I=3, B=3, T=7,
         torch_modules=[lambda: nn.GRU(3, 9, num_layers=2, batch_first=True)],
         head_defs=[(6, "relu", 1), (4, "softmax", 1)], lengths=[7, 2, 5], with_h0=True)
    # Layers of different widths (two stacked bidirectional nn.GRU, H=5
    # then H=17), a one-layer tanh head without bias on a bidirectional top.
    make(args.out, "mixed_sizes_head", 4, I=2, B=2, T=4,
         torch_modules=[lambda: nn.GRU(2, 5, bidirectional=True, batch_first=True),
                        lambda: nn.GRU(10, 17, bidirectional=True, batch_first=True)],
         head_defs=[(3, "tanh", 0)], lengths=[2, 4], with_h0=True)
    # One layer with a head (linear without activation, then softmax): the
    # head-only calls of a one-layer model use scratch for y.
    make(args.out, "uni1_head_none_softmax", 7, I=3, B=3, T=4,
         torch_modules=[lambda: nn.GRU(3, 4, batch_first=True)],
         head_defs=[(5, "none", 1), (3, "softmax", 1)], lengths=[4, 1, 3], with_h0=True)
    # reset_after=0 (original GRU), float64 numpy reference: 2-layer
    # bidirectional with lengths and h0 ...
    make(args.out, "reset_before_bidir", 5, I=5, B=3, T=6,
         layer_defs=[(6, 2, 0, 1), (4, 2, 0, 1)], lengths=[4, 6, 1], with_h0=True)
    # ... and unidirectional, a reset_before layer without bias over a
    # PyTorch-variant layer, with a sigmoid head (also used for streaming).
    make(args.out, "reset_before_uni_head", 6, I=4, B=2, T=5,
         layer_defs=[(7, 1, 0, 0), (3, 1, 1, 1)], head_defs=[(2, "sigmoid", 1)],
         with_h0=True)


if __name__ == "__main__":
    main()
