"""float16, bfloat16 and int8 weight storage: every kernel set against the
float32 model (and, when torch is installed, against torch.nn.GRU), file
sizes, save / load round trips, and conversion rules."""
import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from support.models import random_state_dict
from support.reference import layers_from_state_dict, ref_gru

ISAS = grulite.available_isas()

# Max abs error of outputs and h_n against the float32 model, on random
# models with PyTorch's initialization (the targets of the low-memory issue).
# bfloat16 keeps 8 bits of mantissa to float16's 11: about 8x float16's
# error (0.6e-3 at H=512, 2.6e-3 at H=64 with unit-normal inputs).
TOL = {"float16": 2e-3, "bfloat16": 5e-3, "int8": 2e-2}
SIZE = {"float16": 0.52, "bfloat16": 0.52, "int8": 0.27}   # file size / float32 file size
LOW = ["float16", "bfloat16", "int8"]
# Kernel sets whose int8 products run in integers: they round each row of
# activations to int8 too (symmetric, one scale a row).
ROUNDS_X = ("avx2", "avx512", "avx512vnni", "neondot")


def _state_dict(rng, I, H, L, bidir=False, bias=True):
    return random_state_dict(rng, I, (H,) * L, bidir, prefix="gru.", bias=bias)


CASES = [(64, 64, 1, False), (32, 129, 2, True), (64, 256, 3, False), (16, 512, 1, False)]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "I{}H{}L{}{}".format(*c[:3], "bi" if c[3] else ""))
def test_accuracy_against_float32(dtype, case):
    I, H, L, bidir = case
    rng = np.random.default_rng(H * 10 + L)
    sd = _state_dict(rng, I, H, L, bidir)
    m32 = grulite.from_state_dict(sd)
    x = rng.standard_normal((4, 40, I)).astype(np.float32)
    lengths = np.array([40, 17, 1, 33])
    y32, h32 = m32(x, lengths=lengths)
    mq = grulite.from_state_dict(sd, dtype=dtype)
    assert mq.config.dtype == dtype
    if H >= 128:        # smaller models carry fixed overhead: biases, scales, tables
        assert mq.nbytes <= SIZE[dtype] * m32.nbytes
    results = {}
    for isa in ISAS:
        mq.isa = isa
        y, h = mq(x, lengths=lengths)
        assert np.max(np.abs(y - y32)) <= TOL[dtype], isa
        assert np.max(np.abs(h - h32)) <= TOL[dtype], isa
        assert_array_equal(y[1, 17:], 0.0)
        results[isa] = (y, h)
    # Every kernel set reads the same stored values: they agree closely,
    # except that the integer int8 products also round the activations to
    # int8 per row (within the int8 tolerance above).
    for isa in ISAS[1:]:
        if isa not in ROUNDS_X or dtype != "int8":
            assert np.max(np.abs(results[isa][0] - results["generic"][0])) <= 2e-5


