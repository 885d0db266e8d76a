"""The hostile input matrix: bad arguments in-process, absurd sizes and
hostile files in child processes.

1. Arguments (in this process): x of wrong shapes and dtypes, NaN / Inf
   (propagated per sequence, never leaking into other sequences), lengths
   and h0 out of range or of the wrong form, non-contiguous / read-only /
   memory-mapped / unaligned / byte-swapped arrays (same numbers as a
   contiguous copy), stream and state misuse, num_threads and isa values.
   Every refusal is a GruliteError whose message names the problem.
2. Absurd sizes (child process, address space capped at 4 GiB): terabyte
   broadcast views as x, state_dicts claiming hidden_size 2**31 made of
   zero-stride views (no memory behind them), a hundred thousand layers.
   They must fail fast with GruliteError / MemoryError, not crash or hang.
3. Hostile files for every importer (.grl, .npz, .pt, .safetensors, .onnx,
   .keras), loaded in child processes (batched, run in parallel): truncated,
   bit-flipped, wrong magic, oversized claims, zip / deflate bombs (a 1 GiB
   deflate bomb is generated here in ~0.1 s), malicious pickles.  Each case
   must end in the expected exception (GruliteError, or OSError where said)
   with a useful message, within a time and peak-memory budget, with no
   signal death and no payload run.
4. Hostile file system: a FIFO given as a model, a symlink planted at the
   temporary name ``save`` writes, NUL bytes in paths.

A bug found here that is not fixed at once gets ``xfail(strict=True)`` with
a reason saying what is wrong and where (the case tables take an xfail
reason); it turns into a failure (XPASS) once fixed: drop the marker then.
None is open now.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import marshal
import os
import pickle
import re
import shlex
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from grulite import GruliteError
from conftest import random_state_dict
from helpers_format import (OFF_FILE_SIZE, OFF_INPUT_SIZE, OFF_META_LEN, OFF_META_OFF,
                            OFF_LAYER_REC, OFF_NUM_LAYERS, OFF_NUM_TENSORS, OFF_VERSION, T_D0,
                            T_OFFSET, child_env, parse_grl, patch, with_crc)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(TESTS_DIR, "fixtures")
ISAS = grulite.available_isas()
HAVE_ONNX = importlib.util.find_spec("onnx") is not None
HAVE_H5PY = importlib.util.find_spec("h5py") is not None
IS_LINUX = sys.platform.startswith("linux")


def make_sd(seed=0, input_size=3, hidden=(17, 17), bidirectional=False, head=(), prefix="gru."):
    return random_state_dict(seed, input_size, hidden, bidirectional, head, prefix)


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def uni():
    """2 layers, I=3, H=17, no head."""
    return grulite.from_state_dict(make_sd(0))


@pytest.fixture(scope="module")
def headed():
    return grulite.from_state_dict(make_sd(1, head=(5,)), head="fc0:softmax")


@pytest.fixture(scope="module")
def bidir():
    return grulite.from_state_dict(make_sd(2, hidden=(6, 6), bidirectional=True))


@pytest.fixture(scope="module")
def mixed():
    """Layers of different widths: states are tuples of (D, B, H_l)."""
    return grulite.from_state_dict(make_sd(3, hidden=(8, 5)))


# ===========================================================================
# 1. arguments


X_SHAPES = [
    pytest.param(lambda: rand((3,)), r"got 1-D shape \(3,\)", id="1-D"),
    pytest.param(lambda: np.float32(1.0), r"got 0-D shape \(\)", id="0-D"),
    pytest.param(lambda: rand((1, 2, 5, 3)), r"got 4-D shape \(1, 2, 5, 3\)", id="4-D"),
    pytest.param(lambda: rand((1, 1, 2, 5, 3)), r"5-D", id="5-D"),
    pytest.param(lambda: rand((2, 5, 4)), r"4 features.*input_size=3", id="wrong-features"),
    pytest.param(lambda: rand((2, 5, 0)), r"0 features.*input_size=3", id="zero-features"),
    pytest.param(lambda: rand((0, 5, 3)), r"at least one sequence.*batch=0", id="zero-batch"),
    pytest.param(lambda: rand((2, 0, 3)), r"at least one.*steps=0", id="zero-steps"),
    pytest.param(lambda: rand((0, 3)), r"at least one.*steps=0", id="unbatched-zero-steps"),
    pytest.param(lambda: rand((0, 0, 3)), r"at least one", id="empty"),
]


@pytest.mark.parametrize("make_x, match", X_SHAPES)
def test_x_wrong_shape(uni, headed, make_x, match):
    x = make_x()
    with pytest.raises(GruliteError, match=match):
        uni(x)
    with pytest.raises(GruliteError, match=match):
        headed.predict(x)


def test_x_zero_batch_time_major(uni):
    with pytest.raises(GruliteError, match=r"at least one sequence.*batch=0, steps=4"):
        uni(rand((4, 0, 3)), batch_first=False)


X_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128,
            object, "U3", "S3", "datetime64[s]", "timedelta64[s]", "V12"]


@pytest.mark.parametrize("dtype", X_DTYPES, ids=lambda d: np.dtype(d).str)
def test_x_bad_dtype(uni, dtype):
    x = np.zeros((2, 4, 3), dtype=dtype)
    with pytest.raises(GruliteError, match=r"x must be a float32 or float64 array; got dtype"):
        uni(x)
    s = uni.stream(2)
    with pytest.raises(GruliteError, match=r"x must be a float32 or float64 array; got dtype"):
        s.step(x)


@pytest.mark.parametrize("x", [None, "abc", b"abc", {"a": 1}, [["a", "b", "c"]], object()],
                         ids=["None", "str", "bytes", "dict", "str-list", "object"])
def test_x_not_numbers(uni, x):
    with pytest.raises(GruliteError, match=r"x must be a float32 or float64 array"):
        uni(x)


@pytest.mark.parametrize("where", ["call", "step", "h0"])
def test_ragged_input_is_a_grulite_error(uni, where):
    ragged = [[[1.0, 2.0, 3.0]], [[1.0, 2.0]]]
    with pytest.raises(GruliteError):
        if where == "call":
            uni(ragged)
        elif where == "step":
            uni.stream(2).step([[1.0, 2.0, 3.0], [1.0, 2.0]])
        else:
            uni(rand((2, 3, 3)), h0=(np.zeros((1, 2, 17)), np.zeros((1, 3, 17))))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.longdouble, ">f4", ">f8"])
def test_x_other_float_dtypes_are_converted(uni, dtype):
    x = rand((2, 5, 3)).astype(np.float16).astype(np.float32)      # exact in every dtype
    y, h = uni(x)
    y2, h2 = uni(x.astype(dtype))
    assert_array_equal(y2, y)
    assert_array_equal(h2, h)


# ---- NaN / Inf ----------------------------------------------------------

def _isa_params():
    # int8 on AVX-512 VNNI quantizes rows on the fly; a row holding NaN / Inf
    # must fall back to the float kernel on its own, not take the whole call
    # with it (that was a bug: other sequences moved by ~1e-2)
    return [pytest.param(dtype, isa, id=f"{dtype}-{isa}")
            for dtype in ("float32", "float16", "int8") for isa in ISAS]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38], ids=["nan", "inf", "-inf", "3e38"])
@pytest.mark.parametrize("dtype, isa", _isa_params())
def test_nonfinite_input_stays_in_its_sequence(dtype, isa, bad):
    """A NaN / Inf / huge value in one sequence of a batch changes that
    sequence only (rows never interact); NaN propagates, nothing crashes;
    garbage past a sequence's length changes nothing."""
    for bidirectional in (False, True):
        m = grulite.from_state_dict(make_sd(5, input_size=16, hidden=(24, 24),
                                            bidirectional=bidirectional, head=(4,)),
                                    head="fc0:softmax", dtype=dtype)
        m.isa = isa
        x = rand((6, 40, 16), 6)             # big enough for num_threads=2 to split the batch
        lengths = np.array([40, 5, 40, 1, 13, 40])
        xb = x.copy()
        xb[2, 7, 3] = bad
        xb[1, 5:] = np.nan                   # past its length (5): must not matter
        xb[3, 1:] = np.inf                   # past its length (1)
        per_nt = []
        for nt in (1, 2):
            m.num_threads = nt
            y, h = m(x, lengths=lengths)
            p = m.predict(x, lengths=lengths)
            yb, hb = m(xb, lengths=lengths)
            pb = m.predict(xb, lengths=lengths)
            others = [0, 1, 3, 4, 5]
            assert_array_equal(yb[others], y[others], err_msg=f"bidir={bidirectional} nt={nt}")
            assert_array_equal(hb[:, others], h[:, others], err_msg=f"bidir={bidirectional} nt={nt}")
            assert_array_equal(pb[others], p[others], err_msg=f"bidir={bidirectional} nt={nt}")
            if np.isnan(bad):
                assert np.isnan(yb[2, 7:, :24]).all(), "NaN did not propagate forward in time"
                assert np.isnan(pb[2]).all()
            per_nt.append((yb, hb, pb))
        for a, b in zip(per_nt[0], per_nt[1]):          # NaNs included: same bits for any split
            assert_array_equal(a, b, err_msg=f"bidir={bidirectional}: 1 vs 2 threads")
        if not bidirectional:
            s = m.stream(6)
            out = s.step(xb)
            want = m.predict(xb, all_steps=True)
            keep = [0, 1, 3, 4, 5]
            # steps within each length equal the whole-sequence call
            for b in keep:
                assert_array_equal(out[b, :lengths[b]], want[b, :lengths[b]])


