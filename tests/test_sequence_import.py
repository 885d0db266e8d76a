"""Importing whole sequence models (issue 15): nn.GRUCell state_dicts, the
nn.Embedding that feeds the GRU, vocabularies, and grulite.from_arrays.

Numbers are judged by the committed torch fixtures
(tests/fixtures/generate/, tools/make_generate_fixtures.py), by live torch
when it is installed, and by the float64 numpy reference GRU.  The tests
named ``*_contract`` check what the state_dict importer hands to
``image_from_layers`` (the embedding, fold flag and metadata) with that
function replaced by a recorder, so they need no embedding in the C core.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from conftest import FIXTURE_DIR, max_err
from grulite import _vocab
from grulite.importers import _state_dict, by_name
from grulite.importers._state_dict import build_image, find_embedding, find_gru
from support.files import write_npz, write_safetensors, write_torch_state_dict
from support.models import gru_state, linear_state
from support.reference import last_step, ref_gru, ref_head

GEN_DIR = os.path.join(FIXTURE_DIR, "generate")
WRITERS = {"npz": write_npz, "pt": write_torch_state_dict, "safetensors": write_safetensors}
READERS = {"npz": grulite.from_npz, "pt": grulite.from_torch_file,
           "safetensors": grulite.from_safetensors}
REF_TOL = 2e-5


def fixture(name: str) -> dict:
    path = os.path.join(GEN_DIR, name)
    if not os.path.exists(path):
        pytest.skip(f"fixture {name} not generated yet (tools/make_generate_fixtures.py)")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def model_part(arrays: dict) -> dict:
    """A fixture's state_dict: without its in_* / ref_* entries."""
    return {k: v for k, v in arrays.items() if not k.startswith(("in_", "ref_"))}


def cell_sd(rng, I=4, H=6, prefix="cell.", bias=True, kind=3) -> dict:
    """An nn.GRUCell-style state_dict (kind=4: LSTMCell shapes, 1: RNNCell)."""
    sd = {f"{prefix}weight_ih": rng.uniform(-0.5, 0.5, (kind * H, I)).astype(np.float32),
          f"{prefix}weight_hh": rng.uniform(-0.5, 0.5, (kind * H, H)).astype(np.float32)}
    if bias:
        sd[f"{prefix}bias_ih"] = rng.uniform(-0.5, 0.5, kind * H).astype(np.float32)
        sd[f"{prefix}bias_hh"] = rng.uniform(-0.5, 0.5, kind * H).astype(np.float32)
    return sd


def emb_table(rng, V, E) -> np.ndarray:
    return rng.standard_normal((V, E)).astype(np.float32)


class Recorder:
    """Stands in for image_from_layers: records its arguments, returns b""."""

    def __init__(self):
        self.calls = []

    def __call__(self, input_size, layers, dense, meta, batch_first=True, dtype="float32",
                 head_from="output", **kw):
        self.calls.append(dict(input_size=input_size, layers=layers, dense=dense, meta=meta, **kw))
        return b""


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(_state_dict, "image_from_layers", rec)
    return rec


# ---------------------------------------------------------------------------
# nn.GRUCell


def test_grucell_fixture_matches_torch():
    """cell and cellnb (bias=False) of the committed torch fixture, with the
    LSTMCell and RNNCell decoys beside them in the same file."""
    f = fixture("grucell.npz")
    sd = model_part(f)
    for prefix, ref in (("cell", "ref_cell_y"), ("cellnb.", "ref_cellnb_y")):
        m = grulite.from_state_dict(sd, prefix=prefix)
        c = m.config
        assert (c.input_size, c.hidden_size, c.num_layers, c.bidirectional) == (10, 20, 1, False)
        assert c.layers[0].bias == (prefix == "cell")
        y, h_n = m(f["in_x"], h0=f["in_h0"][None])
        assert max_err(y, f[ref]) <= REF_TOL
        assert max_err(h_n[0], f[ref][:, -1]) <= REF_TOL


