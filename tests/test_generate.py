"""Whole sequence models: token input through an embedding (folded or
not), generation (greedy and sampled), seq2seq decoding, forecasting and
stream rows.

References: torch outputs committed in tests/fixtures/generate/ (made by
tools/make_generate_fixtures.py), the bundled demo's torch greedy text, and
live torch when it is installed."""
from __future__ import annotations

import os

import numpy as np
import pytest

import grulite
from grulite import GruliteError

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "generate")
DATA = os.path.join(os.path.dirname(grulite.__file__), "data")
TOL = 2e-5
DTYPE_TOL = {"float32": 2e-5, "float16": 3e-3, "int8": 3e-2}


def load(name):
    with np.load(os.path.join(FIX, name)) as z:
        return {k: z[k] for k in z.files}


def weights(fx, *prefixes):
    return {k: v for k, v in fx.items() if k.split(".")[0] in prefixes}


def lm(fx, fold=None, dtype="float32", act="none", **kw):
    return grulite.from_state_dict(weights(fx, "emb", "gru", "fc"), prefix="gru",
                                   embedding="emb", head=[("fc", act)], fold_embedding=fold,
                                   dtype=dtype, **kw)


def rows(a, lengths):
    return [np.asarray(a[i, :n]) for i, n in enumerate(lengths)]


@pytest.fixture(scope="module")
def charlm():
    return load("charlm.npz")


# ---- the embedding -----------------------------------------------------------