@pytest.mark.parametrize("isa", ISAS)
def test_nan_h0_stays_in_its_sequence(uni, isa):
    m = grulite.from_bytes(uni.to_bytes())
    m.isa = isa
    x = rand((4, 6, 3), 8)
    h0 = rand((2, 4, 17), 9)
    y, h = m(x, h0=h0)
    h0b = h0.copy()
    h0b[1, 2, 5] = np.nan
    yb, hb = m(x, h0=h0b)
    assert_array_equal(yb[[0, 1, 3]], y[[0, 1, 3]])
    assert_array_equal(hb[:, [0, 1, 3]], h[:, [0, 1, 3]])
    assert np.isnan(yb[2]).all()


# ---- lengths --------------------------------------------------------------

LENGTHS = [
    pytest.param([5, 0, 2], r"lengths\[1\] = 0 is outside \[1, 5\]", id="zero"),
    pytest.param([5, -1, 2], r"lengths\[1\] = -1 is outside \[1, 5\]", id="negative"),
    pytest.param([5, 1, 6], r"lengths\[2\] = 6 is outside \[1, 5\]", id="above-steps"),
    pytest.param(np.array([2 ** 40, 1, 1]), r"lengths\[0\] = 1099511627776 is outside", id="2**40"),
    pytest.param(np.array([-2 ** 63, 1, 1]), r"lengths\[0\] = -9223372036854775808", id="int64-min"),
    pytest.param(np.array([2 ** 64 - 1, 1, 1], np.uint64), r"lengths\[0\] = 18446744073709551615",
                 id="uint64-max"),
    pytest.param(np.array([2 ** 32 + 3, 1, 1]), r"lengths\[0\] = 4294967299", id="wraps-to-3-as-int32"),
    pytest.param([5, 1], r"lengths has shape \(2,\); expected \(3,\)", id="short"),
    pytest.param([[5], [1], [2]], r"lengths has shape \(3, 1\)", id="2-D"),
    pytest.param(5, r"lengths has shape \(\); expected \(3,\)", id="scalar"),
    pytest.param([5.0, 1.0, 2.0], r"lengths must be integers; got dtype float64", id="float"),
    pytest.param(np.array([5, 1, 2], np.float32), r"lengths must be integers; got dtype float32",
                 id="float32"),
    pytest.param([True, True, True], r"lengths must be integers; got dtype bool", id="bool"),
    pytest.param(["5", "1", "2"], r"lengths must be integers; got dtype <U1", id="str"),
    pytest.param([5, None, 2], r"lengths must be integers; got dtype object", id="None"),
    pytest.param([5 + 0j, 1, 2], r"lengths must be integers; got dtype complex128", id="complex"),
]


@pytest.mark.parametrize("lengths, match", LENGTHS)
def test_bad_lengths(uni, headed, lengths, match):
    x = rand((3, 5, 3))
    with pytest.raises(GruliteError, match=match):
        uni(x, lengths=lengths)
    with pytest.raises(GruliteError, match=match):
        headed.predict(x, lengths=lengths)


def test_lengths_equal_steps_and_one(uni):
    x = rand((3, 5, 3))
    y, h = uni(x, lengths=[5, 1, 5])
    assert (y[1, 1:] == 0).all()


# ---- h0 and state ------------------------------------------------------------

def test_bad_h0_uniform(uni, bidir):
    x = rand((3, 5, 3))
    cases = [
        (rand((1, 3, 17)), r"h0 has shape \(1, 3, 17\); expected \(2, 3, 17\)"),
        (rand((2, 2, 17)), r"h0 has shape \(2, 2, 17\); expected \(2, 3, 17\)"),
        (rand((2, 3, 16)), r"h0 has shape \(2, 3, 16\); expected \(2, 3, 17\)"),
        (rand((2, 3, 17, 1)), r"h0 has shape \(2, 3, 17, 1\)"),
        (np.zeros((2, 3, 17), np.int32), r"h0 must be a float array; got dtype int32"),
        (np.zeros((2, 3, 17), complex), r"h0 must be a float array; got dtype complex128"),
        (np.zeros((2, 3, 17), object), r"h0 must be a float array; got dtype object"),
        ("zeros", r"h0 must be a float array; got dtype <U5"),
    ]
    for h0, match in cases:
        with pytest.raises(GruliteError, match=match):
            uni(x, h0=h0)
    with pytest.raises(GruliteError, match=r"h0 has shape \(2, 5\); expected \(4, 3, 6\)"):
        bidir(x, h0=rand((2, 5)))
    # a tuple of per-layer arrays for a uniform model: stacked, then checked
    with pytest.raises(GruliteError, match=r"h0 has shape \(2, 1, 3, 17\)"):
        uni(x, h0=(rand((1, 3, 17)), rand((1, 3, 17))))


def test_bad_h0_mixed_sizes(mixed):
    x = rand((2, 3, 3))
    tuple_msg = r"h0 must be a tuple of 2 arrays.*different sizes"
    for h0 in (np.zeros((2, 2, 8), np.float32), (np.zeros((1, 2, 8), np.float32),),
               (np.zeros((1, 2, 8)),) * 3, {"0": 1}, "h0"):
        with pytest.raises(GruliteError, match=tuple_msg):
            mixed(x, h0=h0)
    with pytest.raises(GruliteError, match=r"h0\[1\] has shape \(1, 2, 8\); expected \(1, 2, 5\)"):
        mixed(x, h0=(np.zeros((1, 2, 8)), np.zeros((1, 2, 8))))
    with pytest.raises(GruliteError, match=r"h0\[0\] must be a float array; got dtype int64"):
        mixed(x, h0=(np.zeros((1, 2, 8), np.int64), np.zeros((1, 2, 5))))
    with pytest.raises(GruliteError, match=r"h0\[0\] must be a float array; got dtype object"):
        mixed(x, h0=(None, np.zeros((1, 2, 5))))
    y, h = mixed(x, h0=[np.zeros((1, 2, 8)), np.zeros((1, 2, 5))])     # a list is fine
    assert isinstance(h, tuple) and [a.shape for a in h] == [(1, 2, 8), (1, 2, 5)]


def test_bad_state_setter(uni, mixed):
    s = uni.stream(2)
    for value, match in [
            (np.zeros((2, 3, 17)), r"state has shape \(2, 3, 17\); expected \(2, 2, 17\)"),
            (np.zeros((2, 17)), r"state has shape \(2, 17\); expected \(2, 2, 17\)"),
            (np.zeros((2, 2, 17), np.int64), r"state must be a float array; got dtype int64"),
            (None, r"state must be a float array; got dtype object"),
            ((np.zeros((1, 2, 17)), np.zeros((1, 2, 17))), r"state has shape \(2, 1, 2, 17\)")]:
        with pytest.raises(GruliteError, match=match):
            s.state = value
    sm = mixed.stream(2)
    with pytest.raises(GruliteError, match=r"state must be a tuple of 2 arrays"):
        sm.state = np.zeros((2, 2, 8))
    with pytest.raises(GruliteError, match=r"state\[1\] has shape \(1, 2, 8\); expected \(1, 2, 5\)"):
        sm.state = (np.zeros((1, 2, 8)), np.zeros((1, 2, 8)))
    # nothing was changed by the refused assignments
    assert_array_equal(s.state, np.zeros((2, 2, 17), np.float32))


# ---- stream misuse --------------------------------------------------------------

def test_stream_step_bad_shapes(uni, headed):
    s = uni.stream(2)
    msg = r"step expects x of shape \(batch_size, input_size\) = \(2, 3\)"
    for x in (rand((3, 3)), rand((2, 4)), rand((2, 0, 3)), rand((2, 1, 1, 3)), rand((3,)),
              rand((1, 3)), np.float32(1)):
        with pytest.raises(GruliteError, match=msg):
            s.step(x)
    with pytest.raises(GruliteError, match=r"out must be a writeable, aligned, C-contiguous float32 "
                                           r"array in native byte order, of shape \(2, 17\)"):
        s.step(rand((2, 3)), out=np.empty((2, 16), np.float32))
    ro = np.empty((2, 17), np.float32)
    ro.setflags(write=False)
    with pytest.raises(GruliteError, match="writeable"):
        s.step(rand((2, 3)), out=ro)
    with pytest.raises(GruliteError, match="float32"):
        s.step(rand((2, 3)), out=np.empty((2, 17), np.float64))
    with pytest.raises(GruliteError, match="C-contiguous"):
        s.step(rand((2, 3)), out=np.empty((17, 2), np.float32).T)
    # the refused calls left the stream untouched
    assert_array_equal(s.state, np.zeros((2, 2, 17), np.float32))
    with pytest.raises(GruliteError, match=r"\(batch_size, input_size\) = \(2, 3\)"):
        headed.stream(2).step(rand((2, 5)))


@pytest.mark.parametrize("bs, exc, match", [
    (0, GruliteError, r"batch_size must be >= 1; got 0"),
    (-1, GruliteError, r"batch_size must be >= 1; got -1"),
    (1.0, GruliteError, r"batch_size must be an int; got 1.0"),
    (True, GruliteError, r"batch_size must be an int; got True"),
    ("2", GruliteError, r"batch_size must be an int"),
    (None, GruliteError, r"batch_size must be an int"),
])
def test_stream_bad_batch_size(uni, bs, exc, match):
    with pytest.raises(exc, match=match):
        uni.stream(bs)


def test_stream_of_bidirectional_refused(bidir):
    with pytest.raises(GruliteError, match=r"streaming needs a .*bidirectional"):
        bidir.stream(1)


