"""Numerical parity of grulite with torch.nn.GRU and ONNX Runtime.

* Committed fixtures (tests/fixtures/*.npz, made by tools/make_fixtures.py)
  run everywhere, without torch or onnxruntime.
* Live random configurations run when torch (reset_after=True) or
  onnxruntime (reset_after=False) can be imported.

Every comparison is a max-abs error against ``TOL``; the worst error of
each kind is printed in the terminal summary (see conftest.py).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import grulite
from conftest import FIXTURE_DIR, batch_major, fixture_cases, make_fixtures, max_err, record_error
from support.reference import layers_from_state_dict, ref_gru

# Max abs error allowed against torch / ORT.  Both sides compute in float32;
# at the largest live configuration (H=257, 3 bidirectional layers, weights
# x4, T=50) torch itself is ~1.2e-5 away from a float64 reference, so the
# observed grulite-torch error (~1.3e-5) is float32 rounding, not a bug.
TOL = 2e-5
REF_TOL = 1e-5             # fixtures vs the float64 numpy reference (sanity of the fixtures)
FIXTURE_BUDGET = 1_500_000  # bytes, all committed fixtures together

TORCH_CASES = fixture_cases(make_fixtures.TORCH_FILE)
ORT_CASES = fixture_cases(make_fixtures.ORT_FILE)
ALL_CASES = [("torch", c) for c in TORCH_CASES] + [("ort", c) for c in ORT_CASES]
CASE_IDS = [c["name"] for _, c in ALL_CASES]

N_LIVE_TORCH = 40
N_LIVE_ORT = 20


# ---------------------------------------------------------------------------
# helpers


def build(case: dict, how: str, tmp_path=None, prefix="auto", with_head=True) -> grulite.Model:
    """The case's model, through from_state_dict or from_npz."""
    c = case["config"]
    kw = dict(reset_after=c["reset_after"], batch_first=c["batch_first"],
              head=c["head"] if with_head else None)
    p = None if prefix == "auto" else prefix
    if how == "state_dict":
        return grulite.from_state_dict(case["sd"], prefix=p, **kw)
    assert how == "npz"
    path = os.path.join(str(tmp_path), "weights.npz")
    np.savez(path, **case["sd"])
    return grulite.from_npz(path, prefix=p, **kw)


def check_model(model: grulite.Model, case: dict, kind: str, how: str, call_kw=None) -> None:
    """Runs `model` on the case's input; y, h_n (and the head) within TOL."""
    c = case["config"]
    where = f"{case['name']} via {how}"
    call_kw = call_kw or {}
    y, h_n = model(case["x"], h0=case["h0"], lengths=case["lengths"], **call_kw)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert y.shape == case["y"].shape, where
    assert isinstance(h_n, np.ndarray) and h_n.dtype == np.float32
    assert h_n.shape == case["h_n"].shape, where
    ey = record_error(kind, max_err(y, case["y"]), where + " [y]")
    eh = record_error(kind, max_err(h_n, case["h_n"]), where + " [h_n]")
    assert ey <= TOL, f"{where}: y max abs error {ey:.3e} > {TOL}"
    assert eh <= TOL, f"{where}: h_n max abs error {eh:.3e} > {TOL}"
    if case["lengths"] is not None:
        yb = batch_major(case, y)
        for b, L in enumerate(case["lengths"]):
            assert not np.any(yb[b, L:]), f"{where}: y not exactly 0 past length {L} (seq {b})"
    if c["head"]:
        assert case["h0"] is None, "predict() has no h0: the reference must start from zeros"
        out = model.predict(case["x"], lengths=case["lengths"], **call_kw)
        assert out.dtype == np.float32 and out.shape == case["head_out"].shape, where
        eo = record_error(kind + " head", max_err(out, case["head_out"]), where + " [head]")
        assert eo <= TOL, f"{where}: head output max abs error {eo:.3e} > {TOL}"