@pytest.mark.parametrize("fold", [None, True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_token_model_matches_torch(charlm, fold, dtype):
    m = lm(charlm, fold, dtype)
    emb = m.config.embedding
    assert emb["vocab_size"] == 37 and emb["folded"] == bool(fold)
    assert emb["width"] == (3 * 48 if fold else 24)
    tok, lengths = charlm["in_tokens"], charlm["in_lengths"]
    y, h_n = m(tok, lengths=lengths)
    tol = DTYPE_TOL[dtype]
    np.testing.assert_allclose(y, charlm["ref_y"], atol=tol)
    np.testing.assert_allclose(h_n, charlm["ref_h_n"], atol=tol)
    logits = m.predict(tok, lengths=lengths)
    np.testing.assert_allclose(logits, charlm["ref_logits_last"], atol=tol * 20)
    # Saved and loaded: the same model, the same numbers.
    again = grulite.from_bytes(m.to_bytes())
    assert again.config.embedding == emb
    np.testing.assert_array_equal(again(tok, lengths=lengths)[0], y)


def test_token_input_forms(charlm):
    m = lm(charlm)
    tok, lengths = charlm["in_tokens"], charlm["in_lengths"]
    y, _ = m(tok)
    np.testing.assert_array_equal(m(tok[0])[0], y[0])                    # unbatched (T,)
    np.testing.assert_array_equal(m(tok.T, batch_first=False)[0], y.transpose(1, 0, 2))
    np.testing.assert_array_equal(m(tok.astype(np.uint8))[0], y)       # any integer dtype
    # Ids past a length are never read: any value there.
    bad = tok.copy()
    bad[1, 6] = 10**6
    bad[2, 3] = -7
    np.testing.assert_array_equal(m(bad, lengths=lengths)[0], m(tok, lengths=lengths)[0])


@pytest.mark.parametrize("value, word", [(37, "37"), (-1, "-1"), (2**40, str(2**40))])
def test_bad_token_ids_are_named(charlm, value, word):
    m = lm(charlm)
    tok = charlm["in_tokens"].copy()
    tok[2, 0] = value
    with pytest.raises(GruliteError, match=rf"token id {word}.*vocabulary \[0, 37\)"):
        m(tok)
    with pytest.raises(GruliteError, match="integer token ids"):
        m(tok.astype(np.float32))
    with pytest.raises(GruliteError, match="shape"):
        m(charlm["in_tokens"][:, :, None])


# ---- generation ----------------------------------------------------------------

def test_greedy_matches_torch(charlm):
    m = lm(charlm)
    prompts = rows(charlm["in_prompts"], charlm["in_lengths"])
    stop = int(charlm["in_stop"])
    out = m.generate(prompts, stop=stop, max_steps=12)
    assert [len(o) for o in out] == list(charlm["ref_greedy_len"])
    for o, ref, n in zip(out, charlm["ref_greedy"], charlm["ref_greedy_len"]):
        assert o.dtype == np.int64
        np.testing.assert_array_equal(o, ref[:n])
    nostop = m.generate(prompts, max_steps=12)
    np.testing.assert_array_equal(np.stack(nostop), charlm["ref_greedy_nostop"])
    # One row alone, or among others, on 1 or 2 threads: the same tokens.
    m.num_threads = 2
    assert all((a == b).all() for a, b in zip(m.generate(prompts, max_steps=12), nostop))
    np.testing.assert_array_equal(m.generate(prompts[1], max_steps=12)[0], nostop[1])


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_greedy_other_dtypes(charlm, dtype):
    """Rounded weights move the logits a little; the references' margins
    (>= 0.04) keep the greedy choice."""
    m = lm(charlm, dtype=dtype)
    out = m.generate(rows(charlm["in_prompts"], charlm["in_lengths"]), max_steps=4)
    np.testing.assert_array_equal(np.stack(out), charlm["ref_greedy_nostop"][:, :4])


def test_seq2seq_decoding_matches_torch():
    fx = load("seq2seq.npz")
    enc = grulite.from_state_dict(weights(fx, "enc_emb", "enc"), prefix="enc", embedding="enc_emb")
    dec = grulite.from_state_dict(weights(fx, "dec_emb", "dec", "out"), prefix="dec",
                                  embedding="dec_emb", head=[("out", "none")])
    _, h = enc(fx["in_src"], lengths=fx["in_src_lengths"])
    np.testing.assert_allclose(h, fx["ref_enc_h_n"], atol=TOL)
    out = dec.generate(h0=h, start=int(fx["in_start"]), stop=int(fx["in_stop"]), max_steps=10)
    assert [len(o) for o in out] == list(fx["ref_dec_len"])
    for o, ref, n in zip(out, fx["ref_dec"], fx["ref_dec_len"]):
        np.testing.assert_array_equal(o, ref[:n])
    # start as one token per row gives the same.
    out2 = dec.generate(h0=h, start=[int(fx["in_start"])] * 3, stop=int(fx["in_stop"]),
                        max_steps=10)
    assert all((a == b).all() for a, b in zip(out, out2))


def test_sampling_follows_the_distribution():
    """Empirical frequencies of one sampled step over many rows against
    torch's softmax (with temperature, top-k, top-p): within 5 sigma."""
    fx = load("sample.npz")
    m = grulite.from_state_dict(weights(fx, "emb", "gru", "fc"), prefix="gru", embedding="emb",
                                head=[("fc", "none")])
    n = 20000
    prompt = np.repeat(fx["in_prompt"], n, axis=0)
    cases = [(dict(temperature=0.5), "ref_probs_t05"), (dict(), "ref_probs_t1"),
             (dict(temperature=2.0), "ref_probs_t2"), (dict(top_k=3), "ref_probs_topk3"),
             (dict(top_p=0.8), "ref_probs_topp08")]
    for kw, ref in cases:
        out = np.concatenate(m.generate(prompt, max_steps=1, strategy="sample", seed=7, **kw))
        freq = np.bincount(out, minlength=11) / n
        p = fx[ref][0]
        sigma = np.sqrt(p * (1 - p) / n) + 1e-9
        assert (np.abs(freq - p) <= 5 * sigma + 1e-4).all(), (kw, freq, p)
        assert (freq[p == 0] == 0).all(), kw            # filtered tokens never drawn


def test_sampling_is_keyed_by_seed_and_row(charlm):
    m = lm(charlm)
    prompts = rows(charlm["in_prompts"], charlm["in_lengths"])
    kw = dict(max_steps=12, strategy="sample", temperature=1.5, top_k=10, top_p=0.95)
    a = m.generate(prompts, seed=3, **kw)
    m.num_threads = 2
    b = m.generate(prompts, seed=3, **kw)
    assert all((x == y).all() for x, y in zip(a, b))
    c = m.generate(prompts, seed=4, **kw)
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c))
    # A seed per row: row 2 alone draws what it drew among the others.
    d = m.generate(prompts, seed=[11, 12, 13, 14], **kw)
    e = m.generate(prompts[2], seed=[13], **kw)
    np.testing.assert_array_equal(d[2], e[0])


