"""The command line, each subcommand run as `python -m grulite ...` in a
child process (cwd a temporary directory, PYTHONPATH kept), its results
compared with the Python API run in this process."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from helpers_format import child_env
from support.models import gru_state, linear_state

SUBCOMMANDS = ["convert", "info", "run", "bench", "demo"]


def cli(*args, cwd, expect=0):
    """Runs `python -m grulite *args` in `cwd`; checks the exit status."""
    p = subprocess.run([sys.executable, "-m", "grulite", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, env=child_env(), timeout=120)
    if expect is not None:
        assert p.returncode == expect, (args, p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Weights (.npz) and converted models (.grl) in one directory:
    head.npz/.grl (GRU + Linear head), nohead.npz/.grl (2-layer
    bidirectional GRU), two.npz (two GRUs)."""
    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    head_sd = {**gru_state(rng, 5, 7), **linear_state(rng, 7, 3)}
    nohead_sd = gru_state(rng, 4, 6, layers=2, bidirectional=True, prefix="rnn.")
    two_sd = {**gru_state(rng, 3, 4, prefix="encoder.gru."),
              **gru_state(rng, 6, 5, layers=2, prefix="decoder.gru.")}
    np.savez(d / "head.npz", **head_sd)
    np.savez(d / "nohead.npz", **nohead_sd)
    np.savez(d / "two.npz", **two_sd)
    grulite.from_npz(d / "head.npz", head="fc:softmax").save(d / "head.grl")
    grulite.from_npz(d / "nohead.npz").save(d / "nohead.grl")
    return dict(dir=d, head_sd=head_sd, nohead_sd=nohead_sd, two_sd=two_sd)


# ---- help ------------------------------------------------------------------------

def test_help_shows_examples(tmp_path):
    p = cli("--help", cwd=tmp_path)
    assert "usage: grulite" in p.stdout
    assert "example" in p.stdout
    for sub in SUBCOMMANDS:
        assert sub in p.stdout
        assert f"grulite {sub}" in p.stdout      # one example per subcommand
    # No command: the help, exit 0.
    p = cli(cwd=tmp_path)
    assert "usage: grulite" in p.stdout
    p = cli("--version", cwd=tmp_path)
    assert grulite.__version__ in p.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help_shows_an_example(tmp_path, sub):
    p = cli(sub, "--help", cwd=tmp_path)
    assert f"usage: grulite {sub}" in p.stdout
    assert "example:" in p.stdout
    assert re.search(rf"^\s+grulite {sub}\b", p.stdout, re.M), p.stdout


# ---- convert --------------------------------------------------------------------

def test_convert_reports_and_writes_a_loadable_file(tmp_path, models):
    src = models["dir"] / "head.npz"
    p = cli("convert", src, "-o", "out.grl", "--head", "fc:softmax", cwd=tmp_path)
    out = p.stdout
    path = tmp_path / "out.grl"
    m = grulite.load(path)
    assert "prefix 'gru'" in out and "head.npz" in out
    assert re.search(r"layer 0: input\s+5 -> hidden\s+7\s+forward\s+reset_after\s+bias", out), out
    assert "head fc: 7 -> 3, softmax" in out
    n_params = sum(v.size for v in models["head_sd"].values())
    assert f"{n_params:,} parameters" in out
    assert "dtype float32" in out
    size = os.path.getsize(path)
    mo = re.search(r"wrote (\S+) \(([\d.,]+) (B|KiB|MiB), checksum ([0-9a-f]{8})\)", out)
    assert mo, out
    assert mo.group(1) == "out.grl"
    shown = float(mo.group(2).replace(",", ""))
    assert shown == (size if mo.group(3) == "B" else round(size / 1024, 1)), (shown, size)
    assert int(mo.group(4), 16) == m.checksum
    assert m.config.head[0].activation == "softmax"
    # Same model as the API builds.
    assert path.read_bytes() == grulite.from_npz(src, head="fc:softmax").to_bytes()
    # Default output name: the input's, with .grl, in the input's directory.
    src2 = tmp_path / "copy.npz"
    src2.write_bytes(src.read_bytes())
    p = cli("convert", "copy.npz", cwd=tmp_path)
    assert "wrote copy.grl" in p.stdout and "head fc" not in p.stdout
    assert grulite.load(tmp_path / "copy.grl").config.head == ()