@pytest.mark.parametrize("dtype", LOW)
def test_dequantized_weights_are_what_runs(dtype):
    """The quantized model computes exactly a float32 GRU whose weights are
    the stored (rounded) values: checked with the float64 reference."""
    rng = np.random.default_rng(5)
    sd = _state_dict(rng, 8, 20, 2)
    mq = grulite.from_state_dict(sd, dtype=dtype)
    mq.isa = "generic"       # ROUNDS_X sets also round activations (tested above)
    back = grulite.from_bytes(mq._core.convert("float32"))   # dequantized float32 copy
    x = rng.standard_normal((3, 12, 8)).astype(np.float32)
    y, h = mq(x)
    yb, hb = back(x)
    assert np.max(np.abs(y - yb)) <= 2e-6
    # ... and the rounding itself stays within what the dtype promises.
    layers = layers_from_state_dict({k[4:]: v for k, v in sd.items()})
    y64, _ = ref_gru(layers, x)
    assert np.max(np.abs(y - y64)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", LOW)
def test_stream_and_threads_bit_identical(dtype):
    rng = np.random.default_rng(9)
    sd = _state_dict(rng, 150, 40, 2)
    m = grulite.from_state_dict(sd, dtype=dtype)
    x = rng.standard_normal((11, 9, 150)).astype(np.float32)
    m.num_threads = 1
    y1, _ = m(x)
    m.num_threads = 2
    y2, _ = m(x)
    assert_array_equal(y1, y2)
    s = m.stream(11)
    assert_array_equal(np.stack([s.step(x[:, t]) for t in range(9)], 1), y1)


@pytest.mark.parametrize("dtype", LOW)
def test_save_load_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    sd = _state_dict(rng, 5, 33, 2)
    sd["fc.weight"] = rng.standard_normal((4, 33)).astype(np.float32)
    sd["fc.bias"] = rng.standard_normal(4).astype(np.float32)
    m32 = grulite.from_state_dict(sd, head="fc:softmax")
    m32.save(tmp_path / "q.grl", dtype=dtype)
    mq = grulite.load(tmp_path / "q.grl")
    assert mq.config.dtype == dtype and mq.config.head[0].activation == "softmax"
    direct = grulite.from_state_dict(sd, head="fc:softmax", dtype=dtype)
    assert mq.to_bytes() == direct.to_bytes()
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    assert_array_equal(mq.predict(x), direct.predict(x))
    assert np.max(np.abs(mq.predict(x) - m32.predict(x))) <= TOL[dtype]
    # Saving without a dtype keeps the model's own.
    mq.save(tmp_path / "again.grl")
    assert open(tmp_path / "again.grl", "rb").read() == mq.to_bytes()


def test_unknown_dtype_is_refused():
    sd = _state_dict(np.random.default_rng(0), 2, 3, 1)
    with pytest.raises(grulite.GruliteError, match="unknown weight dtype 'int4'"):
        grulite.from_state_dict(sd, dtype="int4")
    m = grulite.from_state_dict(sd)
    with pytest.raises(grulite.GruliteError, match="unknown weight dtype"):
        m.save("/nonexistent/never.grl", dtype="float64")


def test_zero_rows_quantize_to_zero():
    rng = np.random.default_rng(2)
    sd = _state_dict(rng, 4, 16, 1)
    sd["gru.weight_hh_l0"][5] = 0.0               # an all-zero output row
    m = grulite.from_state_dict(sd, dtype="int8")
    y, _ = m(rng.standard_normal((1, 5, 4)).astype(np.float32))
    assert np.isfinite(y).all()


def test_cli_convert_dtype(tmp_path):
    rng = np.random.default_rng(3)
    sd = _state_dict(rng, 64, 128, 2)
    np.savez(tmp_path / "m.npz", **sd)
    sizes = {}
    for dtype in ("float32", *LOW):
        out = tmp_path / f"m_{dtype}.grl"
        r = subprocess.run([sys.executable, "-m", "grulite", "convert", str(tmp_path / "m.npz"),
                            "-o", str(out), "--dtype", dtype], capture_output=True, text=True,
                           env=dict(os.environ))
        assert r.returncode == 0, r.stderr
        assert f"dtype {dtype}" in r.stdout
        sizes[dtype] = out.stat().st_size
        info = subprocess.run([sys.executable, "-m", "grulite", "info", str(out)],
                              capture_output=True, text=True)
        assert f"dtype {dtype}" in info.stdout
    for dtype in LOW:
        assert sizes[dtype] <= SIZE[dtype] * sizes["float32"]


def test_torch_parity_quantized():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    g = torch.nn.GRU(64, 128, 2, batch_first=True)
    x = torch.randn(4, 50, 64)
    with torch.no_grad():
        yt, ht = g(x)
    for dtype in LOW:
        m = grulite.from_state_dict(g.state_dict(), dtype=dtype)
        y, h = m(x.numpy())
        assert np.max(np.abs(y - yt.numpy())) <= TOL[dtype]
        assert np.max(np.abs(h - ht.numpy())) <= TOL[dtype]


# ---------------------------------------------------------------------------
# bfloat16: the rounding itself


def bf16_round(a) -> np.ndarray:
    """float32 -> bfloat16 -> float32 from the definition: keep the top 16
    bits, rounding the dropped 16 to nearest, ties to even (finite values)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    low, keep = u & 0xFFFF, u >> 16
    up = (low > 0x8000) | ((low == 0x8000) & (keep & 1 == 1))
    return ((keep + up) << 16).astype(np.uint32).view(np.float32)


def _stored_weights(m) -> dict:
    """The GRU weight matrices a model stores, widened to float32 (bfloat16
    widens exactly), in PyTorch's (3H, K) layout, by tensor name."""
    from helpers_format import parse_grl, tensor_array

    b = m._core.convert("float32")
    g = parse_grl(b)
    return {t["name"]: tensor_array(b, t) for t in g["tensors"]
            if t["ndim"] == 2 and ".w_" in t["name"]}


def test_bfloat16_rounds_to_nearest_even():
    # Hand-made values around bfloat16's spacing at 1.0 (2^-7):
    # 1 + 2^-8 is a tie between 1 (even) and 1 + 2^-7 (odd): 1.
    # 1 + 3 * 2^-8 is a tie between 1 + 2^-7 (odd) and 1 + 2^-6 (even): 1 + 2^-6.
    # Just above a tie rounds up.  3e38 = 1.7632.. * 2^127 is nearest to
    # 226 steps of 2^-7 above 0: 1.765625 * 2^127.  2^-130 (subnormal) and
    # -0 are exact.
    vals = {1 + 2 ** -8: 1.0, 1 + 3 * 2 ** -8: 1 + 2 ** -6, 1 + 2 ** -8 + 2 ** -20: 1 + 2 ** -7,
            -(1 + 3 * 2 ** -8): -(1 + 2 ** -6), 2 ** -130: 2 ** -130, 0.1: 0.10009765625,
            3.0e38: 1.765625 * 2.0 ** 127, -0.0: -0.0}
    H, I = 16, len(vals)
    w = np.zeros((3 * H, I), np.float32)
    w[0] = np.array(list(vals), np.float32)
    sd = {"gru.weight_ih_l0": w, "gru.weight_hh_l0": np.zeros((3 * H, H), np.float32),
          "gru.bias_ih_l0": np.zeros(3 * H, np.float32), "gru.bias_hh_l0": np.zeros(3 * H, np.float32)}
    m = grulite.from_state_dict(sd, dtype="bfloat16")
    got = _stored_weights(m)["l0.d0.w_ih"][0]
    assert_array_equal(got, np.array(list(vals.values()), np.float32))
    assert np.signbit(got[-1])


def test_bfloat16_matches_reference_rounding():
    """Every stored weight is the nearest bfloat16 (numpy from the
    definition; torch's .to(torch.bfloat16) too when installed), and the
    model computes the float64 reference GRU over exactly those weights."""
    rng = np.random.default_rng(11)
    sd = _state_dict(rng, 24, 40, 2, bidir=True)
    m = grulite.from_state_dict(sd, dtype="bfloat16")
    assert m.config.dtype == "bfloat16"
    stored = _stored_weights(m)
    for layer in range(2):
        for d, suffix in enumerate(("", "_reverse")):
            for kind in ("ih", "hh"):
                src = sd[f"gru.weight_{kind}_l{layer}{suffix}"]
                assert_array_equal(stored[f"l{layer}.d{d}.w_{kind}"], bf16_round(src))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        src = torch.from_numpy(sd["gru.weight_hh_l1"])
        assert_array_equal(stored["l1.d0.w_hh"], src.to(torch.bfloat16).float().numpy())
    rounded = {k[4:]: (bf16_round(v) if "weight" in k else v) for k, v in sd.items()}
    x = rng.standard_normal((3, 15, 24)).astype(np.float32)
    y64, _ = ref_gru(layers_from_state_dict(rounded), x)
    for isa in ISAS:
        m.isa = isa
        y, _ = m(x)
        assert np.max(np.abs(y - y64)) <= 2e-6, isa


def test_bfloat16_checkpoint_bits_kept(tmp_path):
    """A bfloat16 .safetensors checkpoint stored as bfloat16 keeps its bits:
    reading widens them exactly, storing rounds back to the same values."""
    from support.files import raw_safetensors

    rng = np.random.default_rng(4)
    sd = _state_dict(rng, 12, 33, 1)
    bits = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in sd.items()}
    header, data = {}, b""
    for k, v in bits.items():
        raw = v.tobytes()
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    p = raw_safetensors(tmp_path / "bf.safetensors", header, data)
    m = grulite.from_safetensors(p)          # dtype "auto": the checkpoint's own
    assert m.config.dtype == "bfloat16"
    stored = _stored_weights(m)
    for kind in ("ih", "hh"):
        want = (bits[f"gru.weight_{kind}_l0"].astype(np.uint32) << 16).view(np.float32)
        assert_array_equal(stored[f"l0.d0.w_{kind}"].view(np.uint32), want.view(np.uint32))
    # Converting again (bfloat16 -> bfloat16) changes nothing either, and the
    # outputs are those of float32 storage of the widened weights, bit for bit.
    assert m.astype("bfloat16").to_bytes() == m.to_bytes()
    m32 = grulite.from_safetensors(p, dtype="float32")
    assert m32.config.dtype == "float32" and m32.nbytes > 1.8 * m.nbytes
    x = rng.standard_normal((2, 5, 12)).astype(np.float32)
    for isa in ISAS:
        m.isa = m32.isa = isa
        assert_array_equal(m(x)[0], m32(x)[0])
    # The command line picks the same by default.
    out = tmp_path / "bf.grl"
    r = subprocess.run([sys.executable, "-m", "grulite", "convert", str(p), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "dtype bfloat16" in r.stdout
    assert out.read_bytes() == m.to_bytes()


def test_auto_dtype_follows_the_source():
    rng = np.random.default_rng(8)
    sd = _state_dict(rng, 6, 20, 2, bidir=True)
    half = {k: v.astype(np.float16) for k, v in sd.items()}
    m = grulite.from_state_dict(half)
    assert m.config.dtype == "float16"
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    wide = grulite.from_state_dict({k: v.astype(np.float32) for k, v in half.items()})
    assert wide.config.dtype == "float32"
    assert_array_equal(m(x)[0], wide(x)[0])
    # Mixed storage, float64 or float32: float32.
    mixed = dict(half, **{"gru.weight_hh_l1": sd["gru.weight_hh_l1"]})
    assert grulite.from_state_dict(mixed).config.dtype == "float32"
    assert grulite.from_state_dict({k: v.astype(np.float64) for k, v in sd.items()}).config.dtype \
        == "float32"
    # An explicit dtype wins.
    assert grulite.from_state_dict(half, dtype="float32").config.dtype == "float32"
    assert grulite.from_state_dict(sd, dtype="bfloat16").config.dtype == "bfloat16"
    # Biases do not count (they are float32 in every model).
    only_w = {k: (v.astype(np.float16) if "weight" in k else v) for k, v in sd.items()}
    assert grulite.from_state_dict(only_w).config.dtype == "float16"
    try:
        import torch
    except ImportError:
        return
    tsd = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in sd.items()}
    mt = grulite.from_state_dict(tsd)
    assert mt.config.dtype == "bfloat16"
    assert_array_equal(mt(x)[0], grulite.from_state_dict(tsd, dtype="float32")(x)[0])


# ---------------------------------------------------------------------------
# int8 in integers: the formula, from numpy


def _quantize_weights(w):
    """The converter's int8: per output row s = max|w| / 127, q = round(w / s)
    (ties away from zero, as C's roundf)."""
    w = w.astype(np.float32)
    s = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))
    v = (w / safe[:, None]).astype(np.float32)
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)), -127, 127)
    return q.astype(np.int64), s