def test_softmax_head_samples_from_its_logits(charlm):
    none = lm(charlm)
    soft = lm(charlm, act="softmax")
    prompts = rows(charlm["in_prompts"], charlm["in_lengths"])
    kw = dict(max_steps=10, strategy="sample", temperature=0.7, seed=5)
    assert all((a == b).all() for a, b in zip(none.generate(prompts, **kw),
                                              soft.generate(prompts, **kw)))
    assert all((a == b).all() for a, b in zip(none.generate(prompts, max_steps=10),
                                              soft.generate(prompts, max_steps=10)))
    tanh = lm(charlm, act="tanh")
    with pytest.raises(GruliteError, match="'tanh'.*greedy"):
        tanh.generate(prompts, strategy="sample")
    tanh.generate(prompts, max_steps=3)                 # greedy works


def test_generate_argument_errors(charlm):
    m = lm(charlm)
    p = [1, 2, 3]
    cases = [
        (dict(), "prompt .* or a start token"),
        (dict(prompt=p, start=1), "one of the two"),
        (dict(prompt=[1, 99]), r"token id 99 .*\[0, 37\)"),
        (dict(prompt=[[1, 2], []]), "prompt row 1"),
        (dict(prompt=p, stop=37), r"stop must be a token id in \[0, 37\)"),
        (dict(prompt=p, max_steps=-1), "max_steps"),
        (dict(prompt=p, strategy="beam"), "strategy"),
        (dict(prompt=p, strategy="sample", temperature=0), "temperature"),
        (dict(prompt=p, strategy="sample", temperature=float("nan")), "temperature"),
        (dict(prompt=p, strategy="sample", top_k=0), "top_k"),
        (dict(prompt=p, strategy="sample", top_p=1.5), "top_p"),
        (dict(prompt=p, top_k=3), "strategy='sample'"),
        (dict(prompt=p, strategy="sample", seed=[1, 2]), "one per row"),
        (dict(prompt=p, h0=np.zeros((2, 3, 48), np.float32)), "h0"),
    ]
    for kw, match in cases:
        with pytest.raises(GruliteError, match=match):
            m.generate(**kw)
    assert m.generate(p, max_steps=0)[0].shape == (0,)
    float_model = grulite.from_state_dict(weights(charlm, "gru", "fc"), prefix="gru",
                                          embedding=False, head=[("fc", "none")])
    with pytest.raises(GruliteError, match="token ids"):
        float_model.generate(p)


# ---- forecasting ----------------------------------------------------------------

def test_forecast_matches_torch():
    fx = load("forecast.npz")
    m = grulite.from_state_dict(weights(fx, "gru", "fc"), prefix="gru", head=[("fc", "none")])
    out = m.forecast(fx["in_x"], 5, lengths=fx["in_lengths"])
    np.testing.assert_allclose(out, fx["ref_forecast"], atol=TOL)
    np.testing.assert_allclose(m.forecast(fx["in_x"][0], 5), fx["ref_forecast"][0], atol=TOL)
    with pytest.raises(GruliteError, match="horizon"):
        m.forecast(fx["in_x"], 0)
    no_head = grulite.from_state_dict(weights(fx, "gru"), prefix="gru")
    with pytest.raises(GruliteError, match="head"):
        no_head.forecast(fx["in_x"], 2)


def test_forecast_needs_head_size_equal_input(charlm):
    m = grulite.from_state_dict(weights(load("forecast.npz"), "gru"), prefix="gru")
    sd = weights(load("forecast.npz"), "gru")
    sd["fc.weight"] = np.ones((2, 16), np.float32)
    m = grulite.from_state_dict(sd, prefix="gru", head=[("fc", "none")])
    with pytest.raises(GruliteError, match="gives 2 values.*input_size=3"):
        m.forecast(np.zeros((1, 4, 3), np.float32), 2)
    with pytest.raises(GruliteError, match="token ids"):
        lm(charlm).forecast(np.zeros((1, 4, 1), np.float32), 2)


# ---- stream rows ------------------------------------------------------------------