def test_predict_without_head(uni):
    with pytest.raises(GruliteError, match=r"this model has no head.*head=\[\('fc', 'softmax'\)\]"):
        uni.predict(rand((2, 4, 3)))


# ---- memory layouts ----------------------------------------------------------------

def _layouts(x: np.ndarray, tmp_path) -> dict:
    """Views of the same numbers in every memory form numpy has."""
    out = {}
    big = np.zeros((x.shape[0] * 2, x.shape[1] * 3, x.shape[2] * 2), np.float32)
    big[::2, ::3, ::2] = x
    out["sliced"] = big[::2, ::3, ::2]
    out["fortran"] = np.asfortranarray(x)
    t = np.ascontiguousarray(x.transpose(1, 0, 2))
    out["transposed-view"] = t.transpose(1, 0, 2)
    r = np.ascontiguousarray(x[::-1])
    out["negative-strides"] = r[::-1]
    ro = x.copy()
    ro.setflags(write=False)
    out["read-only"] = ro
    p = str(tmp_path / "x.f32")
    x.tofile(p)
    out["memmap"] = np.memmap(p, dtype=np.float32, mode="r", shape=x.shape)
    buf = bytearray(x.nbytes + 1)
    un = np.frombuffer(buf, dtype=np.float32, offset=1, count=x.size).reshape(x.shape)
    un[...] = x
    out["unaligned"] = un
    out["list"] = x.tolist()
    return out


def test_layouts_equal_contiguous(uni, headed, tmp_path):
    x = rand((3, 9, 3), 30)
    h0 = rand((2, 3, 17), 31)
    lengths = np.array([9, 2, 5])
    y, h = uni(x, h0=h0, lengths=lengths)
    p = headed.predict(x, lengths=lengths)
    h0_ro = h0.copy()
    h0_ro.setflags(write=False)
    len_forms = [lengths, lengths.astype(">i8"), lengths.astype(np.uint8), lengths[::-1][::-1],
                 np.broadcast_to(lengths, (3,))]
    for name, xv in _layouts(x, tmp_path).items():
        for hv in (h0, h0_ro, h0.astype(">f4"), np.asfortranarray(h0)):
            for lv in len_forms:
                y2, h2 = uni(xv, h0=hv, lengths=lv)
                assert_array_equal(y2, y, err_msg=name)
                assert_array_equal(h2, h, err_msg=name)
        assert_array_equal(headed.predict(xv, lengths=lengths), p, err_msg=name)
    # a zero-stride broadcast x (every sequence the same) equals its copy
    xb = np.broadcast_to(x[:1], (4,) + x.shape[1:])
    assert_array_equal(uni(xb)[0], uni(np.ascontiguousarray(xb))[0])


def test_stream_layouts_equal_contiguous(uni, tmp_path):
    x = rand((3, 9, 3), 32)
    want = uni(x)[0]
    for name, xv in _layouts(x, tmp_path).items():
        s = uni.stream(3)
        assert_array_equal(s.step(xv), want, err_msg=name)
        s = uni.stream(3)
        steps = [s.step(np.asarray(xv)[:, t]) for t in range(9)]       # (B, I) views
        assert_array_equal(np.stack(steps, 1), want, err_msg=name)
    s = uni.stream(3)
    s.state = np.zeros((2, 3, 17), ">f8")
    assert_array_equal(s.step(x), want)


@pytest.mark.parametrize("which", ["x", "out"])
def test_stream_byte_swapped_arrays(uni, which):
    x = rand((2, 5, 3), 33)
    want = uni(x)[0]
    s = uni.stream(2)
    if which == "x":
        got = s.step(x.astype(">f4"))
    else:                       # out= must be native: refused, never silently swapped
        with pytest.raises(GruliteError, match="native byte order"):
            s.step(x, out=np.empty((2, 5, 17), ">f4"))
        got = s.step(x)
    assert_array_equal(got, want)


# ---- num_threads, isa --------------------------------------------------------------

BAD_THREADS = [0, -1, 257, 10 ** 30, 1.5, "2", True, [2]]


@pytest.mark.parametrize("n", BAD_THREADS, ids=repr)
def test_num_threads_invalid(uni, n):
    m = grulite.from_bytes(uni.to_bytes())
    with pytest.raises(GruliteError, match=r"num_threads must be an int in \[1, 256\] or None"):
        m.num_threads = n
    with pytest.raises(GruliteError, match=r"num_threads must be an int in \[1, 256\] or None"):
        grulite.from_bytes(uni.to_bytes(), num_threads=n)
    assert m.num_threads >= 1


@pytest.mark.parametrize("value", ["abc", "-4", "0", "999999", "", "2.5"])
def test_num_threads_env_garbage_is_ignored(uni, monkeypatch, value):
    monkeypatch.setenv("GRULITE_NUM_THREADS", value)
    m = grulite.from_bytes(uni.to_bytes())
    assert 1 <= m.num_threads <= 256
    x = rand((8, 50, 3), 40)
    assert_array_equal(m(x)[0], uni(x)[0])


@pytest.mark.parametrize("name", ["foo", "AVX2", "neon" if "neon" not in ISAS else "sse9",
                                  "avx512 ", 3, b"avx2"], ids=repr)
def test_isa_invalid(uni, name):
    m = grulite.from_bytes(uni.to_bytes())
    before = m.isa
    with pytest.raises(GruliteError, match=r"kernel set .* cannot run here; supported: generic"):
        m.isa = name
    assert m.isa == before


def test_isa_env_invalid():
    code = "import grulite, numpy as np\n" \
           "try:\n    grulite.from_state_dict({'weight_ih_l0': np.zeros((12, 3), np.float32), " \
           "'weight_hh_l0': np.zeros((12, 4), np.float32)})\n" \
           "except grulite.GruliteError as e:\n    print('refused:', e)\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=child_env({"GRULITE_ISA": "quantum"}))
    assert p.returncode == 0, p.stderr
    assert re.search(r"refused:.*GRULITE_ISA=quantum.*not a kernel set", p.stdout), p.stdout


def test_isa_embedded_nul(uni):
    m = grulite.from_bytes(uni.to_bytes())
    with pytest.raises((GruliteError, ValueError)):
        m.isa = "generic\0junk"


# ===========================================================================
# 2. absurd sizes, in a child with the address space capped


ABSURD_CHILD = textwrap.dedent(r"""
    import json, resource, sys, time
    LIMIT = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    import numpy as np
    import grulite
    rng = np.random.default_rng(0)
    I = 3
    def sd(H=4, L=1):
        return {"weight_ih_l0": rng.standard_normal((3 * H, I)).astype(np.float32),
                "weight_hh_l0": rng.standard_normal((3 * H, H)).astype(np.float32)}
    m = grulite.from_state_dict(sd(), head=None)
    mh = grulite.from_state_dict(dict(sd(), **{"fc.weight": np.ones((2, 4), np.float32)}), head="fc")
    z = np.float32(0)
    def bc(*shape):                       # zero strides: no memory behind it
        return np.broadcast_to(z, shape)
    small = np.ones(I, np.float32)
    layers = {}                           # 5000 layers of H=512 (3 MiB a copy), no memory behind
    for k in range(5000):
        layers[f"weight_ih_l{k}"] = bc(1536, I if k == 0 else 512)
        layers[f"weight_hh_l{k}"] = bc(1536, 512)
    cases = {
        "bcast-call": lambda: m(np.broadcast_to(small, (2 ** 20, 2 ** 20, I))),
        "bcast-predict": lambda: mh.predict(np.broadcast_to(small, (2 ** 20, 2 ** 20, I))),
        "bcast-time-major": lambda: m(np.broadcast_to(small, (2 ** 20, 2 ** 20, I)), batch_first=False),
        "bcast-f64": lambda: m(np.broadcast_to(small.astype(np.float64), (2 ** 20, 2 ** 20, I))),
        "bcast-lengths": lambda: m(np.broadcast_to(small, (2 ** 20, 2 ** 20, I)),
                                   lengths=np.broadcast_to(np.int64(1), (2 ** 20,))),
        "bcast-stream": lambda: m.stream(1).step(np.broadcast_to(small, (1, 2 ** 36, I))),
        "bcast-steps-2**31": lambda: m(np.broadcast_to(small, (1, 2 ** 31, I))),
        "bcast-batch-2**31": lambda: m(np.broadcast_to(small, (2 ** 31, 1, I))),
        "stream-batch-2**31": lambda: m.stream(2 ** 31),
        "stream-batch-2**31-1": lambda: m.stream(2 ** 31 - 1),
        # A (3*2**31, 2**31) view overflows numpy's intp: W_hh claims 2**31 rows
        # with fewer columns, which numpy can build.
        "sd-hidden-2**31": lambda: grulite.from_state_dict({"weight_ih_l0": bc(3 * 2 ** 31, I),
                                                            "weight_hh_l0": bc(3 * 2 ** 31, 2 ** 28)}),
        "sd-hidden-2**21": lambda: grulite.from_state_dict({"weight_ih_l0": bc(3 * 2 ** 21, I),
                                                            "weight_hh_l0": bc(3 * 2 ** 21, 2 ** 21)}),
        "sd-input-2**21": lambda: grulite.from_state_dict({"weight_ih_l0": bc(12, 2 ** 21),
                                                           "weight_hh_l0": bc(12, 4)}),
        "sd-head-2**31": lambda: grulite.from_state_dict(dict(sd(), **{"fc.weight": bc(2 ** 31, 4)}),
                                                         head="fc"),
        "sd-5000-layers": lambda: grulite.from_state_dict(layers),
    }
    out = {}
    for name in json.loads(sys.argv[1]):
        t0 = time.perf_counter()
        try:
            cases[name]()
            rec = {"outcome": "ok"}
        except BaseException as e:
            rec = {"outcome": "error", "type": type(e).__name__, "msg": str(e)[:500],
                   "grulite_error": isinstance(e, grulite.GruliteError)}
        rec["seconds"] = time.perf_counter() - t0
        print(json.dumps(dict(rec, id=name)), flush=True)
""")

