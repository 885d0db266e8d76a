"""The Python API: streaming, threads, input forms, errors, configuration,
layers of different sizes, save / load.  Needs only numpy (numbers are
judged by the float64 reference GRU in conftest.py)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import grulite
from support.models import random_state_dict
from support.reference import layers_from_state_dict, ref_gru

REF_TOL = 2e-5   # float32 engine vs float64 reference


# ---------------------------------------------------------------------------
# helpers


def make_sd(seed=0, input_size=3, hidden=(17,), bidirectional=False, bias=True, prefix="gru.",
            scale=1.0) -> dict:
    """A PyTorch-style GRU state_dict (numpy, float32).  `hidden` gives one
    hidden size per layer (different sizes make a non-uniform stack)."""
    return random_state_dict(seed, input_size, hidden, bidirectional, prefix=prefix, bias=bias,
                             scale=scale)


def add_head(sd, in_f, sizes=(5,), names=("fc",), seed=1):
    sd.update(random_state_dict(seed, in_f, hidden=(), head=sizes, head_names=names))
    return sd


def xs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def uni():
    """2-layer unidirectional model, I=3, H=17."""
    return grulite.from_state_dict(make_sd(0, 3, (17, 17)))


@pytest.fixture(scope="module")
def bidir():
    return grulite.from_state_dict(make_sd(1, 3, (5, 5), bidirectional=True))


@pytest.fixture(scope="module")
def headed():
    sd = add_head(make_sd(2, 3, (17, 17), prefix="rnn."), 17, sizes=(5,), names=("fc",))
    return grulite.from_state_dict(sd, head=[("fc", "softmax")])


# ---------------------------------------------------------------------------
# basics


def test_error_is_value_error():
    assert issubclass(grulite.GruliteError, ValueError)
    with pytest.raises(ValueError):
        grulite.from_state_dict({"foo": np.zeros(3, np.float32)})


def test_numbers_match_reference(uni):
    sd = make_sd(0, 3, (17, 17))
    x = xs((4, 9, 3))
    lengths = np.array([9, 3, 1, 6])
    h0 = xs((2, 4, 17), 1)
    y, h_n = uni(x, h0=h0, lengths=lengths)
    y_ref, hn_ref = ref_gru(layers_from_state_dict(sd, "gru."), x,
                            [h0[0:1], h0[1:2]], lengths)
    assert np.abs(y - y_ref).max() <= REF_TOL
    assert np.abs(h_n - np.concatenate(hn_ref)).max() <= REF_TOL


def test_config_reports_sizes(uni, bidir, headed):
    c = uni.config
    assert c.input_size == 3 and c.hidden_size == 17 and c.num_layers == 2
    assert c.bidirectional is False and c.output_size == 17 and c.head_size is None
    assert c.batch_first is True and c.dtype == "float32" and c.uniform
    assert [(l.input_size, l.hidden_size, l.num_directions, l.reset_after, l.bias)
            for l in c.layers] == [(3, 17, 1, True, True), (17, 17, 1, True, True)]
    assert c.head == ()
    c = bidir.config
    assert c.bidirectional is True and c.output_size == 10
    assert [(l.input_size, l.hidden_size, l.num_directions) for l in c.layers] == \
        [(3, 5, 2), (10, 5, 2)]
    c = headed.config
    assert c.head_size == 5 and len(c.head) == 1
    d = c.head[0]
    assert (d.in_features, d.out_features, d.activation, d.bias) == (17, 5, "softmax", True)
    d = c.to_dict()
    assert d["input_size"] == 3 and len(d["layers"]) == 2 and d["head"][0]["out_features"] == 5


def test_config_flags():
    m = grulite.from_state_dict(make_sd(3, 4, (6,), bias=False, prefix=""), reset_after=False,
                                batch_first=False)
    c = m.config
    assert c.batch_first is False
    assert c.layers[0].bias is False and c.layers[0].reset_after is False
    m = grulite.from_state_dict(make_sd(3, 4, (6, 6)), reset_after=[True, False])
    assert [l.reset_after for l in m.config.layers] == [True, False]


# ---------------------------------------------------------------------------
# streaming


def test_stream_steps_equal_whole_sequence(uni):
    x = xs((3, 11, 3))
    y, h_n = uni(x)
    s = uni.stream(batch_size=3)
    outs = []
    for t in range(11):
        o = s.step(x[:, t])
        assert o.shape == (3, 17) and o.dtype == np.float32
        outs.append(o)
    np.testing.assert_array_equal(np.stack(outs, axis=1), y)
    np.testing.assert_array_equal(s.state, h_n)


def test_stream_chunks_equal_whole_sequence(uni):
    x = xs((2, 13, 3), 5)
    y, h_n = uni(x)
    for bounds in ([0, 13], [0, 1, 13], [0, 4, 5, 9, 13], list(range(14))):
        s = uni.stream(2)
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            o = s.step(x[:, a:b])
            assert o.shape == (2, b - a, 17)
            parts.append(o)
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), y, err_msg=str(bounds))
        np.testing.assert_array_equal(s.state, h_n)


def test_stream_1d_step_for_batch_one(uni):
    x = xs((7, 3), 6)
    y, h_n = uni(x)                       # unbatched: (T, H), (L, H)
    assert y.shape == (7, 17) and h_n.shape == (2, 17)
    s = uni.stream()
    outs = [s.step(x[t]) for t in range(7)]
    assert outs[0].shape == (17,)
    np.testing.assert_array_equal(np.stack(outs), y)
    np.testing.assert_array_equal(s.state[:, 0], h_n)


def test_stream_step_into_out(uni):
    x = xs((2, 5, 3), 8)
    y, _ = uni(x)
    s = uni.stream(2)
    buf = np.empty((2, 17), np.float32)
    for t in range(5):
        r = s.step(np.ascontiguousarray(x[:, t]), out=buf)
        assert r is buf
        np.testing.assert_array_equal(buf, y[:, t])
    chunk = np.empty((2, 5, 17), np.float32)
    s.reset()
    assert s.step(x, out=chunk) is chunk
    np.testing.assert_array_equal(chunk, y)
    for bad in (np.empty((2, 16), np.float32), np.empty((2, 17), np.float64),
                np.empty((17, 2), np.float32).T):
        with pytest.raises(grulite.GruliteError, match="out must be"):
            s.step(x[:, 0], out=bad)


def test_stream_state_round_trip(uni):
    s = uni.stream(4)
    assert s.state.shape == (2, 4, 17) and not s.state.any()
    h = xs((2, 4, 17), 7)
    s.state = h
    np.testing.assert_array_equal(s.state, h)
    s.state = h.astype(np.float64)          # converted
    np.testing.assert_array_equal(s.state, h)
    got = s.state
    got[:] = 0                              # a copy: the stream is unaffected
    np.testing.assert_array_equal(s.state, h)


def test_stream_state_from_previous_call(uni):
    x = xs((4, 12, 3), 8)
    h0 = xs((2, 4, 17), 9)
    y, h_n = uni(x, h0=h0)
    y1, h1 = uni(x[:, :5], h0=h0)
    s = uni.stream(4)
    s.state = h1                            # continue where the call stopped
    rest = s.step(x[:, 5:])
    np.testing.assert_array_equal(rest, y[:, 5:])
    np.testing.assert_array_equal(s.state, h_n)
    # and a whole call continued with h0 = previous h_n
    y2, h2 = uni(x[:, 5:], h0=h1)
    np.testing.assert_array_equal(y2, y[:, 5:])
    np.testing.assert_array_equal(h2, h_n)


def test_stream_reset(uni):
    x = xs((2, 6, 3), 10)
    y, _ = uni(x)
    s = uni.stream(2)
    s.step(xs((2, 4, 3), 11))
    assert s.state.any()
    s.reset()
    assert not s.state.any()
    np.testing.assert_array_equal(s.step(x), y)


def test_stream_head_outputs(headed):
    x = xs((3, 8, 3), 12)
    s = headed.stream(3)
    outs = np.stack([s.step(x[:, t]) for t in range(8)], axis=1)
    assert outs.shape == (3, 8, 5)
    np.testing.assert_array_equal(outs, headed.predict(x, all_steps=True))
    np.testing.assert_array_equal(outs[:, -1], headed.predict(x))
    np.testing.assert_allclose(outs.sum(-1), 1.0, rtol=1e-5)


def test_stream_bidirectional_raises(bidir):
    with pytest.raises(grulite.GruliteError, match="forward-only"):
        bidir.stream()


def test_stream_bad_arguments(uni):
    with pytest.raises(grulite.GruliteError, match="batch_size"):
        uni.stream(0)
    s = uni.stream(2)
    with pytest.raises(grulite.GruliteError, match=r"\(2, 3\)"):
        s.step(xs((3, 3)))                      # wrong batch
    with pytest.raises(grulite.GruliteError, match=r"\(2, 3\)"):
        s.step(xs((2, 4)))                      # wrong features
    with pytest.raises(grulite.GruliteError):
        s.step(xs((3,)))                        # 1-D only for batch_size 1
    with pytest.raises(grulite.GruliteError, match="float"):
        s.step(np.ones((2, 3), dtype=np.int32))
    with pytest.raises(grulite.GruliteError, match=r"state has shape \(2, 3, 17\); expected \(2, 2, 17\)"):
        s.state = xs((2, 3, 17))


# ---------------------------------------------------------------------------
# threads


def test_threads_match_serial():
    m = grulite.from_state_dict(make_sd(20, 8, (48, 48), bidirectional=True))
    inputs = [xs((4, 40, 8), 100 + i) for i in range(8)]
    lengths = [np.random.default_rng(i).integers(1, 41, size=4) for i in range(8)]
    serial = [m(x, lengths=l) for x, l in zip(inputs, lengths)]
    results = [None] * 8
    errors = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            out = []
            for _ in range(5):
                out.append(m(inputs[i], lengths=lengths[i]))
            results[i] = out
        except BaseException as e:      # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(8):
        for y, h in results[i]:
            np.testing.assert_array_equal(y, serial[i][0])
            np.testing.assert_array_equal(h, serial[i][1])


def test_threads_streams_match_serial(uni):
    inputs = [xs((2, 30, 3), 200 + i) for i in range(8)]
    serial = [uni(x)[0] for x in inputs]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        s = uni.stream(2)
        results[i] = np.stack([s.step(inputs[i][:, t]) for t in range(30)], axis=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i], serial[i])


# ---------------------------------------------------------------------------
# input forms


def test_input_dtype_and_memory_layout(uni):
    x = xs((3, 9, 3), 30)
    h0 = xs((2, 3, 17), 31)
    lengths = np.array([9, 2, 5])
    y, h = uni(x, h0=h0, lengths=lengths)
    variants = {
        "float64": (x.astype(np.float64), h0.astype(np.float64)),
        "fortran": (np.asfortranarray(x), np.asfortranarray(h0)),
        "list": (x.tolist(), h0.tolist()),
    }
    big = np.zeros((6, 18, 6), np.float32)
    big[::2, ::2, ::2] = x
    variants["sliced"] = (big[::2, ::2, ::2], np.repeat(h0, 2, axis=2)[:, :, ::2])
    assert not variants["sliced"][0].flags.c_contiguous
    assert not variants["sliced"][1].flags.c_contiguous
    for name, (xv, hv) in variants.items():
        for lv in (lengths, lengths.astype(np.int32), lengths.astype(np.uint16), list(lengths)):
            y2, h2 = uni(xv, h0=hv, lengths=lv)
            np.testing.assert_array_equal(y2, y, err_msg=name)
            np.testing.assert_array_equal(h2, h, err_msg=name)
    # stream takes the same forms
    s = uni.stream(3)
    s.state = np.asfortranarray(h0.astype(np.float64))
    out = s.step(big[::2, ::2, ::2])
    np.testing.assert_array_equal(out, uni(x, h0=h0)[0])


def test_time_major_and_unbatched(uni):
    x = xs((3, 6, 3), 40)
    y, h = uni(x)
    yt, ht = uni(x.transpose(1, 0, 2), batch_first=False)
    np.testing.assert_array_equal(yt, y.transpose(1, 0, 2))
    np.testing.assert_array_equal(ht, h)
    yu, hu = uni(x[1])
    np.testing.assert_array_equal(yu, y[1])
    np.testing.assert_array_equal(hu, h[:, 1])


# ---------------------------------------------------------------------------
# bad inputs


def test_bad_x(uni):
    with pytest.raises(grulite.GruliteError, match=r"4 features.*input_size=3"):
        uni(xs((2, 5, 4)))
    with pytest.raises(grulite.GruliteError, match=r"1-D shape \(3,\)"):
        uni(xs((3,)))
    with pytest.raises(grulite.GruliteError, match=r"4-D shape \(1, 2, 5, 3\)"):
        uni(xs((1, 2, 5, 3)))
    with pytest.raises(grulite.GruliteError, match=r"float32 or float64.*int64"):
        uni(np.ones((2, 5, 3), dtype=np.int64))
    with pytest.raises(grulite.GruliteError, match="at least one"):
        uni(np.zeros((2, 0, 3), np.float32))


def test_bad_lengths(uni):
    x = xs((3, 5, 3))
    with pytest.raises(grulite.GruliteError, match=r"lengths\[1\] = 0 is outside \[1, 5\]"):
        uni(x, lengths=[5, 0, 2])
    with pytest.raises(grulite.GruliteError, match=r"lengths\[2\] = 6 is outside \[1, 5\]"):
        uni(x, lengths=[5, 1, 6])
    with pytest.raises(grulite.GruliteError, match=r"lengths has shape \(2,\); expected \(3,\)"):
        uni(x, lengths=[5, 1])
    with pytest.raises(grulite.GruliteError, match=r"lengths has shape \(3, 1\)"):
        uni(x, lengths=[[5], [1], [2]])
    with pytest.raises(grulite.GruliteError, match="lengths must be integers.*float"):
        uni(x, lengths=[5.0, 1.0, 2.0])


def test_bad_h0(uni, bidir):
    x = xs((3, 5, 3))
    with pytest.raises(grulite.GruliteError, match=r"h0 has shape \(1, 3, 17\); expected \(2, 3, 17\)"):
        uni(x, h0=xs((1, 3, 17)))
    with pytest.raises(grulite.GruliteError, match=r"h0 has shape \(2, 2, 17\); expected \(2, 3, 17\)"):
        uni(x, h0=xs((2, 2, 17)))
    with pytest.raises(grulite.GruliteError, match=r"h0 has shape \(2, 5\); expected \(4, 3, 5\)"):
        bidir(x, h0=xs((2, 5)))
    with pytest.raises(grulite.GruliteError, match="h0 must be a float"):
        uni(x, h0=np.zeros((2, 3, 17), np.int32))


def test_predict_without_head(uni):
    with pytest.raises(grulite.GruliteError, match="no head"):
        uni.predict(xs((2, 4, 3)))


def test_several_grus_need_prefix():
    sd = make_sd(0, 3, (4,), prefix="encoder.gru.")
    sd.update(make_sd(1, 4, (4,), prefix="decoder.rnn."))
    with pytest.raises(grulite.GruliteError,
                       match=r"several GRUs.*'decoder\.rnn'.*'encoder\.gru'.*prefix="):
        grulite.from_state_dict(sd)
    m = grulite.from_state_dict(sd, prefix="decoder.rnn")
    assert m.config.input_size == 4
    with pytest.raises(grulite.GruliteError, match=r"no GRU tensors under prefix 'gru'"):
        grulite.from_state_dict(sd, prefix="gru")


def test_checkpoint_dict_is_searched():
    sd = add_head(make_sd(0, 3, (4,), prefix="net.gru."), 4, names=("net.fc",))
    m = grulite.from_state_dict(sd, head="net.fc:softmax")
    ck = {"epoch": 7, "optimizer": {"lr": 0.1}, "model_state_dict": sd}
    m2 = grulite.from_state_dict(ck, head="net.fc:softmax")
    x = xs((2, 5, 3), 97)
    np.testing.assert_array_equal(m.predict(x), m2.predict(x))


def test_missing_tensor_named():
    sd = make_sd(0, 3, (4, 4), bidirectional=True)
    del sd["gru.weight_hh_l1"]
    with pytest.raises(grulite.GruliteError, match=r"gru\.weight_hh_l1 is missing"):
        grulite.from_state_dict(sd)
    sd = make_sd(0, 3, (4, 4), bidirectional=True)
    del sd["gru.bias_hh_l1_reverse"]
    with pytest.raises(grulite.GruliteError, match=r"gru\.bias_hh_l1_reverse is missing"):
        grulite.from_state_dict(sd)


def test_wrong_shape_tensor_named():
    sd = make_sd(0, 3, (17,))
    sd["gru.bias_ih_l0"] = np.zeros(52, np.float32)
    with pytest.raises(grulite.GruliteError,
                       match=r"gru\.bias_ih_l0 has shape \(52,\); expected .*\(51,\)"):
        grulite.from_state_dict(sd)
    sd = make_sd(0, 3, (17,), bidirectional=True)
    sd["gru.weight_ih_l0_reverse"] = np.zeros((51, 4), np.float32)
    with pytest.raises(grulite.GruliteError,
                       match=r"gru\.weight_ih_l0_reverse has shape \(51, 4\); expected .*\(51, 3\)"):
        grulite.from_state_dict(sd)
    sd = make_sd(0, 3, (17,))
    sd["gru.weight_hh_l0"] = np.zeros((51, 16), np.float32)
    with pytest.raises(grulite.GruliteError, match=r"gru\.weight_hh_l0 has shape \(51, 16\)"):
        grulite.from_state_dict(sd)


def test_bad_head_spec():
    sd = add_head(make_sd(0, 3, (17,)), 17)
    with pytest.raises(grulite.GruliteError, match="out"):
        grulite.from_state_dict(sd, head=[("out", "softmax")])
    with pytest.raises(grulite.GruliteError, match="unknown activation 'gelu'"):
        grulite.from_state_dict(sd, head=[("fc", "gelu")])


# ---------------------------------------------------------------------------
# layers of different hidden sizes


@pytest.mark.parametrize("bidirectional", [False, True])
def test_mixed_hidden_sizes(bidirectional):
    D = 2 if bidirectional else 1
    H0, H1 = 6, 3
    sd = make_sd(50, 4, (H0, H1), bidirectional=bidirectional, prefix="enc.")
    assert sd["enc.weight_ih_l1"].shape == (3 * H1, D * H0)
    assert sd["enc.weight_hh_l1"].shape == (3 * H1, H1)
    m = grulite.from_state_dict(sd)
    c = m.config
    assert c.hidden_size == (H0, H1) and not c.uniform and c.num_layers == 2
    assert [(l.input_size, l.hidden_size) for l in c.layers] == [(4, H0), (D * H0, H1)]
    assert c.output_size == D * H1

    x = xs((3, 7, 4), 51)
    lengths = np.array([7, 2, 5])
    y, h_n = m(x, lengths=lengths)
    assert y.shape == (3, 7, D * H1)
    assert isinstance(h_n, tuple) and [h.shape for h in h_n] == [(D, 3, H0), (D, 3, H1)]
    y_ref, hn_ref = ref_gru(layers_from_state_dict(sd, "enc."), x, None, lengths)
    assert np.abs(y - y_ref).max() <= REF_TOL
    for h, r in zip(h_n, hn_ref):
        assert np.abs(h - r).max() <= REF_TOL

    h0 = (xs((D, 3, H0), 52), xs((D, 3, H1), 53))
    y, h_n = m(x, h0=h0, lengths=lengths)
    y_ref, hn_ref = ref_gru(layers_from_state_dict(sd, "enc."), x, h0, lengths)
    assert np.abs(y - y_ref).max() <= REF_TOL
    for h, r in zip(h_n, hn_ref):
        assert np.abs(h - r).max() <= REF_TOL
    y2, _ = m(x, h0=list(h0), lengths=lengths)        # a list works too
    np.testing.assert_array_equal(y2, y)

    yu, hu = m(x[0], h0=tuple(h[:, 0] for h in h0))   # unbatched
    np.testing.assert_array_equal(yu, m(x[:1], h0=tuple(h[:, :1] for h in h0))[0][0])
    assert [h.shape for h in hu] == [(D, H0), (D, H1)]

    with pytest.raises(grulite.GruliteError, match="tuple of 2 arrays"):
        m(x, h0=np.zeros((2 * D, 3, H0), np.float32))
    with pytest.raises(grulite.GruliteError, match=r"h0\[1\] has shape"):
        m(x, h0=(h0[0], np.zeros((D, 3, H0), np.float32)))


def test_mixed_hidden_sizes_stream_state():
    sd = make_sd(60, 2, (5, 2))
    m = grulite.from_state_dict(sd)
    x = xs((2, 9, 2), 61)
    h0 = (xs((1, 2, 5), 62), xs((1, 2, 2), 63))
    y, h_n = m(x, h0=h0)
    s = m.stream(2)
    st = s.state
    assert isinstance(st, tuple) and [a.shape for a in st] == [(1, 2, 5), (1, 2, 2)]
    s.state = h0
    for a, b in zip(s.state, h0):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s.step(x), y)
    for a, b in zip(s.state, h_n):
        np.testing.assert_array_equal(a, b)


def test_reset_after_false_matches_reference():
    sd = make_sd(70, 5, (9, 9), bidirectional=True, scale=3.0)
    m = grulite.from_state_dict(sd, reset_after=False)
    x = xs((4, 8, 5), 71)
    lengths = np.array([8, 1, 4, 6])
    y, h_n = m(x, lengths=lengths)
    y_ref, hn_ref = ref_gru(layers_from_state_dict(sd, "gru."), x, None, lengths,
                            reset_after=False)
    assert np.abs(y - y_ref).max() <= REF_TOL
    assert np.abs(h_n - np.concatenate(hn_ref)).max() <= REF_TOL
    m2 = grulite.from_state_dict(sd, reset_after=[True, False])
    y2, _ = m2(x, lengths=lengths)
    y_ref2, _ = ref_gru(layers_from_state_dict(sd, "gru."), x, None, lengths,
                        reset_after=[True, False])
    assert np.abs(y2 - y_ref2).max() <= REF_TOL


# ---------------------------------------------------------------------------
# save / load


def test_save_load_round_trip(tmp_path, headed):
    path = tmp_path / "model.grl"
    headed.save(path)
    m2 = grulite.load(path)
    assert m2.path is not None and m2.config == headed.config
    x = xs((3, 10, 3), 80)
    lengths = [10, 4, 7]
    h0 = xs((2, 3, 17), 81)
    for a, b in zip(headed(x, h0=h0, lengths=lengths), m2(x, h0=h0, lengths=lengths)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(headed.predict(x, lengths=lengths),
                                  m2.predict(x, lengths=lengths))
    s1, s2 = headed.stream(3), m2.stream(3)
    np.testing.assert_array_equal(s1.step(x), s2.step(x))
    assert m2.to_bytes() == headed.to_bytes()


def test_save_load_mixed_and_time_major(tmp_path):
    sd = make_sd(90, 3, (4, 7), bidirectional=True, bias=False, prefix="")
    m = grulite.from_state_dict(sd, reset_after=[False, True], batch_first=False)
    m.save(str(tmp_path / "m.grl"))
    m2 = grulite.load(str(tmp_path / "m.grl"))
    assert m2.config == m.config and m2.config.batch_first is False
    x = xs((6, 2, 3), 91)
    (y1, h1), (y2, h2) = m(x), m2(x)
    np.testing.assert_array_equal(y1, y2)
    for a, b in zip(h1, h2):
        np.testing.assert_array_equal(a, b)


def test_from_npz_round_trip(tmp_path, uni):
    sd = make_sd(0, 3, (17, 17))
    path = tmp_path / "w.npz"
    np.savez(path, **sd)
    m = grulite.from_npz(path)
    x = xs((2, 5, 3), 95)
    np.testing.assert_array_equal(m(x)[0], uni(x)[0])
    with pytest.raises(FileNotFoundError):
        grulite.from_npz(tmp_path / "nope.npz")


def test_head_from_final_states_matches_torch_pattern():
    """head_from="state": fc(cat(h_n[-2], h_n[-1])), the usual bidirectional
    classifier, against live torch."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    gru = torch.nn.GRU(4, 6, 2, batch_first=True, bidirectional=True)
    fc = torch.nn.Linear(12, 5)
    sd = {f"gru.{k}": v for k, v in gru.state_dict().items()}
    sd.update({f"fc.{k}": v for k, v in fc.state_dict().items()})
    x = torch.randn(3, 8, 4)
    lengths = torch.tensor([8, 5, 2])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                     enforce_sorted=False)
    with torch.no_grad():
        _, h_n = gru(packed)
        ref = torch.softmax(fc(torch.cat([h_n[-2], h_n[-1]], 1)), -1).numpy()
    m = grulite.from_state_dict(sd, head=[("fc", "softmax")], head_from="state")
    assert m.config.head_from == "state"
    np.testing.assert_allclose(m.predict(x.numpy(), lengths.numpy()), ref, atol=2e-5)
    # The default reads the last valid step's output: different for the backward half.
    d = grulite.from_state_dict(sd, head=[("fc", "softmax")])
    assert d.config.head_from == "output"
    assert np.abs(d.predict(x.numpy(), lengths.numpy()) - ref).max() > 1e-3
    with pytest.raises(grulite.GruliteError, match="head_from must be"):
        grulite.from_state_dict(sd, head=[("fc", "softmax")], head_from="last")
