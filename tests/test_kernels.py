"""Every kernel set this CPU runs (generic, avx2, avx512) against the
generic C reference kernel and the float64 numpy reference; bit-identity
across thread counts, batch splits and streaming within each kernel set.

Sizes are picked to hit every path of the blocked kernels: hidden sizes
around the 16-lane panel width, inputs longer than a K block (128), batches
below, at and above the row blocks (8 rows on AVX-512, 4 on AVX2)."""
import os

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from support.models import random_state_dict
from support.reference import layers_from_state_dict, ref_gru

TOL = 2e-5          # max abs error against the generic kernel and float64

ISAS = grulite.available_isas()

CASES = [
    # (I, H, layers, bidirectional, bias, reset_after, B, T)
    (1, 1, 1, False, True, True, 1, 5),
    (3, 17, 2, True, True, True, 5, 9),
    (64, 128, 1, False, True, True, 1, 30),
    (130, 33, 1, False, False, True, 9, 7),
    (200, 64, 2, False, True, False, 17, 6),
    (16, 48, 1, True, True, False, 8, 11),
    (5, 129, 1, False, True, True, 20, 4),
    # Weights above 1 MiB, prefetched group by group: W_ih over 90 rows in
    # row and K blocks; W_hh over 9 rows in one block (reset-before: groups
    # that straddle panel blocks) and over 130 rows in row blocks.
    (800, 100, 1, False, True, True, 9, 10),
    (8, 300, 1, False, True, False, 9, 3),
    (4, 300, 1, False, True, True, 130, 2),
]


def _state_dict(rng, I, H, L, bidir, bias, scale=1.0):
    return random_state_dict(rng, I, (H,) * L, bidir, prefix="", bias=bias, scale=scale)


def _model(sd, reset_after, isa, head=None):
    m = grulite.from_state_dict(sd, reset_after=reset_after, head=head)
    m.isa = isa
    return m


def test_available_isas_include_generic():
    assert ISAS[0] == "generic"
    m = grulite.from_state_dict(_state_dict(np.random.default_rng(0), 2, 3, 1, False, True))
    # The best one by default, unless GRULITE_ISA forces one.
    assert m.isa == (os.environ.get("GRULITE_ISA") or ISAS[-1])
    with pytest.raises(grulite.GruliteError, match="kernel set 'sse9'"):
        m.isa = "sse9"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "I{}H{}L{}{}{}{}B{}T{}".format(
    c[0], c[1], c[2], "bi" if c[3] else "", "" if c[4] else "nobias",
    "" if c[5] else "rb", c[6], c[7]))