ABSURD = [
    # name, allowed exception types, message pattern (None: any), max seconds, xfail reason
    ("bcast-call", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-predict", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-time-major", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-f64", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-lengths", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-stream", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-steps-2**31", ("GruliteError",), r"2\*\*31", 5, None),
    ("bcast-batch-2**31", ("GruliteError",), r"2\*\*31", 5, None),
    ("stream-batch-2**31", ("GruliteError",), r"batch_size", 5, None),
    ("stream-batch-2**31-1", ("GruliteError", "MemoryError"), None, 5, None),
    ("sd-hidden-2**31", ("GruliteError",), r"hidden_size", 5, None),
    ("sd-hidden-2**21", ("GruliteError",), r"hidden_size", 5, None),
    ("sd-input-2**21", ("GruliteError",), r"input_size", 5, None),
    ("sd-head-2**31", ("GruliteError",), r"out_features|head", 5, None),
    ("sd-5000-layers", ("GruliteError",), r"1 to 64 layers", 5, None),
]


@pytest.fixture(scope="module")
def absurd_results():
    names = [c[0] for c in ABSURD]
    p = subprocess.run([sys.executable, "-c", ABSURD_CHILD, json.dumps(names)],
                       capture_output=True, text=True, timeout=120, env=child_env())
    res = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            res[r["id"]] = r
    return res, p.returncode, p.stderr


@pytest.mark.parametrize("name, types, match, max_s", [
    pytest.param(n, t, m, s, marks=[pytest.mark.xfail(strict=True, reason=x)] if x else [], id=n)
    for n, t, m, s, x in ABSURD])
def test_absurd_sizes(absurd_results, name, types, match, max_s):
    res, rc, err = absurd_results
    assert name in res, (f"the child died (status {rc}) before or while running {name!r}:\n"
                         f"{err[-2000:]}")
    r = res[name]
    assert r["outcome"] == "error", f"{name}: no exception"
    assert r["type"] in types, f"{name}: {r['type']}: {r['msg']}"
    if match:
        assert re.search(match, r["msg"]), f"{name}: message {r['msg']!r} lacks {match!r}"
    assert r["seconds"] < max_s, f"{name}: took {r['seconds']:.2f} s"


# ===========================================================================
# 3. hostile files


FILE_CHILD = textwrap.dedent(r"""
    import json, os, re, resource, signal, sys, time
    LIMIT = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    import numpy as np
    import grulite

    def status(field):
        with open("/proc/self/status") as f:
            m = re.search(field + r":\s+(\d+)", f.read())
        return int(m.group(1)) / 1024 if m else None

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    class Hang(BaseException):
        pass

    def on_alarm(*_):
        raise Hang()

    signal.signal(signal.SIGALRM, on_alarm)
    LOADERS = {"grl": grulite.load, "npz": grulite.from_npz, "pt": grulite.from_torch_file,
               "safetensors": grulite.from_safetensors, "onnx": grulite.from_onnx,
               "keras": grulite.from_keras}
    for n, c in enumerate(json.load(sys.stdin)):
        rec = {"id": c["id"]}
        base = status("VmRSS")
        # the peak since the last reset; without /proc/self/clear_refs, the
        # lifetime peak, which is right for the first case of a child
        peak_ok = (reset_peak() or n == 0) and base is not None
        t0 = time.perf_counter()
        signal.alarm(c["alarm"])
        try:
            m = LOADERS[c["importer"]](c["path"], **c["kwargs"])
            cfg = m.config
            if cfg.input_size <= 4096 and m.nbytes < (1 << 24):
                x = np.linspace(-1, 1, 2 * 3 * cfg.input_size, dtype=np.float32).reshape(2, 3, -1)
                y, h = m(x, batch_first=True)
                if cfg.head:
                    m.predict(x, batch_first=True)
            rec.update(outcome="ok")
        except Hang:
            rec.update(outcome="hang")
        except BaseException as e:
            rec.update(outcome="error", type=type(e).__name__, msg=str(e)[:3000],
                       grulite_error=isinstance(e, grulite.GruliteError))
        finally:
            signal.alarm(0)
        rec["seconds"] = time.perf_counter() - t0
        rec["peak_mb"] = (status("VmHWM") - base) if peak_ok else None
        print(json.dumps(rec), flush=True)
""")


def run_file_cases(cases: list, timeout: float = 120) -> dict:
    """Runs the cases in child processes, restarting after a crash or a hang;
    returns {id: record}.  A case that killed its child gets outcome
    "crash" (with the exit status) or "killed" (hung past the timeout)."""
    results: dict = {}
    pending = list(cases)
    while pending:
        try:
            p = subprocess.run([sys.executable, "-c", FILE_CHILD], input=json.dumps(pending),
                               capture_output=True, text=True, timeout=timeout, env=child_env())
            out, rc, err = p.stdout, p.returncode, p.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc, err = "timeout", ""
        done = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        for r in done:
            results[r["id"]] = r
        if len(done) == len(pending):
            break
        culprit = pending[len(done)]
        results[culprit["id"]] = {"id": culprit["id"], "seconds": None, "peak_mb": None,
                                  "outcome": "killed" if rc == "timeout" else "crash",
                                  "status": rc, "stderr": err[-2000:]}
        pending = pending[len(done) + 1:]
    return results


# ---- writers ------------------------------------------------------------------------

def deflate_zero_bomb(n_mib: int, prefix: bytes = b"") -> tuple:
    """(raw deflate data, crc32, size) of prefix + n_mib MiB of zeros, made
    in ~0.1 s: one 16 MiB block compressed once with a full flush (byte
    aligned, dictionary reset) and repeated, then an empty final block."""
    chunk = bytes(16 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    blk = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    head = b""
    if prefix:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    n = n_mib // 16
    crc = zlib.crc32(prefix)
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    return head + blk * n + b"\x03\x00", crc, len(prefix) + n * len(chunk)


def write_zip(path, entries) -> str:
    """A zip written by hand: entries (name, method 0|8, data as stored,
    crc, declared uncompressed size); sizes may lie."""
    out, central = bytearray(), bytearray()
    for name, method, data, crc, usize in entries:
        nb = name.encode()
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc & 0xFFFFFFFF,
                           len(data), usize, len(nb), 0) + nb + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21,
                               crc & 0xFFFFFFFF, len(data), usize, len(nb), 0, 0, 0, 0, 0, off) + nb
    cd = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                                 len(central), cd, 0)
    with open(path, "wb") as f:
        f.write(out)
    return str(path)


def stored(name, data):
    return (name, 0, data, zlib.crc32(data), len(data))


def npy_bytes(arr=None, header=None, data=b"") -> bytes:
    bio = io.BytesIO()
    if arr is not None:
        np.save(bio, arr, allow_pickle=False)
        return bio.getvalue()
    np.lib.format.write_array_header_1_0(bio, header)
    return bio.getvalue() + data


# a protocol-2 pickle written opcode by opcode (no torch needed)

def _pk_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _pk_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -2 ** 31 <= v < 2 ** 31:
        return b"J" + struct.pack("<i", v)
    enc = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(enc)]) + enc


def _pk_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _pk_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _pk_call(fn: bytes, *args: bytes) -> bytes:
    return fn + _pk_tuple(*args) + b"R"


def _pk_tensor(key: str, numel: int, shape, offset: int = 0) -> bytes:
    stride, acc = [], 1
    for d in reversed(shape):
        stride.append(acc)
        acc *= d
    pid = _pk_tuple(_pk_str("storage"), _pk_global("torch", "FloatStorage"), _pk_str(key),
                    _pk_str("cpu"), _pk_int(numel)) + b"Q"
    return _pk_call(_pk_global("torch._utils", "_rebuild_tensor_v2"), pid, _pk_int(offset),
                    _pk_tuple(*map(_pk_int, shape)), _pk_tuple(*map(_pk_int, reversed(stride))),
                    b"\x89", _pk_call(_pk_global("collections", "OrderedDict")))


def pt_state_dict(arrays: dict, numel=None, shapes=None) -> tuple:
    """(data.pkl bytes, {key: raw bytes}) of a torch.save'd state_dict."""
    items, records = [], {}
    for n, (k, a) in enumerate(arrays.items()):
        key = str(n)
        records[key] = np.ascontiguousarray(a, "<f4").tobytes()
        ne = (numel or {}).get(k, a.size)
        shape = (shapes or {}).get(k, a.shape)
        items.append(_pk_str(k) + _pk_tensor(key, ne, shape))
    body = _pk_call(_pk_global("collections", "OrderedDict")) + b"(" + b"".join(items) + b"u"
    return b"\x80\x02" + body + b".", records


def write_pt(path, pkl: bytes, records: dict, extra=()) -> str:
    entries = [stored("archive/data.pkl", pkl), stored("archive/byteorder", b"little")]
    entries += [stored(f"archive/data/{k}", v) for k, v in records.items()]
    entries += list(extra)
    entries.append(stored("archive/version", b"3\n"))
    return write_zip(path, entries)


def write_safetensors(path, header, data: bytes = b"", raw_len=None) -> str:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if raw_len is None else raw_len
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + h + data)
    return str(path)