def test_convert_bidirectional_no_head_and_options(tmp_path, models):
    p = cli("convert", models["dir"] / "nohead.npz", "-o", "b.grl", "--reset-before",
            "--time-major", cwd=tmp_path)
    assert "prefix 'rnn'" in p.stdout
    assert re.search(r"layer 1: input\s+12 -> hidden\s+6\s+bidirectional\s+reset_before", p.stdout)
    n_params = sum(v.size for v in models["nohead_sd"].values())
    assert f"{n_params:,} parameters" in p.stdout and "time-major" in p.stdout
    c = grulite.load(tmp_path / "b.grl").config
    assert c.bidirectional and not c.batch_first and not c.layers[0].reset_after


def test_convert_ambiguous_file_lists_prefixes(tmp_path, models):
    src = models["dir"] / "two.npz"
    p = cli("convert", src, "-o", "x.grl", cwd=tmp_path, expect=1)
    err = p.stderr
    assert err.startswith("grulite: error:"), err
    assert "'decoder.gru'" in err and "'encoder.gru'" in err
    assert "prefix" in err
    assert not (tmp_path / "x.grl").exists()
    assert p.stdout == ""
    for prefix, I, L in (("decoder.gru", 6, 2), ("encoder.gru.", 3, 1)):
        p = cli("convert", src, "-o", "x.grl", "--prefix", prefix, cwd=tmp_path)
        assert f"prefix '{prefix.rstrip('.')}'" in p.stdout
        m = grulite.load(tmp_path / "x.grl")
        assert (m.config.input_size, m.config.num_layers) == (I, L)
        assert m.metadata["prefix"] == prefix.rstrip(".")
    # A prefix that is not there: the ones that are.
    p = cli("convert", src, "-o", "x.grl", "--prefix", "gru", cwd=tmp_path, expect=1)
    assert "'decoder.gru'" in p.stderr and "'encoder.gru'" in p.stderr


def test_convert_errors_are_messages_not_tracebacks(tmp_path, models):
    p = cli("convert", "missing.npz", "-o", "x.grl", cwd=tmp_path, expect=None)
    assert p.returncode != 0
    assert p.stderr.startswith("grulite: error:") and "missing.npz" in p.stderr
    assert "no such file" in p.stderr.lower()
    # A .pt that is no torch.save archive; an unknown file type.
    (tmp_path / "w.pt").write_bytes(b"\x80\x02")
    p = cli("convert", "w.pt", "-o", "x.grl", cwd=tmp_path, expect=1)
    assert "w.pt" in p.stderr and "torch.save" in p.stderr
    (tmp_path / "w.h5").write_bytes(b"\x89HDF")
    p = cli("convert", "w.h5", "-o", "x.grl", cwd=tmp_path, expect=1)
    assert "'.h5'" in p.stderr and ".npz" in p.stderr and ".onnx" in p.stderr
    # An .npz that is not a zip.
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    p = cli("convert", "bad.npz", "-o", "x.grl", cwd=tmp_path, expect=1)
    assert "bad.npz" in p.stderr
    # A head that is not there: the Linear layers that are.
    p = cli("convert", models["dir"] / "head.npz", "-o", "x.grl", "--head", "out:relu",
            cwd=tmp_path, expect=1)
    assert "'out'" in p.stderr and "fc" in p.stderr
    # An unknown activation.
    p = cli("convert", models["dir"] / "head.npz", "-o", "x.grl", "--head", "fc:gelu",
            cwd=tmp_path, expect=1)
    assert "gelu" in p.stderr and "softmax" in p.stderr
    assert not (tmp_path / "x.grl").exists()


# ---- info ------------------------------------------------------------------------

def test_info_text_and_json(tmp_path, models):
    path = models["dir"] / "head.grl"
    m = grulite.load(path)
    p = cli("info", path, cwd=tmp_path)
    out = p.stdout
    assert f"checksum: ok (CRC-32 {m.checksum:08x}" in out
    assert "input_size 5, 1 layer(s), dtype float32" in out
    assert re.search(r"layer 0: input\s+5 -> hidden\s+7", out)
    assert "head 0: 7 -> 3, softmax" in out
    assert "outputs: y width 7, head 3" in out
    assert "metadata:" in out
    for key in ("converter: grulite", "source: head.npz", "prefix: gru", "tensors:"):
        assert key in out, (key, out)

    p = cli("info", path, "--json", cwd=tmp_path)
    info = json.loads(p.stdout)
    assert info["checksum"] == f"{m.checksum:08x}"
    assert info["bytes"] == os.path.getsize(path)
    assert info["metadata"] == m.metadata
    assert info["config"] == json.loads(json.dumps(m.config.to_dict()))
    assert info["config"]["layers"][0]["hidden_size"] == 7

    p = cli("info", models["dir"] / "nohead.grl", "--json", cwd=tmp_path)
    info = json.loads(p.stdout)
    assert info["config"]["head"] == [] and len(info["config"]["layers"]) == 2