def test_grucell_fixture_needs_a_prefix_and_refuses_the_decoys():
    sd = model_part(fixture("grucell.npz"))
    with pytest.raises(grulite.GruliteError, match=r"several GRUs.*'cell' \(GRUCell\), "
                                                   r"'cellnb' \(GRUCell\).*prefix="):
        grulite.from_state_dict(sd)
    with pytest.raises(grulite.GruliteError,
                       match=r"LSTMCell-shaped cell under 'lstm\.' \(weight_hh 4H x H, shape \(80, 20\)\)"
                             r".*grulite runs GRUs"):
        grulite.from_state_dict(sd, prefix="lstm")
    with pytest.raises(grulite.GruliteError,
                       match=r"RNNCell-shaped cell under 'rnn\.' \(weight_hh H x H, shape \(20, 20\)\)"):
        grulite.from_state_dict(sd, prefix="rnn")
    # Only the decoys: the message says what they are.
    decoys = {k: v for k, v in sd.items() if k.startswith(("lstm.", "rnn."))}
    with pytest.raises(grulite.GruliteError) as e:
        grulite.from_state_dict(decoys)
    msg = str(e.value)
    assert "found an LSTMCell-shaped cell under 'lstm.' (weight_hh 4H x H" in msg
    assert "an RNNCell-shaped cell under 'rnn.'" in msg and "grulite runs GRUs" in msg


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_grucell_from_every_state_dict_file(tmp_path, fmt):
    f = fixture("grucell.npz")
    sd = model_part(f)
    path = WRITERS[fmt](tmp_path / ("m" + by_name(fmt).extensions[0]), sd)
    m = READERS[fmt](path, prefix="cell")
    y, _ = m(f["in_x"], h0=f["in_h0"][None])
    assert max_err(y, f["ref_cell_y"]) <= REF_TOL
    _, summary = by_name(fmt).image(path, prefix="cell")
    assert summary["kind"] == "GRUCell" and summary["prefix"] == "cell"
    assert summary["tensors"] == ["cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh"]
    assert sorted(summary["unused"]) == sorted(k for k in sd if not k.startswith("cell."))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("prefix", ["", "decoder.cell."])
def test_grucell_live_torch(bias, prefix):
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    cell = torch.nn.GRUCell(5, 7, bias=bias)
    sd = {prefix + k: v for k, v in cell.state_dict().items()}
    sd.update({f"lstm.{k}": v for k, v in torch.nn.LSTMCell(5, 7).state_dict().items()})
    sd.update({f"rnn.{k}": v for k, v in torch.nn.RNNCell(5, 7).state_dict().items()})
    m = grulite.from_state_dict(sd)                  # the one GRUCell, found by its shape
    x = torch.randn(3, 8, 5)
    h = torch.randn(3, 7)
    h0 = h.clone()
    ys = []
    with torch.no_grad():
        for t in range(8):
            h = cell(x[:, t], h)
            ys.append(h)
    y, h_n = m(x, h0=h0[None])
    assert max_err(y, torch.stack(ys, 1).numpy()) <= REF_TOL
    assert max_err(h_n[0], h.numpy()) <= REF_TOL
    assert m.config.layers[0].bias == bias


def test_grucell_in_a_checkpoint_and_reset_before():
    rng = np.random.default_rng(4)
    sd = cell_sd(rng, prefix="model.cell.")
    m = grulite.from_state_dict({"model": sd, "epoch": 3}, reset_after=False)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    want, _ = ref_gru([[dict(w_ih=sd["model.cell.weight_ih"], w_hh=sd["model.cell.weight_hh"],
                             b_ih=sd["model.cell.bias_ih"], b_hh=sd["model.cell.bias_hh"])]],
                      x, reset_after=False)
    assert max_err(m(x)[0], want) <= REF_TOL
    assert not m.config.layers[0].reset_after
    assert m.metadata["prefix"] == "model.cell" and m.metadata["module"] == "GRUCell"
    with pytest.raises(grulite.GruliteError, match="reset_after has 2 entries"):
        grulite.from_state_dict(sd, reset_after=[True, False])


def test_grucell_beside_a_gru_asks_for_a_prefix():
    rng = np.random.default_rng(5)
    sd = {**gru_state(rng, 4, 6, prefix="encoder.gru."), **cell_sd(rng, 4, 6, prefix="decoder.cell.")}
    with pytest.raises(grulite.GruliteError,
                       match=r"several GRUs.*'decoder\.cell' \(GRUCell\), 'encoder\.gru'"):
        grulite.from_state_dict(sd)
    assert grulite.from_state_dict(sd, prefix="decoder.cell").config.num_layers == 1
    assert grulite.from_state_dict(sd, prefix="encoder.gru").config.num_layers == 1
    with pytest.raises(grulite.GruliteError, match=r"no GRU tensors under prefix 'x'.*"
                                                   r"'decoder\.cell' \(GRUCell\), 'encoder\.gru'"):
        grulite.from_state_dict(sd, prefix="x")


def test_grucell_broken_tensors_are_named():
    rng = np.random.default_rng(6)
    sd = cell_sd(rng, 4, 6)
    cases = [
        ({"cell.weight_ih": None}, r"cell\.weight_ih is missing"),
        ({"cell.weight_ih": np.zeros((17, 4), np.float32)},
         r"cell\.weight_ih has shape \(17, 4\); expected \(3\*hidden_size, input_size\) with hidden_size=6"),
        ({"cell.bias_hh": None}, r"cell\.bias_ih is present but cell\.bias_hh is not"),
        ({"cell.bias_ih": np.zeros(17, np.float32)}, r"cell\.bias_ih has shape \(17,\); expected .*\(18,\)"),
    ]
    for change, pattern in cases:
        bad = dict(sd)
        for k, v in change.items():
            if v is None:
                del bad[k]
            else:
                bad[k] = v
        with pytest.raises(grulite.GruliteError, match=pattern):
            find_gru(bad)
    # A weight_hh of no cell's shape.
    bad = dict(sd, **{"cell.weight_hh": np.zeros((10, 6), np.float32)})
    with pytest.raises(grulite.GruliteError, match=r"cell\.weight_hh of shape \(10, 6\)"):
        find_gru(bad)