def st_state_dict(arrays: dict) -> tuple:
    header, data = {}, bytearray()
    for k, a in arrays.items():
        b = np.ascontiguousarray(a, "<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    return header, bytes(data)


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _pb_len(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


# ---- the malicious payloads -----------------------------------------------------------

class _Evil:
    """Pickles to a call of os.system (the classic payload)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _touch(marker: str) -> str:
    return f"touch {shlex.quote(marker)}"


def pickle_payloads(marker: str) -> dict:
    cmd = _touch(marker).encode()
    return {
        # GLOBAL os.system + REDUCE, protocol 2 (what pickle.dumps(_Evil) writes)
        "reduce-os-system": pickle.dumps(_Evil(_touch(marker)), protocol=2),
        # protocol 4: STACK_GLOBAL builtins.exec
        "stack-global-exec": (b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93"
                              + b"\x8c" + bytes([len(f"open({marker!r}, 'w')")])
                              + f"open({marker!r}, 'w')".encode() + b"\x85R."),
        # INST opcode (protocol 0): instantiates posix.system with the argument
        "inst-posix-system": b"(S'" + cmd + b"'\niposix\nsystem\n.",
        # hidden inside an allowed container: an OrderedDict built from the result of a call
        "nested-subprocess": (b"\x80\x02" + _pk_call(_pk_global("collections", "OrderedDict"))
                              + b"(" + _pk_str("gru.weight_ih_l0")
                              + _pk_call(_pk_global("subprocess", "check_output"),
                                         _pk_tuple(_pk_str("sh"), _pk_str("-c"),
                                                   _pk_str(_touch(marker))))
                              + b"u."),
    }


# ---- case building ------------------------------------------------------------------------

class Case:
    def __init__(self, cid, importer, build, *, match=None, types=("GruliteError",),
                 ok_allowed=False, max_mb=200, max_s=15, alarm=30, kwargs=None, marker=False,
                 xfail=None, needs=None):
        self.id, self.importer, self.build = cid, importer, build
        self.match, self.types, self.ok_allowed = match, types, ok_allowed
        self.max_mb, self.max_s, self.alarm = max_mb, max_s, alarm
        self.kwargs = kwargs or {}
        self.marker, self.xfail, self.needs = marker, xfail, needs


SD = make_sd(11, input_size=3, hidden=(5,), head=(2,))
SD_KW = {"head": "fc0:softmax"}


def _mutations(importer, base, ext, *, flips_ok=True, match_trunc=None, match_magic=None,
               needs=None, kwargs=None):
    """The generic cases: empty, truncated, bit-flipped, wrong magic, another
    format's file."""
    kw = kwargs or {}
    cases = []

    def from_bytes_of(fn):
        def build(d):
            data = open(base(d), "rb").read()
            p = os.path.join(d, f"{importer}_{fn.__name__}{ext}")
            with open(p, "wb") as f:
                f.write(fn(data))
            return p
        return build

    def empty(data):
        return b""

    def head16(data):
        return data[:16]

    def half(data):
        return data[:len(data) // 2]

    def minus1(data):
        return data[:-1]

    def zeros_magic(data):
        return b"\x00" * 8 + data[8:]

    def garbage(data):
        return np.random.default_rng(5).integers(0, 256, len(data), dtype=np.uint8).tobytes()

    for fn, m in [(empty, match_trunc), (head16, match_trunc), (half, match_trunc),
                  (minus1, match_trunc), (zeros_magic, match_magic), (garbage, match_magic)]:
        cases.append(Case(f"{importer}-{fn.__name__}", importer, from_bytes_of(fn), match=m,
                          kwargs=kw, needs=needs))
    for k in range(12):
        def flip(data, k=k):
            b = bytearray(data)
            rng = np.random.default_rng(1000 + k)
            pos = int(rng.integers(0, len(b)))
            b[pos] ^= 1 << int(rng.integers(0, 8))
            if k >= 8:                                   # a burst of 32 random bytes
                pos = int(rng.integers(0, max(1, len(b) - 32)))
                b[pos:pos + 32] = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
            return bytes(b)
        flip.__name__ = f"flip{k}"
        cases.append(Case(f"{importer}-flip{k}", importer, from_bytes_of(flip), ok_allowed=flips_ok,
                          kwargs=kw, needs=needs))
    return cases


# .grl ----------------------------------------------------------------------------------

def grl_base(d):
    p = os.path.join(d, "base.grl")
    if not os.path.exists(p):
        grulite.from_state_dict(SD, head="fc0:softmax").save(p)
    return p


def _grl_patched(name, fn):
    def build(d):
        b = open(grl_base(d), "rb").read()
        p = os.path.join(d, f"grl_{name}.grl")
        with open(p, "wb") as f:
            f.write(fn(b))
        return p
    return build


def _grl_tensor_entry(b, i=0):
    return parse_grl(b)["tensors"][i]["entry"]


def _grl_layer_pos(b):
    return parse_grl(b)["layers"][0]["pos"]


GRL_CASES = _mutations("grl", grl_base, ".grl", flips_ok=False,
                       match_trunc=r"truncat|empty|header says|too small|bytes",
                       match_magic=r"magic")
GRL_CASES += [
    Case("grl-version-99", "grl", _grl_patched("v99", lambda b: patch(b, OFF_VERSION, 99)),
         match=r"version 99"),
    Case("grl-version-1", "grl", _grl_patched("v1", lambda b: patch(b, OFF_VERSION, 1)),
         match=r"version 1"),
    Case("grl-trailing-data", "grl", _grl_patched("trail", lambda b: b + bytes(64)),
         match=r"trailing data"),
    Case("grl-file-size-2**63", "grl", _grl_patched("fs", lambda b: patch(b, OFF_FILE_SIZE, 2 ** 63, "<Q")),
         match=r"header says \d+ bytes"),
    Case("grl-input-size-2**31", "grl", _grl_patched("in", lambda b: patch(b, OFF_INPUT_SIZE, 2 ** 31)),
         match=r"input_size"),
    Case("grl-input-size-0", "grl", _grl_patched("in0", lambda b: patch(b, OFF_INPUT_SIZE, 0)),
         match=r"input_size"),
    Case("grl-layers-1e6", "grl", _grl_patched("nl", lambda b: patch(b, OFF_NUM_LAYERS, 10 ** 6)),
         match=r"1000000 layers; a model has 1 to 128"),
    Case("grl-layers-0", "grl", _grl_patched("nl0", lambda b: patch(b, OFF_NUM_LAYERS, 0)),
         match=r"0 layers; a model has 1 to 128"),
    Case("grl-layer-rec-1e6", "grl", _grl_patched("nd", lambda b: patch(b, OFF_LAYER_REC, 10 ** 6)),
         match=r"layer records of 1000000 bytes"),
    Case("grl-tensors-2**32-1", "grl", _grl_patched("nt", lambda b: patch(b, OFF_NUM_TENSORS, 2 ** 32 - 1)),
         match=r"tensor table|tensors in the table"),
    Case("grl-meta-offset-2**63", "grl", _grl_patched("mo", lambda b: patch(b, OFF_META_OFF, 2 ** 63, "<Q")),
         match=r"metadata"),
    Case("grl-meta-len-2**64-1", "grl", _grl_patched("ml", lambda b: patch(b, OFF_META_LEN, 2 ** 64 - 1, "<Q")),
         match=r"metadata"),
    Case("grl-hidden-2**31", "grl", _grl_patched("hs", lambda b: patch(b, _grl_layer_pos(b), 2 ** 31)),
         match=r"layer 0: (field 0 = |hidden_size )2147483648 (out of range|outside)"),
    Case("grl-hidden-2**20+1", "grl", _grl_patched("hs2", lambda b: patch(b, _grl_layer_pos(b), 2 ** 20 + 1)),
         match=r"layer 0: (field 0 = |hidden_size )1048577 (out of range|outside)"),
    Case("grl-directions-7", "grl", _grl_patched("nd7", lambda b: patch(b, _grl_layer_pos(b) + 4, 7)),
         match=r"num_directions 7"),
    Case("grl-tensor-offset-2**64-64", "grl",
         _grl_patched("to", lambda b: patch(b, _grl_tensor_entry(b) + T_OFFSET, 2 ** 64 - 64, "<Q")),
         match=r"tensor l0\.d0\.w_ih: (size overflows|offset)"),
    Case("grl-tensor-offset-misaligned", "grl",
         _grl_patched("tm", lambda b: patch(b, _grl_tensor_entry(b) + T_OFFSET,
                                            parse_grl(b)["tensors"][0]["offset"] + 4, "<Q")),
         match=r"not 64-byte aligned"),
    Case("grl-tensor-dims-2**31", "grl",
         _grl_patched("td", lambda b: patch(b, _grl_tensor_entry(b) + T_D0, 2 ** 31)),
         match=r"tensor"),
    Case("grl-tensor-overlap", "grl",
         _grl_patched("tov", lambda b: patch(b, _grl_tensor_entry(b, 1) + T_OFFSET,
                                             parse_grl(b)["tensors"][0]["offset"], "<Q")),
         match=r"overlap"),
    Case("grl-tensor-name-unterminated", "grl",
         _grl_patched("tn", lambda b: with_crc(b[:_grl_tensor_entry(b)] + b"A" * 32
                                               + b[_grl_tensor_entry(b) + 32:])),
         match=r"tensor|name"),
]
for k in range(8):                       # random bytes, checksum recomputed: the structural checks
    def _crc_fixed_flip(b, k=k):
        rng = np.random.default_rng(2000 + k)
        out = bytearray(b)
        for _ in range(4):
            pos = int(rng.integers(16, min(len(out), 64 + 32 * 4 + 64 * 8)))   # header and tables
            out[pos] = int(rng.integers(0, 256))
        return with_crc(out)
    GRL_CASES.append(Case(f"grl-crc-fixed-flip{k}", "grl", _grl_patched(f"cf{k}", _crc_fixed_flip),
                          ok_allowed=True))


# .npz ------------------------------------------------------------------------------------

def npz_base(d):
    p = os.path.join(d, "base.npz")
    if not os.path.exists(p):
        np.savez(p, **SD)
    return p


def npz_compressed_base(d):
    p = os.path.join(d, "basec.npz")
    if not os.path.exists(p):
        np.savez_compressed(p, **SD)
    return p


def _npz(name, entries_fn):
    def build(d):
        return write_zip(os.path.join(d, f"npz_{name}.npz"), entries_fn(d))
    return build


def _npz_sd_entries(extra=()):
    return [stored(f"{k}.npy", npy_bytes(a)) for k, a in SD.items()] + list(extra)


def _npz_pickle_member(d):
    marker = os.path.join(d, "PWNED_npz")
    payload = pickle.dumps(np.array([_Evil(_touch(marker))], dtype=object), protocol=2)
    member = npy_bytes(header={"descr": "|O", "fortran_order": False, "shape": (1,)}, data=b"")
    # np.save of an object array writes the header then the pickle of the array
    member = member + payload
    return _npz_sd_entries([stored("gru.extra.npy", member)])


def _npz_bomb_unused(d):
    hdr = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (1 << 28,)})
    data, crc, size = deflate_zero_bomb(1024, hdr)
    return _npz_sd_entries([("optimizer.state.npy", 8, data, crc, size)])


def _npz_bomb_used(d):
    hdr = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (1 << 26,)})
    data, crc, size = deflate_zero_bomb(256, hdr)
    entries = [e for e in _npz_sd_entries() if e[0] != "gru.weight_ih_l0.npy"]
    return entries + [("gru.weight_ih_l0.npy", 8, data, crc, size)]