def test_stream_rows_step_only_those_rows(charlm):
    m = lm(charlm)
    s = m.stream(4)
    s.step(np.array([[1, 2], [3, 4], [5, 6], [7, 8]]))
    before = s.get_state()
    # Rows 3 and 1 read two more tokens; rows 0 and 2 wait.
    part = s.step(np.array([[9, 10], [11, 12]]), rows=[3, 1])
    solo = m.stream(2)
    solo.set_state(before[:, [3, 1]])
    np.testing.assert_array_equal(part, solo.step(np.array([[9, 10], [11, 12]])))
    after = s.get_state()
    np.testing.assert_array_equal(after[:, [0, 2]], before[:, [0, 2]])
    np.testing.assert_array_equal(s.get_state(rows=[3, 1]), solo.state)
    # Whole-sequence numbers: row 3 read [7, 8, 9, 10].
    full = m.predict(np.array([[7, 8, 9, 10]]), all_steps=True)[0, 2:]
    np.testing.assert_array_equal(part[0], full)
    s.reset(rows=[1])
    assert not s.get_state(rows=[1]).any() and s.get_state(rows=[3]).any()
    s.set_state(before[:, [2]], rows=[0])
    np.testing.assert_array_equal(s.get_state(rows=[0]), before[:, [2]])
    for bad, match in [([4], r"row 4 is outside"), ([1, 1], "row 1 is listed twice"),
                       ([], "non-empty"), ([[0]], "1-D")]:
        with pytest.raises(GruliteError, match=match):
            s.step(np.array([1] * max(1, len(bad))), rows=bad)
    with pytest.raises(GruliteError, match=r"token id 37"):
        s.step(np.array([37, 1]), rows=[0, 1])
    with pytest.raises(GruliteError, match=r"shape \(2,\)"):
        s.step(np.array([1, 2, 3]), rows=[0, 1])


def test_stream_rows_float_model():
    fx = load("forecast.npz")
    m = grulite.from_state_dict(weights(fx, "gru"), prefix="gru")
    s = m.stream(3)
    x = fx["in_x"][0, :3]
    y = s.step(x[[0, 2]], rows=[0, 2])
    np.testing.assert_array_equal(y, m.stream(2).step(x[[0, 2]]))
    assert not s.get_state(rows=[1]).any()


# ---- the bundled demo, and live torch ------------------------------------------------

def test_bundled_demo_reproduces_torch_greedy_text():
    from grulite._vocab import decode, read_vocab

    path = os.path.join(DATA, "zen_charlm.npz")
    vocab = read_vocab(os.path.join(DATA, "zen_vocab.txt"))
    m = grulite.from_npz(path, prefix="gru", embedding="emb", head=[("fc", "none")], vocab=vocab)
    assert m.vocab == vocab
    with np.load(path) as z:
        prompt, ref = z["in_prompt"][0], z["ref_greedy"][0]
    out = m.generate(prompt, max_steps=len(ref))[0]
    np.testing.assert_array_equal(out, ref)
    assert decode(out, vocab).startswith(" better than ugly.")


def test_live_torch_generation():
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    emb, gru, fc = torch.nn.Embedding(50, 16), torch.nn.GRU(16, 40, 2, batch_first=True), \
        torch.nn.Linear(40, 50)
    with torch.no_grad():
        fc.weight.mul_(6)
    sd = {**{f"emb.{k}": v for k, v in emb.state_dict().items()},
          **{f"gru.{k}": v for k, v in gru.state_dict().items()},
          **{f"fc.{k}": v for k, v in fc.state_dict().items()}}
    m = grulite.from_state_dict(sd, head=[("fc", "none")])    # both found by name
    assert m.config.embedding["vocab_size"] == 50

    def torch_greedy(prompt, n):
        out = []
        with torch.no_grad():
            y, h = gru(emb(torch.tensor([prompt])))
            for _ in range(n):
                logits = fc(y[0, -1])
                top2 = torch.topk(logits, 2).values
                if float(top2[0] - top2[1]) < 1e-3:     # too close to call in float32
                    break
                t = int(logits.argmax())
                out.append(t)
                y, h = gru(emb(torch.tensor([[t]])), h)
        return out

    prompts = [[1, 2, 3, 4], [5], [7, 8]]
    got = m.generate(prompts, max_steps=15)
    for p, g in zip(prompts, got):
        ref = torch_greedy(p, 15)
        np.testing.assert_array_equal(g[:len(ref)], ref)


# ---- edge cases found in review ---------------------------------------------------