# ---------------------------------------------------------------------------
# the embedding: detection (pure Python)


@pytest.mark.parametrize("name", ["emb", "embed", "embedding", "embeddings", "tok_embedding",
                                  "word_emb", "src_embed", "model.char_embeddings"])
def test_embedding_names_found(name):
    rng = np.random.default_rng(0)
    sd = {**gru_state(rng, 5, 4), f"{name}.weight": emb_table(rng, 9, 5)}
    sd2, p, desc = find_gru(sd)
    e = find_embedding(sd2, p, desc["input_size"])
    assert e is not None and e["name"] == name and e["key"] == f"{name}.weight"
    assert (e["vocab_size"], e["width"]) == (9, 5)


@pytest.mark.parametrize("name", ["embedder", "membrane", "emb_proj", "pos", "encoder", "fc"])
def test_other_names_are_not_embeddings(name):
    rng = np.random.default_rng(0)
    sd = {**gru_state(rng, 5, 4), f"{name}.weight": emb_table(rng, 9, 5)}
    sd2, p, desc = find_gru(sd)
    assert find_embedding(sd2, p, desc["input_size"]) is None


def test_embedding_must_match_the_input_width_and_be_a_float_table():
    rng = np.random.default_rng(0)
    sd = {**gru_state(rng, 5, 4), "emb.weight": emb_table(rng, 9, 6),
          "embed.weight": rng.standard_normal(5).astype(np.float32),
          "embedding.weight": np.arange(45).reshape(9, 5)}
    sd2, p, desc = find_gru(sd)
    assert find_embedding(sd2, p, 5) is None
    with pytest.raises(grulite.GruliteError, match=r"embedding=True: no embedding of width 5 feeds "
                                                   r"the GRU under 'gru'.*emb 9 x 6"):
        find_embedding(sd2, p, 5, True)
    assert find_embedding(sd2, p, 5, False) is None


def test_embedding_beside_the_gru_is_preferred():
    rng = np.random.default_rng(1)
    sd = {**gru_state(rng, 8, 6, prefix="encoder.gru."), **gru_state(rng, 8, 6, prefix="decoder.gru."),
          "encoder.embedding.weight": emb_table(rng, 30, 8),
          "decoder.embedding.weight": emb_table(rng, 20, 8)}
    for side, V in (("decoder", 20), ("encoder", 30)):
        sd2, p, desc = find_gru(sd, prefix=f"{side}.gru")
        e = find_embedding(sd2, p, desc["input_size"])
        assert e["name"] == f"{side}.embedding" and e["vocab_size"] == V
    # An enclosing module's embedding (shared by both) beats one elsewhere.
    sd3 = {**gru_state(rng, 8, 6, prefix="model.decoder.gru."),
           "model.embedding.weight": emb_table(rng, 12, 8), "other.emb.weight": emb_table(rng, 5, 8)}
    sd4, p, desc = find_gru(sd3)
    assert find_embedding(sd4, p, 8)["name"] == "model.embedding"


def test_embedding_named_after_the_gru_is_preferred():
    """The seq2seq fixture's layout: enc_emb, enc, dec_emb, dec at the top."""
    sd = model_part(fixture("seq2seq.npz"))
    for prefix, name, V in (("dec", "dec_emb", 28), ("enc", "enc_emb", 30)):
        sd2, p, desc = find_gru(sd, prefix=prefix)
        e = find_embedding(sd2, p, desc["input_size"])
        assert (e["name"], e["vocab_size"], e["width"]) == (name, V, 32)


def test_ambiguous_embeddings_ask_for_embedding():
    rng = np.random.default_rng(2)
    sd = {**gru_state(rng, 8, 6), "src_emb.weight": emb_table(rng, 30, 8),
          "tgt_emb.weight": emb_table(rng, 20, 8)}
    sd2, p, desc = find_gru(sd)
    with pytest.raises(grulite.GruliteError) as e:
        find_embedding(sd2, p, 8)
    msg = str(e.value)
    assert "several embeddings of width 8" in msg and "src_emb 30 x 8" in msg and "tgt_emb 20 x 8" in msg
    assert "embedding='NAME'" in msg and "--embedding" in msg
    assert find_embedding(sd2, p, 8, "tgt_emb")["vocab_size"] == 20
    assert find_embedding(sd2, p, 8, "src_emb.")["vocab_size"] == 30
    assert find_embedding(sd2, p, 8, "src_emb.weight")["vocab_size"] == 30