def _npz_lying_size(d):
    entries = _npz_sd_entries()
    name, method, data, crc, _ = entries[0]
    entries[0] = (name, method, data, crc, 0xFFFFFFFF)
    return entries


NPZ_CASES = _mutations("npz", npz_base, ".npz", match_trunc=r"not a readable \.npz",
                       match_magic=r"not a readable \.npz", kwargs=SD_KW)
NPZ_CASES += _mutations("npzc", npz_compressed_base, ".npz", match_trunc=r"not a readable \.npz",
                        match_magic=r"not a readable \.npz", kwargs=SD_KW)
for c in NPZ_CASES:
    c.importer = "npz"
NPZ_CASES += [
    Case("npz-single-npy", "npz",
         lambda d: (np.save(os.path.join(d, "single.npy"), np.zeros(3)),
                    os.rename(os.path.join(d, "single.npy"), os.path.join(d, "single.npz")),
                    os.path.join(d, "single.npz"))[-1],
         match=r"holds a single array, not a state_dict"),
    Case("npz-pickle-member", "npz", _npz("pickle", _npz_pickle_member), kwargs=SD_KW,
         match=r"allow_pickle=False|Object arrays", marker=True),
    Case("npz-shape-2**40", "npz", _npz("shape", lambda d: _npz_sd_entries([stored(
        "gru.big.npy", npy_bytes(header={"descr": "<f4", "fortran_order": False,
                                         "shape": (1 << 40,)}, data=bytes(64)))])),
         kwargs=SD_KW, match=r"not a readable \.npz"),
    Case("npz-shape-16GiB-truncated", "npz", _npz("shape16", lambda d: _npz_sd_entries([stored(
        "gru.big.npy", npy_bytes(header={"descr": "<f4", "fortran_order": False,
                                         "shape": (1 << 32,)}, data=bytes(64)))])),
         kwargs=SD_KW, match=r"not a readable \.npz"),
    # a stored member declaring 4 GiB: zipfile reads the real bytes, the arrays are right
    Case("npz-lying-zip-size", "npz", _npz("lie", _npz_lying_size), kwargs=SD_KW, ok_allowed=True,
         match=r"not a readable \.npz"),
    Case("npz-deflate-bomb-unused-member", "npz", _npz("bomb_unused", _npz_bomb_unused),
         kwargs=SD_KW, ok_allowed=True),
    Case("npz-deflate-bomb-as-weight", "npz", _npz("bomb_used", _npz_bomb_used), kwargs=SD_KW,
         match=r"shape|missing"),
]


# .pt ---------------------------------------------------------------------------------------

def pt_base(d):
    p = os.path.join(d, "base.pt")
    if not os.path.exists(p):
        pkl, rec = pt_state_dict(SD)
        write_pt(p, pkl, rec)
    return p


def _pt(name, fn):
    def build(d):
        return fn(d, os.path.join(d, f"pt_{name}.pt"))
    return build


def _pt_payload(kind):
    def build(d, p):
        marker = os.path.join(d, f"PWNED_pt_{kind}")
        _, rec = pt_state_dict(SD)
        return write_pt(p, pickle_payloads(marker)[kind], rec)
    return build


def _pt_numel(d, p):
    pkl, rec = pt_state_dict(SD, numel={"gru.weight_ih_l0": 2 ** 62})
    return write_pt(p, pkl, rec)


def _pt_shape(d, p):
    pkl, rec = pt_state_dict(SD, shapes={"gru.weight_ih_l0": (2 ** 31, 2 ** 31)})
    return write_pt(p, pkl, rec)


def _pt_lying_size(d, p):
    pkl, rec = pt_state_dict(SD)
    entries = [stored("archive/data.pkl", pkl), stored("archive/byteorder", b"little")]
    for k, v in rec.items():
        e = stored(f"archive/data/{k}", v)
        entries.append(e[:4] + (0xFFFFFFFF,) if k == "0" else e)
    return write_zip(p, entries)


def _pt_pkl_bomb(d, p):
    data, crc, size = deflate_zero_bomb(1024)
    _, rec = pt_state_dict(SD)
    entries = [("archive/data.pkl", 8, data, crc, size), stored("archive/byteorder", b"little")]
    entries += [stored(f"archive/data/{k}", v) for k, v in rec.items()]
    return write_zip(p, entries)


def _pt_bomb_unused(d, p):
    data, crc, size = deflate_zero_bomb(1024)
    pkl, rec = pt_state_dict(SD)
    return write_pt(p, pkl, rec, extra=[("archive/data/999", 8, data, crc, size)])


