"""The hostile input matrix, in this process: bad arguments and a hostile
file system.  (Absurd sizes: test_hostile_sizes.py; hostile files:
test_hostile_<importer>.py over hostile_files.py.)

1. Arguments: x of wrong shapes and dtypes, NaN / Inf (propagated per
   sequence, never leaking into other sequences), lengths and h0 out of
   range or of the wrong form, non-contiguous / read-only / memory-mapped /
   unaligned / byte-swapped arrays (same numbers as a contiguous copy),
   stream and state misuse, num_threads and isa values.  Every refusal is a
   GruliteError whose message names the problem.
2. Hostile file system: a FIFO given as a model, a symlink planted at the
   temporary name ``save`` writes, NUL bytes in paths.

A bug found here that is not fixed at once gets ``xfail(strict=True)`` with
a reason saying what is wrong and where; it turns into a failure (XPASS)
once fixed: drop the marker then.  None is open now.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from grulite import GruliteError
from helpers_format import (
    child_env,
)
from support.models import random_state_dict

ISAS = grulite.available_isas()


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def uni():
    """2 layers, I=3, H=17, no head."""
    return grulite.from_state_dict(random_state_dict(0))


@pytest.fixture(scope="module")
def headed():
    return grulite.from_state_dict(random_state_dict(1, head=(5,)), head="fc0:softmax")


@pytest.fixture(scope="module")
def bidir():
    return grulite.from_state_dict(random_state_dict(2, hidden=(6, 6), bidirectional=True))


@pytest.fixture(scope="module")
def mixed():
    """Layers of different widths: states are tuples of (D, B, H_l)."""
    return grulite.from_state_dict(random_state_dict(3, hidden=(8, 5)))


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
        m = grulite.from_state_dict(random_state_dict(5, input_size=16, hidden=(24, 24),
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