def test_explicit_embedding_errors_name_the_shapes():
    rng = np.random.default_rng(3)
    sd = {**gru_state(rng, 8, 6, prefix="decoder.gru."), "decoder.embedding.weight": emb_table(rng, 20, 7),
          "decoder.table.weight": rng.standard_normal((2, 3, 8)).astype(np.float32)}
    sd2, p, desc = find_gru(sd)
    with pytest.raises(grulite.GruliteError,
                       match=r"embedding='decoder\.emb': no tensor 'decoder\.emb\.weight'.*"
                             r"decoder\.embedding 20 x 7"):
        find_embedding(sd2, p, 8, "decoder.emb")
    with pytest.raises(grulite.GruliteError,
                       match=r"embedding decoder\.embedding\.weight has shape \(20, 7\); to feed the GRU "
                             r"under 'decoder\.gru' it must be \(vocab_size, 8\)"):
        find_embedding(sd2, p, 8, "decoder.embedding")
    with pytest.raises(grulite.GruliteError, match=r"decoder\.table\.weight has shape \(2, 3, 8\); an "
                                                   r"embedding is a 2-D \(vocab_size, width\) table"):
        find_embedding(sd2, p, 8, "decoder.table")
    with pytest.raises(grulite.GruliteError, match="embedding must be None"):
        find_embedding(sd2, p, 8, 3)
    # Through from_state_dict too (before any image is built).
    with pytest.raises(grulite.GruliteError, match=r"must be \(vocab_size, 8\)"):
        grulite.from_state_dict(sd, embedding="decoder.embedding")


def test_embedding_tensors_are_not_read_until_used(tmp_path):
    """Detection looks at shapes only: a lazy tensor of a file stays unread."""
    from grulite.importers._npz import _NpzArchive

    rng = np.random.default_rng(4)
    sd = {**gru_state(rng, 5, 4), "emb.weight": emb_table(rng, 9, 5), "x_emb.weight": emb_table(rng, 9, 3)}
    path = write_npz(tmp_path / "m.npz", sd)
    with _NpzArchive(path) as npz:
        tensors = npz.tensors()
        sd2, p, desc = find_gru(tensors)
        e = find_embedding(sd2, p, desc["input_size"])
        assert e["name"] == "emb"
        assert all(t._cache is None for t in tensors.values())


# ---------------------------------------------------------------------------
# the embedding: what build_image hands to image_from_layers


def test_build_image_embedding_contract(recorder):
    rng = np.random.default_rng(5)
    sd = {"emb.weight": emb_table(rng, 11, 5), **gru_state(rng, 5, 4), **linear_state(rng, 4, 11)}
    _, summary = build_image(sd, head="fc:softmax", vocab=[chr(97 + i) for i in range(11)])
    (call,) = recorder.calls
    assert call["input_size"] == 5                                  # the embedding's width
    emb = call["embedding"]
    assert emb["name"] == "emb" and emb["fold"] is None
    assert_array_equal(np.asarray(emb["weight"]), sd["emb.weight"])
    assert call["meta"]["vocab"] == list("abcdefghijk")
    assert call["meta"]["embedding"] == "emb" and call["meta"]["tensors"]["emb.weight"] == [11, 5]
    assert summary["embedding"] == dict(name="emb", vocab_size=11, width=5)
    assert summary["vocab"] == list("abcdefghijk")
    assert summary["tensors"][0] == "emb.weight" and summary["unused"] == []
    assert summary["parameters"] == sum(v.size for v in sd.values())
    for fold in (True, False):
        build_image(sd, fold_embedding=fold)
        assert recorder.calls[-1]["embedding"]["fold"] is fold
    # No embedding: image_from_layers is called as before (no embedding keyword).
    build_image(sd, embedding=False)
    assert "embedding" not in recorder.calls[-1]
    _, summary = build_image(sd, embedding=False)
    assert summary["embedding"] is None and summary["unused"] == ["emb.weight", "fc.weight", "fc.bias"]
    with pytest.raises(grulite.GruliteError, match="fold_embedding=True, but the model has no embedding"):
        build_image(sd, embedding=False, fold_embedding=True)
    with pytest.raises(grulite.GruliteError, match="fold_embedding must be"):
        build_image(sd, fold_embedding="yes")


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_unused_tensors_listed_in_every_format_contract(tmp_path, recorder, fmt):
    """A seq2seq file converted for its decoder: the encoder's embedding and
    GRU, and the Linear not given to head, are listed as unused."""
    rng = np.random.default_rng(6)
    sd = {"encoder.embedding.weight": emb_table(rng, 30, 8), **gru_state(rng, 8, 6, prefix="encoder.gru."),
          "decoder.embedding.weight": emb_table(rng, 20, 8), **gru_state(rng, 8, 6, prefix="decoder.gru."),
          **linear_state(rng, 6, 20, name="decoder.out"), **linear_state(rng, 6, 2, name="aux")}
    path = WRITERS[fmt](tmp_path / ("m" + by_name(fmt).extensions[0]), sd)
    _, summary = by_name(fmt).image(path, prefix="decoder.gru", head="decoder.out:softmax")
    assert summary["embedding"]["name"] == "decoder.embedding"
    want = ["encoder.embedding.weight", "encoder.gru.weight_ih_l0", "encoder.gru.weight_hh_l0",
            "encoder.gru.bias_ih_l0", "encoder.gru.bias_hh_l0", "aux.weight", "aux.bias"]
    assert sorted(summary["unused"]) == sorted(want)
    assert sorted(summary["tensors"] + summary["unused"]) == sorted(sd)
    # embedding=False: the decoder's embedding joins them.
    _, summary = by_name(fmt).image(path, prefix="decoder.gru", head="decoder.out:softmax",
                                    embedding=False)
    assert sorted(summary["unused"]) == sorted(want + ["decoder.embedding.weight"])