def _pt_bomb_used(d, p):
    """weight_ih_l0 (15 floats) is a view of a 256 MiB deflated storage."""
    data, crc, size = deflate_zero_bomb(256)
    pkl, rec = pt_state_dict(SD, numel={"gru.weight_ih_l0": size // 4})
    pkl_entries = [stored("archive/data.pkl", pkl), stored("archive/byteorder", b"little")]
    rest = [stored(f"archive/data/{k}", v) for k, v in rec.items() if k != "0"]
    return write_zip(p, pkl_entries + [("archive/data/0", 8, data, crc, size)] + rest)


PT_CASES = _mutations("pt", pt_base, ".pt", match_trunc=r"torch|zip|truncat|empty",
                      match_magic=r"torch|zip", kwargs=SD_KW)
PT_CASES += [
    Case("pt-legacy-magic", "pt", lambda d: (open(os.path.join(d, "legacy.pt"), "wb").write(
        (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + bytes(100)), os.path.join(d, "legacy.pt"))[1],
         match=r"legacy|1\.6"),
    Case("pt-bare-pickle", "pt", lambda d: (open(os.path.join(d, "bare.pt"), "wb").write(
        pickle.dumps({"a": 1}, protocol=2)), os.path.join(d, "bare.pt"))[1], match=r"bare pickle"),
    Case("pt-numel-2**62", "pt", _pt("numel", _pt_numel), kwargs=SD_KW, match=r"storage"),
    Case("pt-shape-2**31-squared", "pt", _pt("shape", _pt_shape), kwargs=SD_KW,
         match=r"reaches element|expands|shape"),
    Case("pt-lying-zip-size", "pt", _pt("lie", _pt_lying_size), kwargs=SD_KW,
         match=r"storage|declares|bytes"),
    Case("pt-data-pkl-deflate-bomb", "pt", _pt("pklbomb", _pt_pkl_bomb), kwargs=SD_KW,
         match=r"declares \d+ bytes; more than"),
    Case("pt-deflate-bomb-unused-record", "pt", _pt("bomb_unused", _pt_bomb_unused), kwargs=SD_KW,
         ok_allowed=True),
    Case("pt-deflate-bomb-as-storage", "pt", _pt("bomb_used", _pt_bomb_used), kwargs=SD_KW,
         ok_allowed=True),
]
for _kind in ("reduce-os-system", "stack-global-exec", "inst-posix-system", "nested-subprocess"):
    PT_CASES.append(Case(f"pt-pickle-{_kind}", "pt", _pt(_kind, _pt_payload(_kind)), kwargs=SD_KW,
                         match=r"refus|not allowed|only tensors|could not be unpickled",
                         marker=True))


# .safetensors ----------------------------------------------------------------------------------

def st_base(d):
    p = os.path.join(d, "base.safetensors")
    if not os.path.exists(p):
        h, data = st_state_dict(SD)
        write_safetensors(p, h, data)
    return p


def _st(name, header_fn, data_fn=lambda: b"", raw_len=None):
    def build(d):
        return write_safetensors(os.path.join(d, f"st_{name}.safetensors"), header_fn(),
                                 data_fn(), raw_len)
    return build


def _st_good_header():
    return st_state_dict(SD)


ST = "not a valid safetensors file"
ST_CASES = _mutations("safetensors", st_base, ".safetensors", match_trunc=ST, match_magic=ST,
                      kwargs=SD_KW)
ST_CASES += [
    Case("st-header-len-2**63", "safetensors", _st("hl", lambda: b"{}", raw_len=2 ** 63),
         match=r"header length is \d+ bytes but the file has only"),
    Case("st-header-len-200MB", "safetensors",
         _st("hl2", lambda: b"{" + b" " * 64, data_fn=lambda: b"", raw_len=200_000_000),
         match=r"header length"),
    Case("st-header-not-json", "safetensors", _st("nj", lambda: b"{not json"), match=r"JSON"),
    Case("st-header-list", "safetensors", _st("list", lambda: b"[1, 2]"), match=r"does not start"),
    Case("st-header-deep", "safetensors", _st("deep", lambda: b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"),
         match=r"JSON"),
    Case("st-shape-huge", "safetensors",
         _st("shape", lambda: {"gru.weight_ih_l0": {"dtype": "F32", "shape": [3 * 2 ** 31, 2 ** 31],
                                                    "data_offsets": [0, 8]}}, lambda: bytes(8)),
         match=r"needs \d+ bytes"),
    Case("st-offsets-past-end", "safetensors",
         _st("past", lambda: {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 2 ** 62]}},
             lambda: bytes(8)), match=r"ends at byte"),
    Case("st-offsets-overlap", "safetensors",
         _st("ov", lambda: {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
             lambda: bytes(8)), match=r"overlaps|cover"),
    Case("st-dtype-unknown", "safetensors",
         _st("dt", lambda: {"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}},
             lambda: bytes(8)), match=r"dtype 'Q9'"),
    Case("st-negative-dim", "safetensors",
         _st("neg", lambda: {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
             lambda: bytes(8)), match=r"shape"),
    Case("st-duplicate-name", "safetensors",
         _st("dup", lambda: b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                            b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
             lambda: bytes(8)), match=r"twice"),
]


# .onnx ------------------------------------------------------------------------------------------

ONNX_BASE_FIXTURE = os.path.join(FIX, "onnx", "node_for_lbr1_layout1_nob.onnx")


def onnx_base(d):
    return ONNX_BASE_FIXTURE


def _onnx(name, fn):
    def build(d):
        import onnx
        m = onnx.load(ONNX_BASE_FIXTURE)
        p = os.path.join(d, f"onnx_{name}.onnx")
        out = fn(m, d)
        if isinstance(out, bytes):
            with open(p, "wb") as f:
                f.write(out)
        else:
            onnx.save(out if out is not None else m, p)
        return p
    return build


def _onnx_huge_dims(m, d):
    w = m.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([1, 3 * 2 ** 30, 2 ** 20])


def _onnx_attr(name, **set_fields):
    def fn(m, d):
        for a in m.graph.node[0].attribute:
            if a.name == name:
                for k, v in set_fields.items():
                    setattr(a, k, v)
    return fn


def _onnx_producer_bytes(m, d):
    m.producer_name = "PRODUCERNAME"
    return m.SerializeToString().replace(b"PRODUCERNAME", b"\xff\xfe" * 6)


def _onnx_external(location):
    def fn(m, d):
        from onnx import TensorProto
        if location == "link":
            link = os.path.join(d, "link")
            if not os.path.lexists(link):
                os.symlink("/etc/passwd", link)
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", location), ("length", "64")):
            e = t.external_data.add()
            e.key, e.value = k, v
    return fn


def _onnx_deep(m, d):
    inner = b""
    for _ in range(3000):            # graph.node.attribute.g.node.attribute.g...
        inner = _pb_len(1, _pb_len(5, _pb_len(6, inner)))
    return _varint(1 << 3) + _varint(8) + _pb_len(7, inner)


def _onnx_constant_of_shape(m, d):
    from onnx import TensorProto, helper, numpy_helper
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array([8192, 16384], np.int64), "bigshape"))
    g.node.insert(0, helper.make_node("ConstantOfShape", ["bigshape"], ["big"],
                                      value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])))
    g.output.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, None))


def _onnx_loop(m, d):
    from onnx import TensorProto, helper, numpy_helper
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([1.0], np.float32), "one")])
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(np.array(10 ** 15, np.int64), "M"),
                          numpy_helper.from_array(np.array(True), "c0"),
                          numpy_helper.from_array(np.array([0.0], np.float32), "v0")])
    g.node.insert(0, helper.make_node("Loop", ["M", "c0", "v0"], ["vfinal"], body=body))
    g.output.append(helper.make_tensor_value_info("vfinal", TensorProto.FLOAT, [1]))


ONNX_CASES = _mutations("onnx", onnx_base, ".onnx", match_trunc=r"not a readable ONNX|no graph|"
                        r"no GRU|cannot|used before", match_magic=r"not a readable ONNX|no graph",
                        needs="onnx")
ONNX_CASES += [
    Case("onnx-huge-dims", "onnx", _onnx("dims", _onnx_huge_dims), match=r"tensor 'W' cannot be read",
         needs="onnx"),
    Case("onnx-hidden-size-2**31-1", "onnx", _onnx("hs", _onnx_attr("hidden_size", i=2 ** 31 - 1)),
         match=r"hidden_size=2147483647", needs="onnx"),
    Case("onnx-attr-type-undefined", "onnx", _onnx("atype", _onnx_attr("hidden_size", type=0)),
         match=r"hidden_size", needs="onnx"),
    Case("onnx-attr-hidden-size-string", "onnx",
         _onnx("astr", _onnx_attr("hidden_size", type=3, s=b"abc")), match=r"hidden_size",
         needs="onnx"),
    Case("onnx-producer-not-utf8", "onnx", _onnx("prod", _onnx_producer_bytes), ok_allowed=True,
         needs="onnx"),
    # external data is never read, wherever it points
    Case("onnx-external-data-traversal", "onnx", _onnx("ext1", _onnx_external("../../../../../etc/passwd")),
         match=r"keeps its data in an external file \('\.\./", needs="onnx"),
    Case("onnx-external-data-absolute", "onnx", _onnx("ext2", _onnx_external("/etc/passwd")),
         match=r"keeps its data in an external file \('/etc/passwd'\)", needs="onnx"),
    Case("onnx-external-data-symlink", "onnx", _onnx("ext3", _onnx_external("link")),
         match=r"keeps its data in an external file \('link'\)", needs="onnx"),
    Case("onnx-external-data-sibling", "onnx", _onnx("ext4", _onnx_external("weights.bin")),
         match=r"self-contained ONNX files", needs="onnx"),
    Case("onnx-deeply-nested-protobuf", "onnx", _onnx("deep", _onnx_deep),
         match=r"not a readable ONNX", needs="onnx"),
    Case("onnx-constant-of-shape-512MiB", "onnx", _onnx("cos", _onnx_constant_of_shape),
         match=r"does not depend on the input|not supported", needs="onnx"),
    Case("onnx-loop-1e15", "onnx", _onnx("loop", _onnx_loop), alarm=4, max_s=4,
         match=r"Loop|not supported", needs="onnx"),
]


# .keras -------------------------------------------------------------------------------------

KERAS_BASE_FIXTURE = os.path.join(FIX, "keras", "gru_reset_after.keras")


def keras_base(d):
    return KERAS_BASE_FIXTURE


def _keras_blobs():
    with zipfile.ZipFile(KERAS_BASE_FIXTURE) as z:
        return {n: z.read(n) for n in z.namelist()}


def _keras(name, fn):
    def build(d):
        blobs = _keras_blobs()
        entries = fn(blobs, d)
        if entries is None:
            entries = [stored(n, v) for n, v in blobs.items()]
        return write_zip(os.path.join(d, f"keras_{name}.keras"), entries)
    return build


def _keras_replace(**members):
    def fn(blobs, d):
        blobs.update({k.replace("_", "."): v for k, v in members.items()})
        return None
    return fn


def _keras_config_bomb(blobs, d):
    data, crc, size = deflate_zero_bomb(256)
    return [("config.json", 8, data, crc, size), stored("model.weights.h5", blobs["model.weights.h5"])]


def _keras_h5_big(blobs, d):
    import h5py
    bio = io.BytesIO()
    with h5py.File(io.BytesIO(blobs["model.weights.h5"]), "r") as old, h5py.File(bio, "w") as new:
        for k in old:
            old.copy(k, new)
        del new["layers/gru/cell/vars/0"]
        new["layers/gru/cell/vars"].create_dataset("0", shape=(8000, 8000), dtype="f4",
                                                   chunks=(1000, 1000))
    blobs["model.weights.h5"] = bio.getvalue()
    return None


def _keras_h5_damaged(blobs, d):
    """Superblock v0, byte 16: the group leaf node K; its top bit set makes
    h5py raise RuntimeError('Unable to get group info (addr overflow ...)')."""
    h5 = bytearray(blobs["model.weights.h5"])
    assert h5[:8] == b"\x89HDF\r\n\x1a\n" and h5[8] == 0
    h5[16] ^= 0x80
    blobs["model.weights.h5"] = bytes(h5)
    return None


def _keras_h5_damaged_heap(blobs, d):
    """The global heap (vlen string attributes) loses its signature: h5py
    raises OSError("Can't synchronously read data (bad global heap ...)")."""
    h5 = bytearray(blobs["model.weights.h5"])
    i = h5.find(b"GCOL")
    assert i > 0
    h5[i] ^= 0xFF
    blobs["model.weights.h5"] = bytes(h5)
    return None


