"""Shared helpers for grulite's Python tests.

* ``FIXTURE_DIR`` and ``fixture_cases()``: the committed parity fixtures
  (made by tools/make_fixtures.py).
* ``make_fixtures``: that tool imported as a module, whose ``torch_case`` /
  ``ort_case`` generators the live parity tests reuse.
* ``ref_gru``: a small float64 numpy GRU, independent of the library, for
  judging numbers where torch is not the reference (layers of different
  hidden sizes, reset_after=False).
* ``record_error``: keeps the worst parity error of each kind; printed in the
  terminal summary at the end of the session.
* ``random_state_dict``: a random PyTorch-style GRU state_dict with an
  optional Linear head, for tests that need a model of a given shape.
"""
from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
FIXTURE_DIR = os.path.join(TESTS_DIR, "fixtures")
TOOLS_DIR = os.path.join(ROOT, "tools")


def _load_make_fixtures():
    path = os.path.join(TOOLS_DIR, "make_fixtures.py")
    spec = importlib.util.spec_from_file_location("grulite_make_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_fixtures = _load_make_fixtures()


def fixture_cases(fname: str) -> list:
    """The cases stored in tests/fixtures/<fname> (list of dicts)."""
    return make_fixtures.load_cases(os.path.join(FIXTURE_DIR, fname))


# ---------------------------------------------------------------------------
# random models


def random_state_dict(seed: int = 0, input_size: int = 3, hidden=(17, 17), bidirectional: bool = False,
                      head=(), prefix: str = "gru.", head_names=None, head_scale: float = 0.5) -> dict:
    """A PyTorch-style nn.GRU state_dict (numpy float32, PyTorch's uniform
    init) with one layer per entry of `hidden`, followed by Linear layers of
    the widths in `head` named head_names (default fc0, fc1, ...)."""
    rng = np.random.default_rng(seed)
    sd = {}
    D = 2 if bidirectional else 1
    in_f = input_size
    for k, H in enumerate(hidden):
        b = 1.0 / np.sqrt(H)
        for sfx in ("", "_reverse")[:D]:
            sd[f"{prefix}weight_ih_l{k}{sfx}"] = rng.uniform(-b, b, (3 * H, in_f)).astype(np.float32)
            sd[f"{prefix}weight_hh_l{k}{sfx}"] = rng.uniform(-b, b, (3 * H, H)).astype(np.float32)
            sd[f"{prefix}bias_ih_l{k}{sfx}"] = rng.uniform(-b, b, 3 * H).astype(np.float32)
            sd[f"{prefix}bias_hh_l{k}{sfx}"] = rng.uniform(-b, b, 3 * H).astype(np.float32)
        in_f = D * H
    names = head_names or [f"fc{j}" for j in range(len(head))]
    for name, out_f in zip(names, head):
        sd[f"{name}.weight"] = rng.standard_normal((out_f, in_f)).astype(np.float32) * head_scale
        sd[f"{name}.bias"] = rng.standard_normal(out_f).astype(np.float32) * 0.1
        in_f = out_f
    return sd


# ---------------------------------------------------------------------------
# layout helpers


def batch_major(case: dict, a):
    """A case's x / y (as stored: batch-first, time-major or unbatched) as
    (B, T, F)."""
    c = case["config"]
    if a is None:
        return None
    if c["unbatched"]:
        return a[None]
    return a if c["batch_first"] else a.transpose(1, 0, 2)


# ---------------------------------------------------------------------------
# numpy reference GRU (float64), independent of grulite


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def ref_gru(layers: list, x, h0=None, lengths=None, reset_after=True):
    """Float64 GRU with torch.nn.GRU / pack_padded_sequence semantics.

    layers: list of layers; a layer is a list of directions (1 or 2); a
    direction is a dict with w_ih (3H, In), w_hh (3H, H), optional b_ih,
    b_hh (PyTorch gate order r, z, n).
    x: (B, T, I).  h0: list with one (D, B, H_l) array per layer, or None.
    lengths: (B,) or None.  reset_after: bool or one bool per layer.
    Returns y (B, T, D*H_top) (0 past a length) and a list of (D, B, H_l).
    Vectorized over the batch with masks: a sequence's state only moves
    while t < its length; the reverse direction runs t = T-1 .. 0 with the
    same mask, so it starts at each sequence's own last valid step.
    """
    x = np.asarray(x, dtype=np.float64)
    B, T, _ = x.shape
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    valid = (np.arange(T)[None, :] < lens[:, None])          # (B, T)
    if isinstance(reset_after, (bool, np.bool_)):
        reset_after = [bool(reset_after)] * len(layers)
    inp = x
    h_n = []
    for k, layer in enumerate(layers):
        outs, finals = [], []
        for d, p in enumerate(layer):
            w_ih = np.asarray(p["w_ih"], np.float64)
            w_hh = np.asarray(p["w_hh"], np.float64)
            H = w_hh.shape[1]
            b_ih = np.asarray(p.get("b_ih", np.zeros(3 * H)), np.float64)
            b_hh = np.asarray(p.get("b_hh", np.zeros(3 * H)), np.float64)
            h = np.zeros((B, H)) if h0 is None else np.asarray(h0[k][d], np.float64).copy()
            out = np.zeros((B, T, H))
            steps = range(T) if d == 0 else range(T - 1, -1, -1)
            for t in steps:
                gi = inp[:, t] @ w_ih.T + b_ih
                gh_rz = h @ w_hh[:2 * H].T + b_hh[:2 * H]
                r = _sigmoid(gi[:, :H] + gh_rz[:, :H])
                z = _sigmoid(gi[:, H:2 * H] + gh_rz[:, H:])
                if reset_after[k]:
                    n = np.tanh(gi[:, 2 * H:] + r * (h @ w_hh[2 * H:].T + b_hh[2 * H:]))
                else:
                    n = np.tanh(gi[:, 2 * H:] + (r * h) @ w_hh[2 * H:].T + b_hh[2 * H:])
                hn = (1 - z) * n + z * h
                m = valid[:, t][:, None]
                h = np.where(m, hn, h)
                out[:, t] = np.where(m, hn, 0.0)
            outs.append(out)
            finals.append(h)
        inp = np.concatenate(outs, axis=-1)
        h_n.append(np.stack(finals))
    return inp, h_n


def layers_from_state_dict(sd: dict, prefix: str = "") -> list:
    """ref_gru's `layers` from a PyTorch-style state_dict."""
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


# ---------------------------------------------------------------------------
# worst-error bookkeeping


_WORST: dict = {}
_WORST_LOCK = threading.Lock()


def record_error(kind: str, err: float, where: str = "") -> float:
    """Remembers the worst error of each kind ("torch", "ort", ...)."""
    err = float(err)
    with _WORST_LOCK:
        if kind not in _WORST or err > _WORST[kind][0]:
            _WORST[kind] = (err, where)
    return err


def pytest_terminal_summary(terminalreporter):
    if not _WORST:
        return
    terminalreporter.section("grulite parity: worst max-abs error per reference")
    for kind in sorted(_WORST):
        err, where = _WORST[kind]
        terminalreporter.write_line(f"{kind:>22}: {err:.3e}  ({where})")
