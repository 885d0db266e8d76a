"""The command line for token models (issue 15): `grulite convert` with an
embedding and --vocab, `grulite info` showing them, `grulite generate`
(greedy output against torch's, from the committed fixture
tests/fixtures/generate/charlm.npz) and `grulite demo --text`.  Each
subcommand runs as `python -m grulite ...` in a child process."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import grulite
from conftest import FIXTURE_DIR
from grulite import _vocab
from helpers_format import child_env
from support.models import gru_state, linear_state

GEN_DIR = os.path.join(FIXTURE_DIR, "generate")
DATA_DIR = os.path.join(os.path.dirname(grulite.__file__), "data")

# A character vocabulary for charlm.npz (37 ids): id 3, the fixture's stop
# token, is the newline; the prompts use ids 4..36.
CHARLM_VOCAB = ["~", "^", "|", "\n"] + list("abcdefghijklmnopqrstuvwxyz") + list(" .,!?'-")


def cli(*args, cwd, expect=0):
    """Runs `python -m grulite *args` in `cwd`; checks the exit status."""
    p = subprocess.run([sys.executable, "-m", "grulite", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, env=child_env(), timeout=120,
                       encoding="utf-8")
    if expect is not None:
        assert p.returncode == expect, (args, p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture(scope="module")
def charlm(tmp_path_factory):
    """charlm.npz copied to a directory with its vocabulary (vocab.txt), the
    fixture's arrays, and its prompts as text."""
    src = os.path.join(GEN_DIR, "charlm.npz")
    if not os.path.exists(src):
        pytest.skip("fixture charlm.npz not generated yet (tools/make_generate_fixtures.py)")
    d = tmp_path_factory.mktemp("charlm")
    shutil.copy(src, d / "charlm.npz")
    _vocab.write_vocab(d / "vocab.txt", CHARLM_VOCAB)
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    prompts = [_vocab.decode([t for t in row if t >= 0], CHARLM_VOCAB) for row in arrays["in_prompts"]]
    return dict(dir=d, arrays=arrays, prompts=prompts)


@pytest.fixture(scope="module")
def charlm_grl(charlm):
    """charlm.grl: converted with --head fc:softmax --vocab vocab.txt."""
    d = charlm["dir"]
    path = d / "charlm.grl"
    if not path.exists():
        cli("convert", "charlm.npz", "-o", "charlm.grl", "--head", "fc:softmax", "--vocab",
            "vocab.txt", cwd=d)
    return path


def _ref_rows(arrays, key, lengths=None) -> list:
    rows = arrays[key]
    return [list(map(int, r[:n] if lengths is not None else r[r >= 0]))
            for r, n in zip(rows, lengths if lengths is not None else [None] * len(rows))]


# ---- help and argument errors (no embedding in the core needed) ----------------------

def test_generate_help_shows_an_example(tmp_path):
    p = cli("generate", "--help", cwd=tmp_path)
    assert "usage: grulite generate" in p.stdout and "example:" in p.stdout
    assert re.search(r"^\s+grulite generate \S+ --prompt", p.stdout, re.M)
    for flag in ("--prompt", "--max-steps", "--stop", "--sample", "--temperature", "--top-k",
                 "--top-p", "--seed"):
        assert flag in p.stdout
    p = cli("--help", cwd=tmp_path)
    assert "generate" in p.stdout and "grulite generate" in p.stdout
    p = cli("convert", "--help", cwd=tmp_path)
    for flag in ("--embedding", "--no-embedding", "--fold-embedding", "--vocab"):
        assert flag in p.stdout
    p = cli("demo", "--help", cwd=tmp_path)
    assert "--text" in p.stdout and "grulite demo --text" in p.stdout