def test_info_on_bad_files(tmp_path, models):
    data = (models["dir"] / "head.grl").read_bytes()
    (tmp_path / "cut.grl").write_bytes(data[:100])
    p = cli("info", "cut.grl", cwd=tmp_path, expect=1)
    assert p.stderr.startswith("grulite: error:") and "cut.grl" in p.stderr
    assert "not a valid grulite model" in p.stderr
    flipped = bytearray(data)
    flipped[-70] ^= 1
    (tmp_path / "flip.grl").write_bytes(bytes(flipped))
    p = cli("info", "flip.grl", cwd=tmp_path, expect=1)
    assert "checksum" in p.stderr
    p = cli("info", "nothere.grl", cwd=tmp_path, expect=1)
    assert "nothere.grl" in p.stderr


# ---- run ------------------------------------------------------------------------

def _run(tmp_path, model, x, *extra, lengths=None):
    np.save(tmp_path / "in.npy", x)
    args = ["run", model, "in.npy", "-o", "out.npy", *extra]
    if lengths is not None:
        np.save(tmp_path / "len.npy", lengths)
        args += ["--lengths", "len.npy"]
    cli(*args, cwd=tmp_path)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp~")]
    return np.load(tmp_path / "out.npy")


@pytest.mark.parametrize("batch_size", [None, 3, 1])
def test_run_head_model(tmp_path, models, batch_size):
    path = models["dir"] / "head.grl"
    m = grulite.load(path)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 6, 5)).astype(np.float32)
    extra = [] if batch_size is None else ["--batch-size", batch_size]
    out = _run(tmp_path, path, x, *extra)
    assert out.shape == (7, 3) and out.dtype == np.float32
    assert_array_equal(out, m.predict(x))
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-6)     # softmax
    # Padded sequences, in uneven batches.
    lengths = np.array([6, 1, 3, 6, 2, 5, 4])
    out = _run(tmp_path, path, x, *extra, lengths=lengths)
    assert_array_equal(out, m.predict(x, lengths=lengths))
    # The GRU outputs instead of the head's.
    out = _run(tmp_path, path, x, *extra, "--outputs", "y")
    assert_array_equal(out, m(x)[0])


@pytest.mark.parametrize("batch_size", [None, 2])
def test_run_model_without_head(tmp_path, models, batch_size):
    path = models["dir"] / "nohead.grl"
    m = grulite.load(path)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 8, 4))          # float64 input is accepted
    extra = [] if batch_size is None else ["--batch-size", batch_size]
    out = _run(tmp_path, path, x, *extra)
    assert out.shape == (5, 8, 12)
    assert_array_equal(out, m(x)[0])
    lengths = np.array([8, 3, 1, 7, 5], dtype=np.int32)
    out = _run(tmp_path, path, x.astype(np.float32), *extra, lengths=lengths)
    y = m(x.astype(np.float32), lengths=lengths)[0]
    assert_array_equal(out, y)
    assert not out[1, 3:].any() and not out[2, 1:].any()
    # Time-major input.
    xt = np.ascontiguousarray(x.transpose(1, 0, 2)).astype(np.float32)
    out = _run(tmp_path, path, xt, *extra, "--time-major")
    assert_array_equal(out, m(x.astype(np.float32))[0])


def test_run_single_sequence(tmp_path, models):
    rng = np.random.default_rng(3)
    m = grulite.load(models["dir"] / "head.grl")
    x = rng.standard_normal((6, 5)).astype(np.float32)
    out = _run(tmp_path, models["dir"] / "head.grl", x)
    assert out.shape == (3,)
    assert_array_equal(out, m.predict(x))
    m2 = grulite.load(models["dir"] / "nohead.grl")
    x2 = rng.standard_normal((9, 4)).astype(np.float32)
    out = _run(tmp_path, models["dir"] / "nohead.grl", x2)
    assert out.shape == (9, 12)
    assert_array_equal(out, m2(x2)[0])