def _keras_lambda(blobs, d):
    marker = os.path.join(d, "PWNED_keras")
    code = compile(f"open({marker!r}, 'w')", "<lambda>", "exec")
    cfg = json.loads(blobs["config.json"])
    layers = cfg["config"]["layers"]
    gru = next(l for l in layers if l["class_name"] == "GRU")
    lam = {"module": "keras.layers", "class_name": "Lambda",
           "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
               "code": base64.b64encode(marshal.dumps(code)).decode(), "defaults": None,
               "closure": None}}, "arguments": {}}}
    seq = {"module": "keras", "class_name": "Sequential",
           "config": {"name": "seq", "layers": [
               {"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": [None, None, 5], "name": "in"}}, lam,
               {k: v for k, v in gru.items() if k != "inbound_nodes"}]}}
    blobs["config.json"] = json.dumps(seq).encode()
    return None


def _keras_os_system(blobs, d):
    cfg = json.loads(blobs["config.json"])
    for l in cfg["config"]["layers"]:
        if l["class_name"] == "GRU":
            l["module"], l["class_name"] = "os", "system"
    blobs["config.json"] = json.dumps(cfg).encode()
    return None


KERAS_CASES = _mutations("keras", keras_base, ".keras", match_trunc=r"not a \.keras archive",
                         match_magic=r"not a \.keras archive|cannot read .* from the archive",
                         needs="h5py")
KERAS_CASES += [
    Case("keras-legacy-hdf5", "keras", lambda d: (open(os.path.join(d, "legacy.keras"), "wb").write(
        b"\x89HDF\r\n\x1a\n" + bytes(100)), os.path.join(d, "legacy.keras"))[1],
         match=r"legacy Keras HDF5", needs="h5py"),
    Case("keras-no-config", "keras", _keras("nocfg", lambda b, d: [stored("model.weights.h5",
                                                                          b["model.weights.h5"])]),
         match=r"has no config.json", needs="h5py"),
    Case("keras-config-not-json", "keras", _keras("badjson", _keras_replace(config_json=b"{oops")),
         match=r"config.json is not valid JSON", needs="h5py"),
    Case("keras-config-deep-json", "keras",
         _keras("deep", _keras_replace(config_json=b"[" * 200000 + b"]" * 200000)),
         match=r"config.json", needs="h5py"),
    Case("keras-metadata-deep-json", "keras",
         _keras("mdeep", _keras_replace(metadata_json=b"[" * 200000 + b"]" * 200000)),
         ok_allowed=True, needs="h5py"),
    Case("keras-h5-not-hdf5", "keras", _keras("noh5", _keras_replace(model_weights_h5=b"junk" * 100)),
         match=r"model.weights.h5 is not a readable HDF5 file", needs="h5py"),
    Case("keras-h5-truncated", "keras",
         _keras("h5trunc", lambda b, d: _keras_replace(model_weights_h5=b["model.weights.h5"][:3000])(b, d)),
         match=r"model.weights.h5", needs="h5py"),
    Case("keras-h5-damaged-superblock", "keras", _keras("h5dmg", _keras_h5_damaged),
         match=r"model.weights.h5", needs="h5py"),
    Case("keras-h5-damaged-global-heap", "keras", _keras("h5heap", _keras_h5_damaged_heap),
         match=r"model.weights.h5", needs="h5py"),
    Case("keras-config-deflate-bomb", "keras", _keras("bomb", _keras_config_bomb),
         match=r"config.json", needs="h5py"),
    Case("keras-h5-dataset-claims-8000x8000", "keras", _keras("h5big", _keras_h5_big),
         match=r"kernel|shape|rows", needs="h5py"),
    Case("keras-lambda-layer", "keras", _keras("lambda", _keras_lambda),
         match=r"layer type 'Lambda' is not supported", marker=True, needs="h5py"),
    Case("keras-class-os-system", "keras", _keras("ossys", _keras_os_system),
         match=r"'system'|no GRU layer", needs="h5py"),
]


ALL_CASES = GRL_CASES + NPZ_CASES + PT_CASES + ST_CASES + ONNX_CASES + KERAS_CASES
CASES_BY_ID = {c.id: c for c in ALL_CASES}
assert len(CASES_BY_ID) == len(ALL_CASES), "duplicate case ids"


def _available(c: Case) -> bool:
    return (c.needs != "onnx" or HAVE_ONNX) and (c.needs != "h5py" or HAVE_H5PY)


@pytest.fixture(scope="module")
def file_results(tmp_path_factory):
    """Builds every case's file and runs them in child processes, three at a
    time: one child per importer for the quick cases, one per heavy case."""
    d = str(tmp_path_factory.mktemp("hostile"))
    groups: dict = {}
    built = {}
    for c in ALL_CASES:
        if not _available(c):
            continue
        path = c.build(d)
        built[c.id] = path
        heavy = c.xfail is not None or "bomb" in c.id
        # heavy cases get a child each (their peak memory is then exact even
        # where /proc/self/clear_refs is not writable); the others are batched
        key = f"0-{c.id}" if heavy else f"1-{c.importer}"
        groups.setdefault(key, []).append(dict(id=c.id, importer=c.importer, path=path,
                                               kwargs=c.kwargs, alarm=c.alarm))
    with ThreadPoolExecutor(max_workers=3) as ex:
        parts = list(ex.map(run_file_cases, [groups[k] for k in sorted(groups)]))
    results = {}
    for part in parts:
        results.update(part)
    return d, results


@pytest.mark.skipif(not IS_LINUX, reason="the child caps its address space with RLIMIT_AS and "
                    "reads its peak RSS from /proc")
@pytest.mark.parametrize("cid", [
    pytest.param(c.id, id=c.id, marks=([pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail
                                        else []))
    for c in ALL_CASES])
def test_hostile_file(file_results, cid):
    c = CASES_BY_ID[cid]
    if not _available(c):
        pytest.skip(f"needs {c.needs}")
    d, results = file_results
    r = results[cid]
    where = f"{cid} ({c.importer})"
    assert r["outcome"] not in ("crash", "killed"), (
        f"{where}: the child process died (status {r.get('status')}: a signal if negative, "
        f"or hung past the timeout)\n{r.get('stderr', '')}")
    assert r["outcome"] != "hang", f"{where}: still running after {c.alarm} s"
    if c.marker:
        pwned = [f for f in os.listdir(d) if f.startswith("PWNED")]
        assert not pwned, f"{where}: the payload ran ({pwned})"
    if r["outcome"] == "ok":
        assert c.ok_allowed, f"{where}: loaded without complaint"
    else:
        assert r["type"] in c.types, f"{where}: {r['type']}: {r['msg']}"
        if c.match:
            assert re.search(c.match, r["msg"]), f"{where}: message {r['msg']!r} lacks {c.match!r}"
    assert r["seconds"] < c.max_s, f"{where}: took {r['seconds']:.1f} s"
    if r["peak_mb"] is not None:
        assert r["peak_mb"] < c.max_mb, f"{where}: peak memory grew by {r['peak_mb']:.0f} MiB"


def test_payloads_are_live(tmp_path):
    """The pickle payloads of the matrix do run when given to plain pickle
    (so 'nothing ran' above means something)."""
    for kind in pickle_payloads("unused"):
        marker = tmp_path / f"m_{kind}"
        data = pickle_payloads(str(marker))[kind]
        code = ("import pickle, sys\ntry:\n    pickle.loads(sys.stdin.buffer.read())\n"
                "except Exception:\n    pass\n")
        subprocess.run([sys.executable, "-c", code], input=data, timeout=60, check=True)
        assert marker.exists(), f"payload {kind} does not run under pickle.loads"


def test_bombs_are_what_they_claim():
    data, crc, size = deflate_zero_bomb(1024)
    assert size == 1 << 30 and len(data) < 1_100_000
    d = zlib.decompressobj(-15)
    out = d.decompress(data[:200_000], 1 << 20)
    assert out == bytes(len(out)) and len(out) == 1 << 20


# ===========================================================================
# 4. the file system


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_load_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "model.grl"
    os.mkfifo(fifo)
    code = f"import grulite\ntry:\n    grulite.load({str(fifo)!r})\nexcept (OSError, ValueError) as e:\n" \
           f"    print('refused:', type(e).__name__, e)\n"
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=4, env=child_env())
    except subprocess.TimeoutExpired:
        pytest.fail("grulite.load on a FIFO hangs")
    assert "refused" in p.stdout and "regular file" in p.stdout, p.stdout + p.stderr


def test_load_directory_and_missing(tmp_path):
    with pytest.raises(OSError, match=r"not a regular file"):
        grulite.load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no such model file"):
        grulite.load(str(tmp_path / "nope.grl"))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
@pytest.mark.parametrize("dtype", [None, "float16"])
def test_save_does_not_follow_planted_symlink(uni, tmp_path, dtype):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.symlink(victim, tmp_path / "model.grl.tmp~")
    try:
        uni.save(str(tmp_path / "model.grl"), dtype=dtype)
    except OSError:
        pass                                  # refusing is fine too
    assert victim.read_text() == "precious\n", "save() wrote through the planted symlink"


@pytest.mark.parametrize("op", ["load", "save"])
def test_nul_in_paths(uni, tmp_path, op):
    good = str(tmp_path / "m.grl")
    uni.save(good)
    if op == "load":
        with pytest.raises((ValueError, OSError)):
            grulite.load(good + "\0.txt")
    else:
        os.remove(good)
        with pytest.raises((ValueError, OSError)):
            uni.save(good + "\0.txt")
        assert not os.path.exists(good)