def test_generate_refuses_a_model_without_vocabulary(tmp_path):
    rng = np.random.default_rng(0)
    grulite.from_state_dict({**gru_state(rng, 3, 4), **linear_state(rng, 4, 3)},
                            head="fc:softmax").save(tmp_path / "plain.grl")
    p = cli("generate", "plain.grl", "--prompt", "abc", cwd=tmp_path, expect=1)
    assert p.stderr.startswith("grulite: error:")
    assert "plain.grl has no vocabulary" in p.stderr and "--vocab" in p.stderr
    # Sampling options without --sample: said before anything is loaded.
    p = cli("generate", "plain.grl", "--prompt", "abc", "--temperature", "0.5", "--seed", "3",
            cwd=tmp_path, expect=1)
    assert "--temperature, --seed apply to sampling: add --sample" in p.stderr
    p = cli("generate", "missing.grl", "--prompt", "a", cwd=tmp_path, expect=1)
    assert "missing.grl" in p.stderr


def test_convert_embedding_options_errors(tmp_path, charlm):
    d = charlm["dir"]
    p = cli("convert", d / "charlm.npz", "-o", "x.grl", "--embedding", "decoder.emb",
            cwd=tmp_path, expect=1)
    assert "no tensor 'decoder.emb.weight'" in p.stderr and "emb 37 x 24" in p.stderr
    p = cli("convert", d / "charlm.npz", "-o", "x.grl", "--no-embedding", "--vocab",
            d / "vocab.txt", cwd=tmp_path, expect=1)
    assert "no embedding" in p.stderr
    p = cli("convert", d / "charlm.npz", "-o", "x.grl", "--no-embedding", "--fold-embedding",
            "yes", cwd=tmp_path, expect=1)
    assert "fold_embedding=True, but the model has no embedding" in p.stderr
    p = cli("convert", d / "charlm.npz", "-o", "x.grl", "--embedding", "emb", "--no-embedding",
            cwd=tmp_path, expect=2)                           # argparse: mutually exclusive
    assert "not allowed with" in p.stderr
    (tmp_path / "short.txt").write_text("a\nb\n", encoding="utf-8")
    p = cli("convert", d / "charlm.npz", "-o", "x.grl", "--vocab", "short.txt", cwd=tmp_path, expect=1)
    assert "has 2 tokens; the embedding 'emb' has 37 rows" in p.stderr
    (tmp_path / "gap.txt").write_text("a\n\nb\n", encoding="utf-8")
    p = cli("convert", d / "charlm.npz", "-o", "x.grl", "--vocab", "gap.txt", cwd=tmp_path, expect=1)
    assert "gap.txt" in p.stderr and "line 2 is empty" in p.stderr
    assert not (tmp_path / "x.grl").exists()


def test_convert_without_the_embedding_lists_it_as_unused(tmp_path, charlm):
    p = cli("convert", charlm["dir"] / "charlm.npz", "-o", "x.grl", "--no-embedding",
            "--head", "fc:none", cwd=tmp_path)
    assert "embedding:" not in p.stdout
    note = p.stderr
    assert note.startswith("grulite: note:")
    listed = re.search(r"not in the model: (.*) \(a Linear", note).group(1).split(", ")
    want = ["emb.weight"] + sorted(k for k in charlm["arrays"] if k.startswith(("in_", "ref_")))
    assert sorted(listed) == sorted(want)
    m = grulite.load(tmp_path / "x.grl")
    assert m.config.input_size == 24 and getattr(m.config, "embedding", None) is None


# ---- convert, info with an embedding (needs the embedding layer in the core) -----------

def test_convert_reports_the_embedding_and_vocab(tmp_path, charlm):
    d = charlm["dir"]
    p = cli("convert", d / "charlm.npz", "-o", "lm.grl", "--head", "fc:softmax", "--vocab",
            d / "vocab.txt", cwd=tmp_path)
    out = p.stdout
    assert "found a GRU under prefix 'gru' in charlm.npz:" in out
    assert re.search(r"^  embedding: emb \(37 tokens x 24\), (folded into layer 0|kept as a lookup "
                     r"table)$", out, re.M), out
    assert "  vocab: 37 tokens (characters), from vocab.txt" in out
    n_params = sum(v.size for k, v in charlm["arrays"].items() if not k.startswith(("in_", "ref_")))
    assert f"{n_params:,} parameters" in out
    listed = re.search(r"not in the model: (.*) \(a Linear", p.stderr).group(1).split(", ")
    assert sorted(listed) == sorted(k for k in charlm["arrays"] if k.startswith(("in_", "ref_")))
    m = grulite.load(tmp_path / "lm.grl")
    assert m.metadata["vocab"] == CHARLM_VOCAB and m.metadata["embedding"] == "emb"
    # The same file as the API makes.
    api = grulite.from_npz(d / "charlm.npz", head="fc:softmax", vocab=d / "vocab.txt")
    assert (tmp_path / "lm.grl").read_bytes() == api.to_bytes()