def _tiny_lm(bias):
    """An embedding -> GRU -> Linear model whose head scores are `bias`
    (zero Linear weights): the scores are known exactly."""
    rng = np.random.default_rng(0)
    V = len(bias)
    sd = {"emb.weight": rng.standard_normal((V, 3)).astype(np.float32),
          "gru.weight_ih_l0": rng.standard_normal((12, 3)).astype(np.float32),
          "gru.weight_hh_l0": rng.standard_normal((12, 4)).astype(np.float32),
          "fc.weight": np.zeros((V, 4), np.float32),
          "fc.bias": np.asarray(bias, np.float32)}
    return grulite.from_state_dict(sd, head=[("fc", "none")])


def test_infinite_scores_are_drawn_and_never_lost():
    m = _tiny_lm([0, np.inf, 1, 2, 0, 0])
    for kw in (dict(), dict(top_k=2), dict(top_p=0.5), dict(temperature=3.0)):
        out = m.generate([[0]] * 50, max_steps=3, strategy="sample", seed=1, **kw)
        assert all((o == 1).all() for o in out), kw
    two = _tiny_lm([np.inf, 0, np.inf, 1])
    drawn = np.concatenate(two.generate([[0]] * 400, max_steps=1, strategy="sample", seed=2))
    assert set(drawn.tolist()) == {0, 2}                # the two +inf tokens share the draws
    assert (two.generate([[0]], max_steps=2)[0] == 0).all()    # greedy: the lowest id on ties


def test_large_max_steps_costs_only_what_rows_write():
    m = _tiny_lm([0, 0, 5, 0])                         # every row picks 2 first
    out = m.generate([[0], [1], [3]], stop=2, max_steps=2**26)
    assert all(len(o) == 0 for o in out)
    with pytest.raises(GruliteError, match=r"max_steps must be an int in \[0, 2\*\*31 - 1\]"):
        m.generate([[0]], max_steps=2**31)


def test_float32_range_of_sampling_parameters():
    m = _tiny_lm([0, 1, 2])
    for kw in (dict(temperature=1e-50), dict(temperature=1e39), dict(top_p=1e-50)):
        with pytest.raises(GruliteError, match="temperature|top_p"):
            m.generate([[0]], strategy="sample", **kw)


def test_unbatched_encoder_state_starts_a_decoder():
    fx = load("seq2seq.npz")
    enc = grulite.from_state_dict(weights(fx, "enc_emb", "enc"), prefix="enc", embedding="enc_emb")
    dec = grulite.from_state_dict(weights(fx, "dec_emb", "dec", "out"), prefix="dec",
                                  embedding="dec_emb", head=[("out", "none")])
    n = int(fx["in_src_lengths"][2])
    _, h = enc(fx["in_src"][2, :n])                    # unbatched: (1, 64)
    assert h.shape == (1, 64)
    out = dec.generate(h0=h, start=int(fx["in_start"]), stop=int(fx["in_stop"]), max_steps=10)
    np.testing.assert_array_equal(out[0], fx["ref_dec"][2, :fx["ref_dec_len"][2]])
    with pytest.raises(GruliteError, match="one start token"):
        dec.generate(h0=h, start=[1, 1])


# ---- a learned initial state, and the source document's update gate (issue 16 item 3) ----

def test_learned_initial_state_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(4)
    gru = torch.nn.GRU(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    h0 = torch.randn(4, 1, 7)                       # an nn.Parameter, saved in the state_dict
    sd = {**{f"gru.{k}": v for k, v in gru.state_dict().items()}, "init_h": h0}
    m = grulite.from_state_dict(sd, h0="init_h")
    assert all(layer.h0 for layer in m.config.layers)
    x = torch.randn(3, 6, 5)
    lengths = [6, 2, 4]
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                         enforce_sorted=False)
        out, hn = gru(packed, h0.expand(-1, 3, -1).contiguous())
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=6)
    for model in (m, grulite.from_bytes(m.to_bytes()), m.astype("float32")):
        yy, hh = model(x.numpy(), lengths=lengths)
        np.testing.assert_allclose(yy, y.numpy(), atol=TOL)
        np.testing.assert_allclose(hh, hn.numpy(), atol=TOL)
    # An explicit h0 still wins; (L*D, H) works as well as (L*D, 1, H).
    zero = np.zeros((4, 3, 7), np.float32)
    with torch.no_grad():
        y0, _ = gru(x, torch.from_numpy(zero))
    np.testing.assert_allclose(m(x.numpy(), zero)[0], y0.numpy(), atol=TOL)
    flat = grulite.from_state_dict({**sd, "init_h": h0[:, 0]}, h0="init_h")
    np.testing.assert_array_equal(flat(x.numpy())[0], m(x.numpy())[0])
    with pytest.raises(GruliteError, match=r"h0 'gru.weight_hh_l0' has shape \(21, 7\)"):
        grulite.from_state_dict(sd, h0="gru.weight_hh_l0")
    with pytest.raises(GruliteError, match="no tensor 'nope'.*init_h"):
        grulite.from_state_dict(sd, h0="nope")


