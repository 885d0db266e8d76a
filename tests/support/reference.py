"""The numpy reference GRU (float64), independent of grulite.

Written from the formula (docs / torch.nn.GRU), gates in PyTorch's order
r, z, n:

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))       reset_after=True
    n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)       reset_after=False
    h' = (1 - z) * n + z * h

(or, for a direction that says so, other activations f for r and z and g
for n, ONNX's eleven written from their definitions below, and a clip of
every pre-activation to [-clip, clip] first), with torch.nn.GRU / pack_padded_sequence semantics for padded batches:
outputs past a sequence's length are 0, h_n is taken at its last valid
step, and a reverse direction starts at each sequence's own last step.
"""
from __future__ import annotations

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def softmax(v):
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0.0), "tanh": np.tanh,
               "sigmoid": sigmoid, "softmax": softmax}


# A GRU's f / g (ONNX's definitions; a, b its alpha and beta).
GRU_ACTIVATIONS = {
    "sigmoid": lambda v, a, b: sigmoid(v),
    "tanh": lambda v, a, b: np.tanh(v),
    "relu": lambda v, a, b: np.maximum(v, 0.0),
    "affine": lambda v, a, b: a * v + b,
    "leaky_relu": lambda v, a, b: np.where(v >= 0, v, a * v),
    "thresholded_relu": lambda v, a, b: np.where(v > a, v, 0.0),
    "scaled_tanh": lambda v, a, b: a * np.tanh(b * v),
    "hard_sigmoid": lambda v, a, b: np.clip(a * v + b, 0.0, 1.0),
    "elu": lambda v, a, b: np.where(v >= 0, v, a * (np.exp(np.minimum(v, 0.0)) - 1)),
    "softsign": lambda v, a, b: v / (1 + np.abs(v)),
    "softplus": lambda v, a, b: np.logaddexp(0.0, v),
}


def gru_act(spec, v, clip=None):
    """f or g = (name, alpha, beta) of v, after the clip."""
    name, a, b = spec
    if clip is not None:
        v = np.clip(v, -clip, clip)
    return GRU_ACTIVATIONS[name](v, a, b)


def ref_gru(layers: list, x, h0=None, lengths=None, reset_after=True):
    """Runs a stack of GRU layers.

    layers: a list of layers; a layer is a list of directions (1 or 2); a
    direction is a dict with w_ih (3H, In), w_hh (3H, H), optional b_ih,
    b_hh (PyTorch gate order r, z, n) and optional ``reverse`` (default:
    the second direction of a layer runs backward; ``reverse=True`` on a
    layer's only direction is ONNX's direction="reverse"), ``f`` and ``g``
    (name, alpha, beta) (default sigmoid, tanh) and ``clip`` (None).
    x: (B, T, I).  h0: one (D, B, H_l) array per layer, or None (zeros).
    lengths: (B,) or None.  reset_after: a bool or one bool per layer.
    Returns y (B, T, D*H_top) (0 past a length) and a list of (D, B, H_l).
    """
    x = np.asarray(x, dtype=np.float64)
    B, T, _ = x.shape
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    valid = np.arange(T)[None, :] < lens[:, None]              # (B, T)
    if isinstance(reset_after, (bool, np.bool_, int)):
        reset_after = [bool(reset_after)] * len(layers)
    inp = x
    h_n = []
    for k, layer in enumerate(layers):
        outs, finals = [], []
        for d, p in enumerate(layer):
            w_ih = np.asarray(p["w_ih"], np.float64)
            w_hh = np.asarray(p["w_hh"], np.float64)
            H = w_hh.shape[1]
            b_ih = np.asarray(p["b_ih"] if p.get("b_ih") is not None else np.zeros(3 * H), np.float64)
            b_hh = np.asarray(p["b_hh"] if p.get("b_hh") is not None else np.zeros(3 * H), np.float64)
            h = np.zeros((B, H)) if h0 is None else np.array(h0[k][d], np.float64)
            out = np.zeros((B, T, H))
            reverse = p.get("reverse", d == 1)
            f = p.get("f") or ("sigmoid", 0.0, 0.0)
            g = p.get("g") or ("tanh", 0.0, 0.0)
            clip = p.get("clip")
            # Every row walks t = 0 .. T-1 (or back); a row's state moves
            # only while t < its length, so backward starts at its last step.
            for t in (range(T - 1, -1, -1) if reverse else range(T)):
                gi = inp[:, t] @ w_ih.T + b_ih
                gh = h @ w_hh.T + b_hh
                r = gru_act(f, gi[:, :H] + gh[:, :H], clip)
                z = gru_act(f, gi[:, H:2 * H] + gh[:, H:2 * H], clip)
                if reset_after[k]:
                    n = gru_act(g, gi[:, 2 * H:] + r * gh[:, 2 * H:], clip)
                else:
                    n = gru_act(g, gi[:, 2 * H:] + (r * h) @ w_hh[2 * H:].T + b_hh[2 * H:], clip)
                h_new = (1 - z) * n + z * h
                m = valid[:, t][:, None]
                h = np.where(m, h_new, h)
                out[:, t] = np.where(m, h_new, 0.0)
            outs.append(out)
            finals.append(h)
        inp = np.concatenate(outs, axis=-1)
        h_n.append(np.stack(finals))
    return inp, h_n


def ref_head(v, dense: list):
    """The dense head: dense is a list of (weight (out, in), bias (out,) or
    None, activation name); v (..., in) -> (..., out), float64."""
    v = np.asarray(v, np.float64)
    for w, b, act in dense:
        v = v @ np.asarray(w, np.float64).T
        if b is not None:
            v = v + np.asarray(b, np.float64)
        v = ACTIVATIONS[act](v)
    return v


def last_step(y, lengths=None):
    """(B, F): y (B, T, F) at each row's last valid step."""
    B, T = y.shape[:2]
    idx = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
    return y[np.arange(B), idx]


def layers_from_state_dict(sd: dict, prefix: str = "") -> list:
    """ref_gru's `layers` from a PyTorch-style nn.GRU state_dict."""
    layers = []
    k = 0
    while f"{prefix}weight_ih_l{k}" in sd:
        dirs = []
        for sfx in ("", "_reverse"):
            if f"{prefix}weight_ih_l{k}{sfx}" not in sd:
                continue
            p = dict(w_ih=sd[f"{prefix}weight_ih_l{k}{sfx}"], w_hh=sd[f"{prefix}weight_hh_l{k}{sfx}"])
            if f"{prefix}bias_ih_l{k}{sfx}" in sd:
                p["b_ih"] = sd[f"{prefix}bias_ih_l{k}{sfx}"]
                p["b_hh"] = sd[f"{prefix}bias_hh_l{k}{sfx}"]
            dirs.append(p)
        layers.append(dirs)
        k += 1
    return layers