def _quantized_product(q, s, b, x):
    """b + s * s_x * sum_k q_k * xq_k for one row x: xq = rint(x * (127 / max|x|))
    in float32, s_x = max|x| / 127 (the integer kernels' rounding of x)."""
    x = x.astype(np.float32)
    amax = np.float32(np.abs(x).max())
    sx = np.float32(amax / np.float32(127))
    inv = np.float32(np.float32(127) / amax) if amax > 0 else np.float32(0)
    xq = np.rint((x * inv).astype(np.float32)).astype(np.int64)
    acc = q @ xq                                   # exact integers
    return b.astype(np.float64) + s.astype(np.float64) * np.float64(sx) * acc


def test_int8_integer_products_match_formula():
    """Kernel sets that multiply int8 in integers compute exactly
    b + s_w * s_x * sum q * xq (x and h rounded per row and step): a numpy
    GRU with that product, within float32 rounding of the gates."""
    from support.reference import sigmoid

    sets = [isa for isa in ISAS if isa in ROUNDS_X]
    if not sets:
        pytest.skip("no kernel set here multiplies int8 in integers")
    rng = np.random.default_rng(21)
    I, H, B, T = 37, 40, 3, 6
    sd = _state_dict(rng, I, H, 1)
    m = grulite.from_state_dict(sd, dtype="int8")
    qi, si = _quantize_weights(sd["gru.weight_ih_l0"])
    qh, sh = _quantize_weights(sd["gru.weight_hh_l0"])
    bi, bh = sd["gru.bias_ih_l0"], sd["gru.bias_hh_l0"]
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    x[1, 2] = 0.0                                  # an all-zero row: s_x = 0
    want = np.zeros((B, T, H))
    for b in range(B):
        h = np.zeros(H, np.float32)
        for t in range(T):
            gi = _quantized_product(qi, si, bi, x[b, t])
            gh = _quantized_product(qh, sh, bh, h)
            r = sigmoid(gi[:H] + gh[:H])
            z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
            n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
            h = ((1 - z) * n + z * h).astype(np.float32)
            want[b, t] = h
    generic = None
    for isa in ["generic", *sets]:
        m.isa = isa
        y, _ = m(x)
        if isa == "generic":
            generic = y
            continue
        assert np.max(np.abs(y - want)) <= 2e-6, isa
        # ... which differs from rounding only the weights by far more.
        assert np.max(np.abs(y - generic)) > 1e-4, isa