def test_learned_initial_state_in_streams():
    fx = load("forecast.npz")
    sd = dict(weights(fx, "gru"), h0=np.linspace(-1, 1, 16, dtype=np.float32)[None])
    m = grulite.from_state_dict(sd, prefix="gru", h0="h0")
    x = fx["in_x"][:, :4]
    s = m.stream(2)
    np.testing.assert_array_equal(s.state[0], np.repeat(sd["h0"], 2, axis=0))
    np.testing.assert_array_equal(s.step(x), m(x)[0])
    s.reset(rows=[1])
    np.testing.assert_array_equal(s.get_state(rows=[1])[0, 0], sd["h0"][0])


def _seed_gru_reference(x, w_ih, w_hh, b_ih, b_hh):
    """The source document's GRU, from its formula: z_s = sigmoid(...),
    h' = (1 - z_s) * h + z_s * n (numpy, float64)."""
    sig = lambda a: 1 / (1 + np.exp(-a))               # noqa: E731
    H = w_hh.shape[1]
    h = np.zeros((x.shape[0], H))
    ys = []
    for t in range(x.shape[1]):
        gi = x[:, t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = sig(gi[:, :H] + gh[:, :H])
        z = sig(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        h = (1 - z) * h + z * n
        ys.append(h)
    return np.stack(ys, 1)


def test_update_gate_seed_maps_the_source_documents_form(tmp_path):
    rng = np.random.default_rng(5)
    H, I = 6, 4
    sd = {"rnn.weight_ih_l0": rng.standard_normal((3 * H, I)).astype(np.float32),
          "rnn.weight_hh_l0": rng.standard_normal((3 * H, H)).astype(np.float32),
          "rnn.bias_ih_l0": rng.standard_normal(3 * H).astype(np.float32),
          "rnn.bias_hh_l0": rng.standard_normal(3 * H).astype(np.float32)}
    x = rng.standard_normal((2, 5, I)).astype(np.float32)
    ref = _seed_gru_reference(x.astype(np.float64), *(sd[k].astype(np.float64) for k in sd))
    m = grulite.from_state_dict(sd, update_gate="seed")
    np.testing.assert_allclose(m(x)[0], ref, atol=TOL)
    assert m.metadata["update_gate"] == "seed"
    assert np.abs(grulite.from_state_dict(sd)(x)[0] - ref).max() > 0.05   # not the same model
    np.savez(tmp_path / "seed.npz", **sd)
    np.testing.assert_allclose(grulite.from_npz(tmp_path / "seed.npz", update_gate="seed")(x)[0],
                               ref, atol=TOL)
    with pytest.raises(GruliteError, match="update_gate must be 'torch'.*or 'seed'"):
        grulite.from_state_dict(sd, update_gate="keras")


def test_from_arrays_learned_initial_state():
    fx = load("forecast.npz")
    g = {k.split(".")[1].replace("_l0", ""): v for k, v in weights(fx, "gru").items()}
    h0 = np.linspace(-0.5, 0.5, 16, dtype=np.float32)
    m = grulite.from_arrays([dict(g, h0=h0)])
    ref = grulite.from_arrays([g])
    x = fx["in_x"]
    np.testing.assert_array_equal(m(x)[0], ref(x, np.tile(h0, (1, 2, 1)))[0])
    with pytest.raises(GruliteError, match=r"layers\[0\]\['h0'\] has shape \(3,\)"):
        grulite.from_arrays([dict(g, h0=h0[:3])])