def test_vocab_checks(tmp_path, recorder):
    rng = np.random.default_rng(7)
    sd = {"emb.weight": emb_table(rng, 4, 5), **gru_state(rng, 5, 4)}
    _vocab.write_vocab(tmp_path / "v.txt", ["a", " ", "\n", "\\"])
    _, summary = build_image(sd, vocab=tmp_path / "v.txt")
    assert summary["vocab"] == ["a", " ", "\n", "\\"]
    _, summary = build_image(sd, vocab=str(tmp_path / "v.txt"))
    assert recorder.calls[-1]["meta"]["vocab"] == ["a", " ", "\n", "\\"]
    with pytest.raises(grulite.GruliteError, match=r"vocab has 3 tokens; the embedding 'emb' has 4 rows"):
        build_image(sd, vocab=["a", "b", "c"])
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(grulite.GruliteError, match=r"short\.txt' has 2 tokens; the embedding 'emb' has 4"):
        build_image(sd, vocab=tmp_path / "short.txt")
    with pytest.raises(grulite.GruliteError, match="the model has no embedding"):
        build_image(sd, embedding=False, vocab=["a", "b", "c", "d"])
    with pytest.raises(grulite.GruliteError, match="token 2 is a int"):
        build_image(sd, vocab=["a", "b", 3, "d"])
    with pytest.raises(FileNotFoundError):
        build_image(sd, vocab=tmp_path / "missing.txt")


# ---------------------------------------------------------------------------
# the embedding end to end (needs the embedding layer in the C core)


def test_charlm_fixture_embedding_matches_torch():
    f = fixture("charlm.npz")
    m = grulite.from_state_dict(model_part(f), head="fc:none")
    emb = m.config.embedding
    assert (emb["vocab_size"], emb["width"]) == (37, 24) if isinstance(emb, dict) else emb
    y, h_n = m(f["in_tokens"], lengths=f["in_lengths"])
    assert max_err(y, f["ref_y"]) <= REF_TOL
    assert max_err(h_n, f["ref_h_n"]) <= REF_TOL
    assert max_err(m.predict(f["in_tokens"], lengths=f["in_lengths"]), f["ref_logits_last"]) <= 1e-4
    assert m.metadata["embedding"] == "emb"


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_seq2seq_file_encoder_and_decoder_pick_their_embeddings(tmp_path, fmt):
    """The whole seq2seq file (both GRUs, both embeddings), loaded twice by
    prefix: each side finds its own embedding; greedy decoding from the
    encoder's state gives torch's tokens."""
    f = fixture("seq2seq.npz")
    path = WRITERS[fmt](tmp_path / ("m" + by_name(fmt).extensions[0]), model_part(f))
    enc = READERS[fmt](path, prefix="enc")
    dec = READERS[fmt](path, prefix="dec", head="out:none")
    assert enc.metadata["embedding"] == "enc_emb" and dec.metadata["embedding"] == "dec_emb"
    assert enc.config.embedding["vocab_size"] == 30 and dec.config.embedding["vocab_size"] == 28
    _, h_n = enc(f["in_src"], lengths=f["in_src_lengths"])
    assert max_err(h_n, f["ref_enc_h_n"]) <= REF_TOL
    B = len(f["in_src"])
    out = dec.generate(start=[int(f["in_start"])] * B, h0=h_n, stop=int(f["in_stop"]),
                       max_steps=int(f["in_max_steps"]))
    want = [list(r[:n]) for r, n in zip(f["ref_dec"], f["ref_dec_len"])]
    assert [list(map(int, o)) for o in out] == want


@pytest.mark.parametrize("fold", [None, True, False])
@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_embedding_from_every_format(tmp_path, fmt, fold):
    f = fixture("charlm.npz")
    sd = model_part(f)
    path = WRITERS[fmt](tmp_path / ("m" + by_name(fmt).extensions[0]), sd)
    vocab = [f"t{i}" for i in range(37)]
    m = READERS[fmt](path, head="fc:softmax", fold_embedding=fold, vocab=vocab)
    assert m.metadata["vocab"] == vocab
    y, _ = m(f["in_tokens"], lengths=f["in_lengths"])
    assert max_err(y, f["ref_y"]) <= REF_TOL
    if fold is not None:
        folded = m.config.embedding["folded"] if isinstance(m.config.embedding, dict) \
            else m.config.embedding.folded
        assert folded is fold