def test_run_bad_inputs(tmp_path, models):
    path = models["dir"] / "head.grl"
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 4), np.float32))
    p = cli("run", path, "wrong.npy", "-o", "out.npy", cwd=tmp_path, expect=1)
    assert p.stderr.startswith("grulite: error:")
    assert "4 features" in p.stderr and "expects 5" in p.stderr
    assert not (tmp_path / "out.npy").exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp~")]
    np.save(tmp_path / "ints.npy", np.zeros((2, 3, 5), np.int64))
    p = cli("run", path, "ints.npy", "-o", "out.npy", cwd=tmp_path, expect=1)
    assert "dtype int64" in p.stderr
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 5), np.float32))
    np.save(tmp_path / "len.npy", np.array([3, 4]))
    p = cli("run", path, "x.npy", "-o", "out.npy", "--lengths", "len.npy", cwd=tmp_path,
            expect=1)
    assert "lengths" in p.stderr and "outside [1, 3]" in p.stderr
    assert not (tmp_path / "out.npy").exists()
    p = cli("run", path, "missing.npy", "-o", "out.npy", cwd=tmp_path, expect=1)
    assert "missing.npy" in p.stderr
    np.save(tmp_path / "x4.npy", np.zeros((2, 3, 4), np.float32))
    p = cli("run", models["dir"] / "nohead.grl", "x4.npy", "-o", "out.npy", "--outputs", "head",
            cwd=tmp_path, expect=1)
    assert "no head" in p.stderr


# ---- bench and demo ---------------------------------------------------------------

def test_bench_prints_latency_and_throughput(tmp_path, models):
    p = cli("bench", models["dir"] / "head.grl", "--batch", 2, "--steps", 5, "--repeat", 2,
            cwd=tmp_path)
    out = p.stdout
    assert "input 5, hidden 7, 1 layer(s)" in out
    assert re.search(r"whole sequence B=2 T=5: best [\d.]+ ms, median [\d.]+ ms \(\d+ runs\)", out)
    assert re.search(r"throughput: [\d,]+ sequences/s, [\d,]+ steps/s, [\d.]+ GFLOP/s", out)
    assert re.search(r"streaming step B=1: best [\d.]+ us", out)
    # Bidirectional models cannot stream: whole sequences only.
    p = cli("bench", models["dir"] / "nohead.grl", "--steps", 3, "--repeat", 1, cwd=tmp_path)
    assert "bidirectional" in p.stdout and "throughput" in p.stdout
    assert "streaming" not in p.stdout


def test_demo(tmp_path):
    p = cli("demo", cwd=tmp_path)
    out = p.stdout
    assert os.listdir(tmp_path) == []              # writes nothing where it runs
    assert re.search(r"year\s+truth\s+grulite\s+naive", out)
    rows = re.findall(r"^\s+(\d{4})\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)$", out, re.M)
    assert len(rows) == 12

    # The predictions shown are those of the bundled model run here.
    data = os.path.join(os.path.dirname(grulite.__file__), "data")
    ev = np.load(os.path.join(data, "sunspots_eval.npz"))
    m = grulite.from_npz(os.path.join(data, "sunspots_gru.npz"), head="fc:none")
    pred = m.predict(ev["x"])[:, 0] * float(ev["std"]) + float(ev["mean"])
    for (year, truth, shown, naive), i in zip(rows, range(len(ev["years"]) - 12,
                                                          len(ev["years"]))):
        assert int(year) == int(ev["years"][i])
        assert float(truth) == pytest.approx(float(ev["y_true"][i]), abs=0.051)
        assert float(shown) == pytest.approx(float(pred[i]), abs=0.051)
        assert float(naive) == pytest.approx(float(ev["last"][i]), abs=0.051)

    mae = re.search(r"held-out MAE\s+grulite\s+([\d.]+)\s+naive.*?([\d.]+)$", out, re.M)
    rmse = re.search(r"held-out RMSE\s+grulite\s+([\d.]+)\s+naive\s+([\d.]+)$", out, re.M)
    assert mae and rmse, out
    assert float(mae.group(1)) == pytest.approx(float(np.mean(np.abs(pred - ev["y_true"]))),
                                                abs=0.006)
    assert float(mae.group(1)) < float(mae.group(2))        # better than the naive forecast
    diff = re.search(r"largest difference from the original PyTorch model's predictions: (\S+)",
                     out)
    assert diff and float(diff.group(1)) < 1e-3