def test_kernel_matches_reference(isa, case):
    I, H, L, bidir, bias, ra, B, T = case
    rng = np.random.default_rng(hash(case) % 2**32)
    sd = _state_dict(rng, I, H, L, bidir, bias, scale=2.0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    D = 2 if bidir else 1
    h0 = rng.standard_normal((L * D, B, H)).astype(np.float32)

    ref = _model(sd, ra, "generic")
    m = _model(sd, ra, isa)
    y_ref, h_ref = ref(x, h0, lengths)
    y, h = m(x, h0, lengths)
    assert np.max(np.abs(y - y_ref)) <= TOL
    assert np.max(np.abs(h - h_ref)) <= TOL
    y64, h64 = ref_gru(layers_from_state_dict(sd), x, h0=list(h0.reshape(L, D, B, H)),
                       lengths=lengths, reset_after=ra)
    assert np.max(np.abs(y - y64)) <= TOL
    assert np.max(np.abs(h - np.concatenate(h64))) <= TOL
    assert_array_equal(y[np.arange(T)[None, :] >= lengths[:, None]], 0.0)


@pytest.mark.parametrize("isa", ISAS)
def test_bits_do_not_depend_on_threads_or_batch_split(isa):
    rng = np.random.default_rng(7)
    sd = _state_dict(rng, 150, 40, 2, True, True)
    m = _model(sd, True, isa)
    x = rng.standard_normal((23, 12, 150)).astype(np.float32)
    lengths = rng.integers(1, 13, 23)
    m.num_threads = 1
    y1, h1 = m(x, lengths=lengths)
    m.num_threads = 2
    y2, h2 = m(x, lengths=lengths)
    assert_array_equal(y1, y2)
    assert_array_equal(h1, h2)
    # Time-major input, on 2 threads: 12 + 11 rows (a product per step) and
    # 1 + 1 rows (one strided product over the steps).
    for B in (23, 2):
        yt, ht = m(x[:B].transpose(1, 0, 2), lengths=lengths[:B], batch_first=False)
        assert_array_equal(yt.transpose(1, 0, 2), y1[:B])
        assert_array_equal(ht, h1[:, :B])
    # Each sequence alone gives the same bits as inside the batch.
    for b in (0, 7, 8, 22):
        yb, hb = m(x[b:b + 1], lengths=lengths[b:b + 1])
        assert_array_equal(yb[0], y1[b])
        assert_array_equal(hb[:, 0], h1[:, b])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("reset_after", [True, False])
def test_stream_bits_equal_whole_sequence(isa, reset_after):
    rng = np.random.default_rng(11)
    sd = _state_dict(rng, 140, 50, 2, False, True)
    sd["fc.weight"] = rng.standard_normal((10, 50)).astype(np.float32)
    sd["fc.bias"] = rng.standard_normal(10).astype(np.float32)
    m = _model(sd, reset_after, isa, head=[("fc", "softmax")])
    x = rng.standard_normal((9, 15, 140)).astype(np.float32)
    whole = m.predict(x, all_steps=True)
    s = m.stream(9)
    steps = [s.step(x[:, t]) for t in range(5)]
    chunk = s.step(x[:, 5:15])
    streamed = np.concatenate([np.stack(steps, 1), chunk], axis=1)
    assert_array_equal(streamed, whole)


@pytest.mark.parametrize("isa", ISAS)
def test_nan_and_inf_propagate(isa):
    rng = np.random.default_rng(3)
    sd = _state_dict(rng, 4, 20, 1, False, True)
    m = _model(sd, True, isa)
    x = rng.standard_normal((2, 6, 4)).astype(np.float32)
    x[0, 2, 1] = np.nan
    x[1, 3, 0] = np.inf
    y, h = m(x)
    assert np.isnan(y[0, 2:]).all() and np.isfinite(y[0, :2]).all()
    assert np.isfinite(y[1, :3]).all()
    ref = _model(sd, True, "generic")
    y_ref, _ = ref(x)
    both = np.isfinite(y) & np.isfinite(y_ref)
    assert_array_equal(np.isnan(y), np.isnan(y_ref))
    assert np.max(np.abs(y[both] - y_ref[both])) <= TOL


@pytest.mark.parametrize("isa", ISAS)
def test_directions_in_parallel_bit_identical(isa):
    """B=1 cannot split the batch: bidirectional layers run their two
    directions on two threads instead, with the same bits."""
    rng = np.random.default_rng(12)
    sd = _state_dict(rng, 64, 96, 2, True, True)
    m = _model(sd, True, isa)
    x = rng.standard_normal((1, 60, 64)).astype(np.float32)
    h0 = rng.standard_normal((4, 1, 96)).astype(np.float32)
    m.num_threads = 1
    y1, h1 = m(x, h0)
    m.num_threads = 2
    y2, h2 = m(x, h0)
    assert_array_equal(y1, y2)
    assert_array_equal(h1, h2)
    y64, h64 = ref_gru(layers_from_state_dict(sd), x, h0=list(h0.reshape(2, 2, 1, 96)))
    assert np.max(np.abs(y2 - y64)) <= TOL


def _layers(rng, I, hs, reverse=(), reset_after=True):
    """image_from_layers' description of unidirectional layers (a layer k in
    `reverse` runs backwards in time)."""
    layers, in_f = [], I
    for k, H in enumerate(hs):
        b = 1.0 / np.sqrt(H)
        layers.append(dict(
            input_size=in_f, hidden_size=H, num_directions=1, reverse=k in reverse,
            reset_after=reset_after, bias=True,
            weight_ih=[rng.uniform(-b, b, (3 * H, in_f)).astype(np.float32)],
            weight_hh=[rng.uniform(-b, b, (3 * H, H)).astype(np.float32)],
            bias_ih=[rng.uniform(-b, b, 3 * H).astype(np.float32)],
            bias_hh=[rng.uniform(-b, b, 3 * H).astype(np.float32)]))
        in_f = H
    return layers


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_hidden_units_in_parallel_bit_identical(isa, dtype, reset_after):
    """One sequence of a model with a large W_hh runs each layer's hidden
    units on two threads (src/core/layers/gru.c, run_direction_split), meeting once a
    step: the same bits as one thread.  Layers: H=264 (17 blocks, split
    8 + 9, the last block padded) backwards in time, then H=144 (9 blocks)
    forwards; with float16 / int8 weights too (whose smaller W_hh of the
    second layer stays on one thread)."""
    from grulite.importers._image import image_from_layers
    rng = np.random.default_rng(21)
    I = 48
    layers = _layers(rng, I, (264, 144), reverse={0}, reset_after=reset_after)
    m = grulite.from_bytes(image_from_layers(I, layers, [], {}, dtype=dtype))
    m.isa = isa
    x = rng.standard_normal((1, 37, I)).astype(np.float32)
    h0 = [rng.standard_normal((1, 1, H)).astype(np.float32) for H in (264, 144)]
    m.num_threads = 1
    y1, h1 = m(x, h0)
    y1l, h1l = m(x, h0, lengths=[23])
    m.num_threads = 2
    y2, h2 = m(x, h0)
    y2l, h2l = m(x, h0, lengths=[23])
    # Time-major input: its one row's steps are read B rows apart.
    y2t, h2t = m(x.transpose(1, 0, 2), h0, batch_first=False)
    for a, b in ((y1, y2), (y1l, y2l), (y1, y2t.transpose(1, 0, 2))):
        assert_array_equal(a, b)
    for a, b in zip(h1 + h1l + h1, h2 + h2l + h2t):
        assert_array_equal(a, b)
    assert m.config.layers[0].reverse and not m.config.layers[1].reverse
    # and right: the generic reference kernel on one thread
    ref = grulite.from_bytes(m.to_bytes())
    ref.isa, ref.num_threads = "generic", 1
    y_ref, _ = ref(x, h0)
    assert np.max(np.abs(y2 - y_ref)) <= (2e-2 if dtype == "int8" else TOL)   # VNNI quantizes x