@pytest.mark.parametrize("fold, shown", [("yes", "folded into layer 0"),
                                         ("no", "kept as a lookup table")])
def test_convert_fold_embedding_and_info(tmp_path, charlm, fold, shown):
    d = charlm["dir"]
    p = cli("convert", d / "charlm.npz", "-o", "lm.grl", "--head", "fc:softmax", "--vocab",
            d / "vocab.txt", "--fold-embedding", fold, cwd=tmp_path)
    assert f"embedding: emb (37 tokens x 24), {shown}" in p.stdout
    p = cli("info", "lm.grl", cwd=tmp_path)
    assert re.search(rf"^  embedding: emb \(37 tokens x 24\), {shown}", p.stdout, re.M), p.stdout
    assert "  vocab: 37 tokens (characters)" in p.stdout
    assert "vocab: [37 tokens]" in p.stdout                       # the metadata line, shortened
    p = cli("info", "lm.grl", "--json", cwd=tmp_path)
    assert json.loads(p.stdout)["metadata"]["vocab"] == CHARLM_VOCAB


# ---- generate ---------------------------------------------------------------------

def test_generate_greedy_equals_torch(tmp_path, charlm, charlm_grl):
    """Four prompts of different lengths in one batch, stop token 3 (the
    newline): the tokens of torch's greedy loop, row by row."""
    a = charlm["arrays"]
    args = ["generate", charlm_grl, "--max-steps", int(a["in_max_steps"]), "--stop", "\\n", "--json"]
    for text in charlm["prompts"]:
        args += ["--prompt", text]
    rows = json.loads(cli(*args, cwd=tmp_path).stdout)
    want = _ref_rows(a, "ref_greedy", a["ref_greedy_len"])
    assert [r["ids"] for r in rows] == want
    for r, text, ids in zip(rows, charlm["prompts"], want):
        assert r["prompt"] == text
        assert r["completion"] == _vocab.decode(ids, CHARLM_VOCAB)
        assert r["text"] == text + r["completion"]
    # Without a stop token: max_steps tokens each.
    args = ["generate", charlm_grl, "--max-steps", int(a["in_max_steps"]), "--json"]
    for text in charlm["prompts"]:
        args += ["--prompt", text]
    rows = json.loads(cli(*args, cwd=tmp_path).stdout)
    assert [r["ids"] for r in rows] == _ref_rows(a, "ref_greedy_nostop")


def test_generate_prints_prompt_and_continuation(tmp_path, charlm, charlm_grl):
    a = charlm["arrays"]
    text = charlm["prompts"][1]
    p = cli("generate", charlm_grl, "--prompt", text, "--max-steps", 12, "--stop", "\\n",
            cwd=tmp_path)
    want = text + _vocab.decode(_ref_rows(a, "ref_greedy", a["ref_greedy_len"])[1], CHARLM_VOCAB)
    assert p.stdout == want + "\n"
    # Several prompts: one block each, a blank line between.
    p = cli("generate", charlm_grl, "--prompt", text, "--prompt", text, "--max-steps", 12,
            "--stop", "\\n", cwd=tmp_path)
    assert p.stdout == want + "\n\n" + want + "\n"


def test_generate_sampling_is_reproducible(tmp_path, charlm, charlm_grl):
    text = charlm["prompts"][0]
    base = ["generate", charlm_grl, "--prompt", text, "--max-steps", 20, "--sample", "--json"]
    one = json.loads(cli(*base, "--seed", 5, "--temperature", 0.7, cwd=tmp_path).stdout)
    two = json.loads(cli(*base, "--seed", 5, "--temperature", 0.7, cwd=tmp_path).stdout)
    assert one == two and len(one[0]["ids"]) == 20
    # top-k 1 is greedy.
    greedy = json.loads(cli("generate", charlm_grl, "--prompt", text, "--max-steps", 20, "--json",
                            cwd=tmp_path).stdout)
    topk1 = json.loads(cli(*base, "--seed", 9, "--top-k", 1, cwd=tmp_path).stdout)
    assert topk1[0]["ids"] == greedy[0]["ids"]