def test_from_arrays_with_embedding_equals_from_state_dict():
    f = fixture("charlm.npz")
    sd = model_part(f)
    layers = [{k: sd[f"gru.{k}_l{i}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
              for i in range(2)]
    m = grulite.from_arrays(layers, embedding=sd["emb.weight"],
                            head=[(sd["fc.weight"], sd["fc.bias"], "softmax")])
    ref = grulite.from_state_dict(sd, head="fc:softmax")
    x = f["in_tokens"]
    assert_array_equal(m.predict(x, lengths=f["in_lengths"]), ref.predict(x, lengths=f["in_lengths"]))
    y, _ = m(x, lengths=f["in_lengths"])
    assert max_err(y, f["ref_y"]) <= REF_TOL


# ---------------------------------------------------------------------------
# from_arrays


def _arrays_from_sd(sd: dict, prefix: str, num_layers: int, bidirectional: bool) -> list:
    layers = []
    for k in range(num_layers):
        lay = {}
        for sfx in ("", "_reverse")[:2 if bidirectional else 1]:
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                key = f"{prefix}{name}_l{k}{sfx}"
                if key in sd:
                    lay[name + sfx] = sd[key]
        layers.append(lay)
    return layers


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_from_arrays_matches_the_reference(bidirectional, bias):
    rng = np.random.default_rng(8)
    sd = gru_state(rng, 3, 5, layers=2, bidirectional=bidirectional, bias=bias)
    D = 2 if bidirectional else 1
    head_w = rng.standard_normal((4, D * 5)).astype(np.float32)
    head_b = rng.standard_normal(4).astype(np.float32)
    layers = _arrays_from_sd(sd, "gru.", 2, bidirectional)
    m = grulite.from_arrays(layers, head=[(head_w, head_b, "softmax")], reset_after=[True, False])
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    ref_layers = [[dict(w_ih=lay[f"weight_ih{s}"], w_hh=lay[f"weight_hh{s}"],
                        b_ih=lay.get(f"bias_ih{s}"), b_hh=lay.get(f"bias_hh{s}"))
                   for s in ("", "_reverse")[:D]] for lay in layers]
    y_ref, hn_ref = ref_gru(ref_layers, x, lengths=lengths, reset_after=[True, False])
    y, h_n = m(x, lengths=lengths)
    assert max_err(y, y_ref) <= REF_TOL
    assert max_err(h_n, np.concatenate(hn_ref)) <= REF_TOL
    want = ref_head(last_step(y_ref, lengths), [(head_w, head_b, "softmax")])
    assert max_err(m.predict(x, lengths=lengths), want) <= REF_TOL
    assert [l.reset_after for l in m.config.layers] == [True, False]
    assert m.config.bidirectional == bidirectional and m.config.layers[0].bias == bias
    # The same model as from_state_dict of the same weights.
    same = grulite.from_state_dict(sd, reset_after=[True, False])
    assert_array_equal(same(x)[0], grulite.from_arrays(layers, reset_after=[True, False])(x)[0])


def test_from_arrays_takes_torch_tensors_and_options():
    torch = pytest.importorskip("torch")
    torch.manual_seed(9)
    gru = torch.nn.GRU(4, 6, batch_first=False)
    fc = torch.nn.Linear(6, 2, bias=False)
    layers = [{k: getattr(gru, f"{k}_l0") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}]
    m = grulite.from_arrays(layers, head=[(fc.weight, None, "none")], batch_first=False, dtype="float16")
    assert not m.config.batch_first and m.config.dtype == "float16"
    assert m.config.head[0].bias is False
    x = torch.randn(7, 2, 4)
    with torch.no_grad():
        y, _ = gru(x)
        out = fc(y[-1])
    assert max_err(m.predict(x), out.numpy()) <= 1e-2           # float16 weights


def _layer(rng, I, H, bias=True, reverse=False):
    lay = {"weight_ih": rng.standard_normal((3 * H, I)).astype(np.float32),
           "weight_hh": rng.standard_normal((3 * H, H)).astype(np.float32)}
    if bias:
        lay["bias_ih"] = np.zeros(3 * H, np.float32)
        lay["bias_hh"] = np.zeros(3 * H, np.float32)
    if reverse:
        lay.update({k + "_reverse": v.copy() for k, v in list(lay.items())})
    return lay


def test_from_arrays_shape_errors_name_the_layer_and_array():
    rng = np.random.default_rng(10)
    good = [_layer(rng, 3, 4), _layer(rng, 4, 5)]
    E = grulite.GruliteError

    def bad(k, **change):
        layers = [dict(lay) for lay in good]
        for key, v in change.items():
            if v is None:
                layers[k].pop(key)
            else:
                layers[k][key] = v
        return layers

    cases = [
        (bad(0, weight_hh=np.zeros((12, 5), np.float32)),
         r"layers\[0\]\['weight_hh'\] has shape \(12, 5\); expected \('3\*hidden_size', 'hidden_size'\)"),
        (bad(1, weight_ih=np.zeros((15, 3), np.float32)),
         r"layers\[1\]\['weight_ih'\] has shape \(15, 3\); expected \(15, 4\) \(hidden_size=5; its "
         r"input is layer 0's output, width 4\)"),
        (bad(0, weight_ih=np.zeros((11, 3), np.float32)),
         r"layers\[0\]\['weight_ih'\] has shape \(11, 3\); expected \(12, 'input_size'\)"),
        (bad(1, bias_hh=None), r"layers\[1\] has 'bias_ih' but not 'bias_hh'"),
        (bad(0, bias_ih=np.zeros(5, np.float32)),
         r"layers\[0\]\['bias_ih'\] has shape \(5,\); expected \(12,\)"),
        (bad(0, weight_ih=None), r"layers\[0\]\['weight_ih'\] is missing"),
        (bad(0, w_ih=np.zeros(3)), r"layers\[0\] has unknown keys 'w_ih'"),
        (bad(1, weight_ih_reverse=np.zeros((15, 4), np.float32)),
         r"layers\[1\]\['weight_hh_reverse'\] is missing \(a second direction needs"),
        (bad(0, weight_ih=np.array([["a"]])), r"layers\[0\]\['weight_ih'\].*dtype"),
    ]
    for layers, pattern in cases:
        with pytest.raises(E, match=pattern):
            grulite.from_arrays(layers)
    # A reverse direction with biases unlike the forward one's.
    lay = _layer(rng, 3, 4, reverse=True)
    del lay["bias_ih_reverse"], lay["bias_hh_reverse"]
    with pytest.raises(E, match=r"layers\[0\]: the forward direction has biases and the reverse has none"):
        grulite.from_arrays([lay])
    # Layer 1 after a bidirectional layer 0 reads 2H.
    with pytest.raises(E, match=r"expected \(15, 8\) \(hidden_size=5; its input is layer 0's output, width 8\)"):
        grulite.from_arrays([_layer(rng, 3, 4, reverse=True), _layer(rng, 4, 5)])
    # The head.
    w = np.zeros((2, 5), np.float32)
    with pytest.raises(E, match=r"head\[0\] weight has shape \(2, 4\); expected \('out_features', 5\)"):
        grulite.from_arrays(good, head=[(np.zeros((2, 4), np.float32), None, "none")])
    with pytest.raises(E, match=r"head\[1\] weight has shape \(3, 3\); expected \('out_features', 2\)"):
        grulite.from_arrays(good, head=[(w, None, "relu"), (np.zeros((3, 3), np.float32), None, "none")])
    with pytest.raises(E, match=r"head\[0\] bias has shape \(3,\); expected \(2,\)"):
        grulite.from_arrays(good, head=[(w, np.zeros(3, np.float32), "none")])
    with pytest.raises(E, match=r"head\[0\]: unknown activation 'gelu'"):
        grulite.from_arrays(good, head=[(w, None, "gelu")])
    with pytest.raises(E, match=r"head\[0\] must be \(weight, bias or None, activation\)"):
        grulite.from_arrays(good, head=[(w, "softmax")])
    # Arguments as a whole.
    with pytest.raises(E, match="reset_after has 3 entries; there are 2 layers"):
        grulite.from_arrays(good, reset_after=[True, True, False])
    with pytest.raises(E, match="layers is empty"):
        grulite.from_arrays([])
    with pytest.raises(E, match=r"layers\[1\] is a str"):
        grulite.from_arrays([good[0], "gru"])
    with pytest.raises(E, match="layers must be a list"):
        grulite.from_arrays(good[0])
    # The embedding: a 2-D table whose width is layer 0's input.
    with pytest.raises(E, match=r"embedding has shape \(7,\); expected a 2-D \(vocab_size, width\) table"):
        grulite.from_arrays(good, embedding=np.zeros(7, np.float32))
    with pytest.raises(E, match=r"layers\[0\]\['weight_ih'\] has shape \(12, 3\); expected \(12, 6\) "
                                r"\(hidden_size=4; its input is the embedding's width 6\)"):
        grulite.from_arrays(good, embedding=np.zeros((9, 6), np.float32))
    with pytest.raises(E, match="the model has no embedding"):
        grulite.from_arrays(good, vocab=["a", "b"])
    with pytest.raises(E, match="vocab has 2 tokens; the embedding 'embedding' has 9 rows"):
        grulite.from_arrays(good, embedding=np.zeros((9, 3), np.float32), vocab=["a", "b"])


def test_from_arrays_unknown_dtype():
    rng = np.random.default_rng(11)
    with pytest.raises(grulite.GruliteError, match="float64"):
        grulite.from_arrays([_layer(rng, 3, 4)], dtype="float64")


# ---------------------------------------------------------------------------
# vocabulary files


def test_vocab_round_trip_with_escapes(tmp_path):
    tokens = ["\n", " ", "\t", "\r", "\\", "\\n", "a b", "é", "<eos>", "x\\sy", "s"]
    path = tmp_path / "v.txt"
    _vocab.write_vocab(path, tokens)
    text = path.read_text(encoding="utf-8")
    assert text.split("\n")[:6] == ["\\n", "\\s", "\\t", "\\r", "\\\\", "\\\\n"]
    assert "\\s" in text.split("\n")[6] and text.endswith("s\n")
    assert _vocab.read_vocab(path) == tokens
    assert _vocab.read_vocab(str(path)) == tokens


def test_vocab_file_forms(tmp_path):
    p = tmp_path / "v.txt"
    p.write_bytes(b"a\r\nb\r\n\\s\r\n")                              # CRLF
    assert _vocab.read_vocab(p) == ["a", "b", " "]
    p.write_bytes(b"\xef\xbb\xbfa\nb")                              # BOM, no final newline
    assert _vocab.read_vocab(p) == ["a", "b"]
    p.write_text("hello world\nx\n", encoding="utf-8")                # a literal space is kept
    assert _vocab.read_vocab(p) == ["hello world", "x"]


@pytest.mark.parametrize("data, pattern", [
    (b"a\n\nb\n", r"line 2 is empty"),
    (b"a\nb\n\n", r"line 3 is empty"),
    (b"", r"is empty; expected one token per line"),
    (b"a\n\\q\n", r"line 2: unknown escape \\q"),
    (b"a\nb\\\n", r"line 2: a lone backslash"),
    (b"a\n\xff\n", r"line 2 is not UTF-8"),
    (b"a\nb\na\n", r"token 'a' appears twice, as ids 0 and 2"),
])
def test_vocab_file_errors(tmp_path, data, pattern):
    p = tmp_path / "bad.txt"
    p.write_bytes(data)
    with pytest.raises(grulite.GruliteError, match=pattern) as e:
        _vocab.read_vocab(p)
    assert "bad.txt" in str(e.value)
    with pytest.raises(FileNotFoundError):
        _vocab.read_vocab(tmp_path / "missing.txt")


def test_encode_decode_characters_and_words():
    chars = list("ab \n")
    assert _vocab.is_char_vocab(chars)
    assert _vocab.encode("ab a\n", chars) == [0, 1, 2, 0, 3]
    assert _vocab.decode([0, 1, 2, 0, 3], chars) == "ab a\n"
    with pytest.raises(grulite.GruliteError, match=r"characters not in the vocabulary \(4 tokens\): 'c', 'Z'"):
        _vocab.encode("abcZc", chars)
    words = ["<eos>", "the", "cat", "sat"]
    assert not _vocab.is_char_vocab(words)
    assert _vocab.encode("the  cat\nsat", words) == [1, 2, 3]
    assert _vocab.decode([1, 2, 3, 0], words) == "the cat sat <eos>"
    with pytest.raises(grulite.GruliteError, match=r"words not in the vocabulary \(4 tokens\): 'dog'"):
        _vocab.encode("the dog sat", words)
    with pytest.raises(grulite.GruliteError, match=r"token id 4 is outside the vocabulary \(ids 0\.\.3\)"):
        _vocab.decode([1, 4], words)
    assert _vocab.decode(np.array([3, 2], np.int64), words) == "sat cat"
    assert _vocab.encode("", chars) == []


def test_unescape_token():
    assert _vocab.unescape_token("\\n") == "\n"
    assert _vocab.unescape_token("a\\sb\\\\") == "a b\\"
    assert _vocab.escape_token("a b\\\n") == "a\\sb\\\\\\n"
    with pytest.raises(grulite.GruliteError, match=r"--stop: unknown escape \\x"):
        _vocab.unescape_token("\\x", "--stop")


def test_character_vocab_with_special_tokens():
    """A seq2seq character vocabulary with <sos> / <eos>: text still splits
    into characters, a special token written out counts as one."""
    from grulite._vocab import decode, encode, is_char_vocab

    v = list("abc ") + ["<sos>", "<eos>"]
    assert is_char_vocab(v)
    assert encode("ab c<eos>", v) == [0, 1, 3, 2, 5]
    assert decode([4, 0, 5], v) == "<sos>a<eos>"
    assert encode("<a", list("<a")) == [0, 1]
    assert not is_char_vocab(["hello", "a"])


def test_special_tokens_that_overlap_encode_without_error():
    """Found by the vocab fuzz target: with '<s>>' and '<s>' + '>' in one
    vocabulary, text is ambiguous; encode takes the longest special token
    and does not fail."""
    from grulite._vocab import decode, encode

    v = ["<os>", "<s>>", "<s>", ">"]
    text = decode([0, 1, 2, 3], v)
    assert text == "<os><s>><s>>"
    assert encode(text, v) == [0, 1, 1]