def check_stream(model: grulite.Model, case: dict, kind: str, seed: int) -> None:
    """Streaming (step by step and in chunks) is bit-identical to the
    whole-sequence call, and matches the reference on valid steps."""
    c = case["config"]
    where = f"{case['name']} streaming"
    xb = batch_major(case, case["x"])
    B, T, _ = xb.shape
    h0 = case["h0"]
    if h0 is not None and c["unbatched"]:
        h0 = h0[:, None]
    y_full, hn_full = model(xb, h0=h0, batch_first=True)

    s = model.stream(batch_size=B)
    if h0 is not None:
        s.state = h0
    steps = np.stack([s.step(xb[:, t]) for t in range(T)], axis=1)
    np.testing.assert_array_equal(steps, y_full, err_msg=where + " (step by step)")
    np.testing.assert_array_equal(s.state, hn_full, err_msg=where + " (state)")

    rng = np.random.default_rng(seed)
    s.reset()
    if h0 is not None:
        s.state = h0
    cuts = np.sort(rng.choice(np.arange(1, T), size=min(T - 1, rng.integers(0, 4)),
                              replace=False)) if T > 1 else np.array([], int)
    bounds = [0, *cuts.tolist(), T]
    chunks = [s.step(np.ascontiguousarray(xb[:, a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), y_full,
                                  err_msg=f"{where} (chunks {bounds})")
    np.testing.assert_array_equal(s.state, hn_full, err_msg=where + " (state after chunks)")

    # against the reference, on each sequence's valid steps
    y_ref = batch_major(case, case["y"])
    lens = case["lengths"] if case["lengths"] is not None else np.full(B, T)
    err = max(max_err(steps[b, :L], y_ref[b, :L]) for b, L in enumerate(lens))
    record_error(kind + " stream", err, where)
    assert err <= TOL, f"{where}: max abs error {err:.3e} > {TOL}"


# ---------------------------------------------------------------------------
# committed fixtures


def test_fixture_files_small_and_complete():
    total = 0
    for fname in (make_fixtures.TORCH_FILE, make_fixtures.ORT_FILE):
        path = os.path.join(FIXTURE_DIR, fname)
        assert os.path.exists(path), f"missing {path}; run tools/make_fixtures.py"
        total += os.path.getsize(path)
    assert total < FIXTURE_BUDGET, f"fixtures take {total} bytes (budget {FIXTURE_BUDGET})"
    prefixes = {c["config"]["prefix"] for _, c in ALL_CASES}
    assert {"gru.", "rnn.", "encoder.gru.", ""} <= prefixes
    cfgs = [c["config"] for _, c in ALL_CASES]
    assert any(c["bidirectional"] for c in cfgs) and any(not c["bias"] for c in cfgs)
    assert any(c["unbatched"] for c in cfgs) and any(not c["batch_first"] for c in cfgs)
    assert any(c["head"] for c in cfgs) and any(not c["reset_after"] for c in cfgs)
    assert {1, 3, 17, 129} <= {c["hidden_size"] for c in cfgs} | {c["input_size"] for c in cfgs}
    assert {1, 2, 3} <= {c["num_layers"] for c in cfgs}


@pytest.mark.parametrize("kind,case", ALL_CASES, ids=CASE_IDS)
def test_fixture_matches_numpy_reference(kind, case):
    """The fixtures themselves agree with an independent float64 GRU (this
    checks the reference semantics, e.g. ORT's sequence_lens handling)."""
    c = case["config"]
    D = 2 if c["bidirectional"] else 1
    h0 = case["h0"]
    h0_layers = None
    if h0 is not None:
        h0b = h0[:, None] if c["unbatched"] else h0
        h0_layers = [h0b[k * D:(k + 1) * D] for k in range(c["num_layers"])]
    y_ref, hn_ref = ref_gru(layers_from_state_dict(case["sd"], c["prefix"]),
                            batch_major(case, case["x"]), h0_layers, case["lengths"],
                            reset_after=c["reset_after"])
    hn = case["h_n"][:, None] if c["unbatched"] else case["h_n"]
    assert max_err(batch_major(case, case["y"]), y_ref) <= REF_TOL
    assert max_err(hn, np.concatenate(hn_ref)) <= REF_TOL


@pytest.mark.parametrize("kind,case", ALL_CASES, ids=CASE_IDS)
def test_fixture_from_state_dict(kind, case):
    c = case["config"]
    check_model(build(case, "state_dict"), case, kind, "from_state_dict(prefix=None)")
    explicit = [c["prefix"]]
    if c["prefix"]:
        explicit.append(c["prefix"].rstrip("."))        # "encoder.gru" works as well
    for p in explicit:
        m = build(case, "state_dict", prefix=p)
        check_model(m, case, kind, f"from_state_dict(prefix={p!r})")
    # a model whose default layout is the other one, told per call
    m = grulite.from_state_dict(case["sd"], reset_after=c["reset_after"], head=c["head"],
                                batch_first=not c["batch_first"])
    check_model(m, case, kind, "batch_first override", dict(batch_first=c["batch_first"]))


@pytest.mark.parametrize("kind,case", ALL_CASES, ids=CASE_IDS)
def test_fixture_from_npz(kind, case, tmp_path):
    c = case["config"]
    check_model(build(case, "npz", tmp_path), case, kind, "from_npz(prefix=None)")
    check_model(build(case, "npz", tmp_path, prefix=c["prefix"]), case, kind,
                f"from_npz(prefix={c['prefix']!r})")


@pytest.mark.parametrize("kind,case", [kc for kc in ALL_CASES
                                       if not kc[1]["config"]["bidirectional"]],
                         ids=[c["name"] for _, c in ALL_CASES
                              if not c["config"]["bidirectional"]])
def test_fixture_streaming(kind, case):
    check_stream(build(case, "state_dict", with_head=False), case, kind, seed=0)


# ---------------------------------------------------------------------------
# live random configurations


PREFIXES = ["gru.", "rnn.", "encoder.gru.", ""]
ACTS = ["none", "relu", "tanh", "sigmoid", "softmax"]


def _size(r: np.random.Generator, hi: int = 257) -> int:
    """Log-uniform integer in [1, hi] (small sizes common, hi reachable)."""
    return int(np.clip(round(np.exp(r.uniform(0, np.log(hi + 0.5)))), 1, hi))


def random_config(seed: int, with_head: bool) -> dict:
    r = np.random.default_rng(10_000 + seed)
    cfg = dict(name=f"live{seed}", seed=seed, input_size=_size(r), hidden_size=_size(r),
               num_layers=int(r.integers(1, 4)), bidirectional=bool(r.random() < 0.5),
               bias=bool(r.random() < 0.75), batch_first=bool(r.random() < 0.5),
               batch=int(r.integers(1, 17)), steps=int(r.integers(1, 51)),
               h0=bool(r.random() < 0.5), scale=float(r.uniform(1.0, 4.0)),
               x_scale=float(r.uniform(0.5, 2.0)), prefix=PREFIXES[seed % 4])
    if r.random() < 0.1:
        cfg.update(unbatched=True, batch=1, lengths=False)
    else:
        cfg.update(unbatched=False, lengths=bool(r.random() < 0.5))
    if with_head and r.random() < 0.3:
        n = int(r.integers(1, 3))
        cfg["head"] = [(f"head.{j}", _size(r, 12), ACTS[int(r.integers(len(ACTS)))])
                       for j in range(n)]
        cfg["h0"] = False      # predict() starts from zeros
    if seed == 0:     # the largest configuration, always
        cfg.update(input_size=257, hidden_size=257, num_layers=3, bidirectional=True,
                   batch=16, steps=50, scale=4.0, lengths=True, unbatched=False, h0=True,
                   head=None)
    if seed == 1:     # the smallest
        cfg.update(input_size=1, hidden_size=1, num_layers=1, batch=1, steps=1)
    return cfg


@pytest.mark.parametrize("seed", range(N_LIVE_TORCH))
def test_live_torch(seed, tmp_path):
    pytest.importorskip("torch")
    cfg = random_config(seed, with_head=True)
    case = make_fixtures.torch_case(**cfg)
    desc = (f"{case['name']}: I={cfg['input_size']} H={cfg['hidden_size']} "
            f"L={cfg['num_layers']} bidir={cfg['bidirectional']} bias={cfg['bias']} "
            f"B={cfg['batch']} T={cfg['steps']} lengths={cfg['lengths']} h0={cfg['h0']}")
    check_model(build(case, "state_dict"), case, "torch live", "from_state_dict " + desc)
    if seed % 4 == 0:   # torch tensors (not numpy) straight from a state_dict
        import torch
        tsd = {k: torch.from_numpy(v) for k, v in case["sd"].items()}
        m = grulite.from_state_dict(tsd, head=case["config"]["head"],
                                    batch_first=cfg["batch_first"])
        check_model(m, case, "torch live", "from_state_dict(torch tensors) " + desc)
    check_model(build(case, "npz", tmp_path, prefix=cfg["prefix"]), case, "torch live",
                f"from_npz(prefix={cfg['prefix']!r}) " + desc)
    if not cfg["bidirectional"]:
        check_stream(build(case, "state_dict", with_head=False), case, "torch live", seed)


@pytest.mark.parametrize("seed", range(N_LIVE_ORT))
def test_live_onnxruntime(seed, tmp_path):
    """reset_after=False against ONNX Runtime (linear_before_reset=0)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    cfg = random_config(1000 + seed, with_head=False)
    cfg["name"] = f"ort_live{seed}"
    cfg["seed"] = 1000 + seed
    if seed == 0:
        cfg.update(input_size=257, hidden_size=257, num_layers=3, bidirectional=True,
                   batch=16, steps=50, scale=4.0, lengths=True, unbatched=False, h0=True)
    case = make_fixtures.ort_case(**cfg)
    desc = (f"{case['name']}: I={cfg['input_size']} H={cfg['hidden_size']} "
            f"L={cfg['num_layers']} bidir={cfg['bidirectional']} bias={cfg['bias']} "
            f"B={cfg['batch']} T={cfg['steps']} lengths={cfg['lengths']} h0={cfg['h0']}")
    check_model(build(case, "state_dict"), case, "ort live", "from_state_dict " + desc)
    check_model(build(case, "npz", tmp_path, prefix=cfg["prefix"]), case, "ort live",
                f"from_npz(prefix={cfg['prefix']!r}) " + desc)
    if not cfg["bidirectional"]:
        check_stream(build(case, "state_dict"), case, "ort live", seed)


def test_live_fixtures_reproducible():
    """tools/make_fixtures.py regenerates the committed fixtures (same
    numbers) with this torch / onnxruntime."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    spec = make_fixtures.TORCH_CASES[2]
    fresh = make_fixtures.torch_case(**spec)
    stored = next(c for c in TORCH_CASES if c["name"] == spec["name"])
    assert max_err(fresh["y"], stored["y"]) <= 1e-6
    spec = make_fixtures.ORT_CASES[1]
    fresh = make_fixtures.ort_case(**spec)
    stored = next(c for c in ORT_CASES if c["name"] == spec["name"])
    assert max_err(fresh["y"], stored["y"]) <= 1e-6