def test_generate_errors(tmp_path, charlm_grl):
    p = cli("generate", charlm_grl, "--prompt", "hello WORLD#", cwd=tmp_path, expect=1)
    assert "prompt 'hello WORLD#'" in p.stderr
    assert "characters not in the vocabulary (37 tokens): 'W', 'O', 'R', 'L', 'D', '#'" in p.stderr
    p = cli("generate", charlm_grl, "--prompt", "", cwd=tmp_path, expect=1)
    assert "has no tokens" in p.stderr
    p = cli("generate", charlm_grl, "--prompt", "abc", "--stop", "Z", cwd=tmp_path, expect=1)
    assert "--stop 'Z'" in p.stderr and "not in the vocabulary" in p.stderr
    p = cli("generate", charlm_grl, "--prompt", "abc", "--stop", "\\q", cwd=tmp_path, expect=1)
    assert "unknown escape \\q" in p.stderr
    p = cli("generate", charlm_grl, "--prompt", "abc", "--sample", "--temperature", "0",
            cwd=tmp_path, expect=1)
    assert p.stderr.startswith("grulite: error:") and "temperature" in p.stderr


# ---- the generative demo --------------------------------------------------------------

def test_demo_text(tmp_path):
    src = os.path.join(DATA_DIR, "zen_charlm.npz")
    if not (os.path.exists(src) and os.path.exists(os.path.join(DATA_DIR, "zen_vocab.txt"))):
        pytest.skip("the generative demo's model is not bundled yet (src/grulite/data/zen_charlm.npz)")
    p = cli("demo", "--text", cwd=tmp_path)
    out = p.stdout
    assert os.listdir(tmp_path) == []                 # writes nothing where it runs
    assert re.search(r"embedding: emb \(\d+ tokens x \d+\)", out)
    vocab = _vocab.read_vocab(os.path.join(DATA_DIR, "zen_vocab.txt"))
    lines = re.findall(r"^  (Beautiful is|Errors should|Now is)\|(.*)$", out, re.M)
    assert [prompt for prompt, _ in lines] == ["Beautiful is", "Errors should", "Now is"]
    # The first continuation is torch's greedy text up to the newline.
    with np.load(src) as f:
        if "ref_greedy" in f.files and "in_prompt" in f.files:
            assert _vocab.decode(f["in_prompt"][0], vocab) == "Beautiful is"
            ref = _vocab.decode(f["ref_greedy"][0], vocab).split("\n")[0]
            assert lines[0][1] == ref[:80]
    assert "Sampled" in out
    # Reproducible: the same seed, the same text.
    assert cli("demo", "--text", cwd=tmp_path).stdout.split("Sampled")[1] == out.split("Sampled")[1]


def test_convert_learned_h0_and_seed_update_gate(tmp_path):
    """--h0 stores a learned initial state; --update-gate seed maps weights
    written for h' = (1 - z)*h + z*n; both show in the model."""
    rng = np.random.default_rng(3)
    sd = {"gru.weight_ih_l0": rng.standard_normal((12, 3)).astype(np.float32),
          "gru.weight_hh_l0": rng.standard_normal((12, 4)).astype(np.float32),
          "start": rng.standard_normal((1, 1, 4)).astype(np.float32)}
    np.savez(tmp_path / "m.npz", **sd)
    out = cli("convert", "m.npz", "-o", "m.grl", "--h0", "start", "--update-gate", "seed",
              cwd=tmp_path)
    assert "learned h0" in out.stdout, out.stdout
    m = grulite.load(tmp_path / "m.grl")
    assert m.config.layers[0].h0 and m.metadata["update_gate"] == "seed"
    ref = grulite.from_state_dict(sd, h0="start", update_gate="seed")
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(m(x)[0], ref(x)[0])
    bad = cli("convert", "m.npz", "-o", "n.grl", "--h0", "missing", cwd=tmp_path, expect=1)
    assert "no tensor 'missing'" in bad.stderr
