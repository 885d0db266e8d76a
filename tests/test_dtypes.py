"""float16 and int8 weight storage: every kernel set against the float32
model (and, when torch is installed, against torch.nn.GRU), file sizes,
save / load round trips, and conversion rules."""
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
TOL = {"float16": 2e-3, "int8": 2e-2}
SIZE = {"float16": 0.52, "int8": 0.27}       # file size / float32 file size


def _state_dict(rng, I, H, L, bidir=False, bias=True):
    return random_state_dict(rng, I, (H,) * L, bidir, prefix="gru.", bias=bias)


CASES = [(64, 64, 1, False), (32, 129, 2, True), (64, 256, 3, False), (16, 512, 1, False)]


@pytest.mark.parametrize("dtype", ["float16", "int8"])
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
    # except that avx512vnni also rounds the activations to int8 per row
    # (within the int8 tolerance above).
    for isa in ISAS[1:]:
        if isa != "avx512vnni" or dtype != "int8":
            assert np.max(np.abs(results[isa][0] - results["generic"][0])) <= 2e-5


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_dequantized_weights_are_what_runs(dtype):
    """The quantized model computes exactly a float32 GRU whose weights are
    the stored (rounded) values: checked with the float64 reference."""
    rng = np.random.default_rng(5)
    sd = _state_dict(rng, 8, 20, 2)
    mq = grulite.from_state_dict(sd, dtype=dtype)
    mq.isa = "generic"       # avx512vnni also rounds activations (tested above)
    back = grulite.from_bytes(mq._core.convert("float32"))   # dequantized float32 copy
    x = rng.standard_normal((3, 12, 8)).astype(np.float32)
    y, h = mq(x)
    yb, hb = back(x)
    assert np.max(np.abs(y - yb)) <= 2e-6
    # ... and the rounding itself stays within what the dtype promises.
    layers = layers_from_state_dict({k[4:]: v for k, v in sd.items()})
    y64, _ = ref_gru(layers, x)
    assert np.max(np.abs(y - y64)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", ["float16", "int8"])
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


@pytest.mark.parametrize("dtype", ["float16", "int8"])
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
        m.save("/nonexistent/never.grl", dtype="bfloat16")


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
    for dtype in ("float32", "float16", "int8"):
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
    assert sizes["float16"] <= SIZE["float16"] * sizes["float32"]
    assert sizes["int8"] <= SIZE["int8"] * sizes["float32"]


def test_torch_parity_quantized():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    g = torch.nn.GRU(64, 128, 2, batch_first=True)
    x = torch.randn(4, 50, 64)
    with torch.no_grad():
        yt, ht = g(x)
    for dtype in ("float16", "int8"):
        m = grulite.from_state_dict(g.state_dict(), dtype=dtype)
        y, h = m(x.numpy())
        assert np.max(np.abs(y - yt.numpy())) <= TOL[dtype]
        assert np.max(np.abs(h - ht.numpy())) <= TOL[dtype]
