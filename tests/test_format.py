"""The .grl model file: round trips, layout, conversion against live
torch.nn.GRU, and hostile files (each loaded in a child process, so that a
crash is a test failure naming the file, not a dead test run).

The layout is parsed here independently of the library (tests/helpers_format.py,
from the layout documented in docs/format.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from helpers_format import (
    ALIGN,
    CRC_START,
    DTYPE_F32,
    FORMAT_VERSION,
    HEADER_SIZE,
    KIND_DENSE,
    KIND_GRU,
    LAYER_REC,
    LAYOUT_PANEL16,
    MAGIC,
    OFF_CRC,
    OFF_FILE_SIZE,
    OFF_FLAGS,
    OFF_HEADER_SIZE,
    OFF_INPUT_SIZE,
    OFF_LAYER_REC,
    OFF_META_LEN,
    OFF_META_OFF,
    OFF_NUM_LAYERS,
    OFF_NUM_TENSORS,
    OFF_VERSION,
    T_D0,
    T_D1,
    T_DTYPE,
    T_LAYOUT,
    T_NDIM,
    T_OFFSET,
    child_env,
    load_in_child,
    parse_grl,
    patch,
    tensor_array,
    tensor_nbytes,
    to_version_2,
    u32,
    with_crc,
)
from support.models import gru_state, linear_state

# ---- models used throughout -------------------------------------------------

# (name, state_dict maker, from_npz keyword arguments)
ROUND_TRIP_CASES = {
    "1layer_head": (lambda rng: {**gru_state(rng, 5, 7), **linear_state(rng, 7, 3)},
                    dict(head="fc:softmax")),
    "2layer_bidir_nobias": (lambda rng: gru_state(rng, 4, 6, layers=2, bidirectional=True,
                                                  bias=False, prefix="rnn."),
                            dict()),
    "3layer_reset_before_timemajor_2head": (
        lambda rng: {**gru_state(rng, 3, 5, layers=3, prefix="encoder.gru."),
                     **linear_state(rng, 5, 8, "head.0"), **linear_state(rng, 8, 2, "head.2",
                                                                          bias=False)},
        dict(head="head.0:relu,head.2:tanh", reset_after=False, batch_first=False)),
}


def _write_npz(path, sd):
    np.savez(path, **sd)
    return str(path)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A small model file (1 layer, head): (path, bytes)."""
    d = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(7)
    npz = _write_npz(d / "small.npz", {**gru_state(rng, 3, 5), **linear_state(rng, 5, 2)})
    path = str(d / "small.grl")
    grulite.from_npz(npz, head="fc:sigmoid").save(path)
    with open(path, "rb") as f:
        return path, f.read()


@pytest.fixture(scope="module")
def bidir_model(tmp_path_factory):
    """A 2-layer bidirectional model without bias: (path, bytes)."""
    d = tmp_path_factory.mktemp("bidir")
    rng = np.random.default_rng(8)
    npz = _write_npz(d / "bidir.npz", gru_state(rng, 2, 3, layers=2, bidirectional=True,
                                                bias=False))
    path = str(d / "bidir.grl")
    grulite.from_npz(npz).save(path)
    with open(path, "rb") as f:
        return path, f.read()


# ---- round trip --------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(ROUND_TRIP_CASES))
def test_round_trip_bit_identical(tmp_path, case):
    make, kw = ROUND_TRIP_CASES[case]
    rng = np.random.default_rng(1)
    sd = make(rng)
    npz = _write_npz(tmp_path / "m.npz", sd)
    direct = grulite.from_npz(npz, **kw)
    path = tmp_path / "m.grl"
    direct.save(path)
    loaded = grulite.load(path)

    assert loaded.config == direct.config
    assert loaded.path == os.path.abspath(path)
    assert loaded.checksum == direct.checksum
    assert loaded.nbytes == direct.nbytes == os.path.getsize(path)
    assert loaded.metadata == direct.metadata

    c = direct.config
    B, T = 4, 6
    x = rng.standard_normal((B, T, c.input_size)).astype(np.float32)
    if not c.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    lengths = np.array([6, 1, 3, 5])
    for kwargs in (dict(), dict(lengths=lengths)):
        y0, h0 = direct(x, **kwargs)
        y1, h1 = loaded(x, **kwargs)
        assert_array_equal(y1, y0)
        assert_array_equal(h1, h0)
        if c.head:
            assert_array_equal(loaded.predict(x, **kwargs), direct.predict(x, **kwargs))

    with open(path, "rb") as f:
        data = f.read()
    assert direct.to_bytes() == data
    assert loaded.to_bytes() == data
    # Deterministic: building the same model again gives the same bytes.
    assert grulite.from_npz(npz, **kw).to_bytes() == data
    # A re-save of the loaded (memory-mapped) model writes the same bytes.
    loaded.save(tmp_path / "again.grl")
    with open(tmp_path / "again.grl", "rb") as f:
        assert f.read() == data
    # from_bytes of the image is the same model again.
    assert_array_equal(grulite.from_bytes(data)(x)[0], direct(x)[0])


def _layer_fields(rec: dict) -> tuple:
    """The six fields of a layer record, in the documented order."""
    return (rec["hidden_size"], rec["num_directions"], rec["reset_after"], rec["has_bias"],
            rec["dtype"], rec["reverse"])


@pytest.mark.parametrize("source, needs", [
    ("onnx/node_rev_lbr0_layout0_b.onnx", "onnx"),          # ONNX direction="reverse"
    ("keras/gru_go_backwards.keras", "h5py"),               # Keras go_backwards layers
])
def test_layer_records_parsed_independently(tmp_path, source, needs):
    """Every field of the layer records, `reverse` included, read with the
    documented layout from models that have backward layers."""
    pytest.importorskip(needs)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", source)
    m = grulite.from_onnx(path) if source.endswith(".onnx") else grulite.from_keras(path)
    layers = m.config.layers
    assert any(lay.reverse for lay in layers)
    m.save(tmp_path / "m.grl")
    P = parse_grl((tmp_path / "m.grl").read_bytes())
    assert [_layer_fields(rec) for rec in P["layers"]] == [
        (lay.hidden_size, lay.num_directions, int(lay.reset_after), int(lay.bias), DTYPE_F32,
         int(lay.reverse)) for lay in layers]


@pytest.mark.parametrize("case", sorted(ROUND_TRIP_CASES))
def test_layout_parsed_independently(tmp_path, case):
    """Header, CRC, tables, 64-byte aligned offsets and the stored weights,
    read with the documented layout, not the library."""
    make, kw = ROUND_TRIP_CASES[case]
    sd = make(np.random.default_rng(2))
    npz = _write_npz(tmp_path / "m.npz", sd)
    m = grulite.from_npz(npz, **kw)
    m.save(tmp_path / "m.grl")
    with open(tmp_path / "m.grl", "rb") as f:
        b = f.read()

    assert b[:8] == MAGIC
    P = parse_grl(b)
    h = P["header"]
    assert h["version"] == FORMAT_VERSION
    crc = zlib.crc32(b[CRC_START:]) & 0xFFFFFFFF
    assert b[OFF_CRC:OFF_CRC + 4] == crc.to_bytes(4, "little")
    assert crc == m.checksum
    assert h["file_size"] == len(b) == m.nbytes
    assert h["header_size"] == HEADER_SIZE
    c = m.config
    assert h["flags"] == (0 if c.batch_first else 1)
    assert h["input_size"] == c.input_size
    assert h["num_layers"] == c.num_layers + len(c.head)       # typed records, GRU then head
    assert h["layer_rec"] == LAYER_REC
    assert P["kinds"] == [KIND_GRU] * c.num_layers + [KIND_DENSE] * len(c.head)
    assert [_layer_fields(rec) for rec in P["layers"]] == [
        (lay.hidden_size, lay.num_directions, int(lay.reset_after), int(lay.bias), DTYPE_F32, 0)
        for lay in c.layers]
    acts = ["none", "relu", "tanh", "sigmoid", "softmax"]
    for rec, d in zip(P["dense"], c.head):
        assert (rec["out_features"], acts[rec["activation"]], rec["has_bias"]) == \
            (d.out_features, d.activation, int(d.bias))

    # Tables, then metadata, then the tensors: aligned, in bounds, disjoint.
    assert P["tables_end"] <= h["meta_off"]
    meta_end = h["meta_off"] + h["meta_len"]
    end = meta_end
    for t in sorted(P["tensors"], key=lambda t: t["offset"]):
        assert t["offset"] % ALIGN == 0, t
        assert t["offset"] >= end, f"{t['name']} overlaps the previous tensor or the metadata"
        assert t["dtype"] == DTYPE_F32 and t["layout"] == LAYOUT_PANEL16
        assert t["gates"] == (3 if ".d" in t["name"] else 1), t      # GRU "l<i>.d<d>.", head "l<i>."
        end = t["offset"] + tensor_nbytes(t)
        assert end <= len(b)
    assert len(b) % ALIGN == 0

    # Metadata: converter, source, prefix, and the PyTorch tensors used.
    meta = json.loads(P["metadata"].decode("utf-8"))
    assert meta == m.metadata
    assert meta["converter"] == f"grulite {grulite.__version__}"
    assert meta["source"] == "m.npz"
    assert {k: tuple(v) for k, v in meta["tensors"].items()} == {k: v.shape for k, v in sd.items()}
    assert meta["prefix"] == {"1layer_head": "gru", "2layer_bidir_nobias": "rnn"}.get(
        case, "encoder.gru")

    # Weights are stored as the kernels read them: 16-lane panels,
    # gate-interleaved; unpacked they equal the PyTorch tensors.
    prefix = meta["prefix"] + "."
    stored = {t["name"]: tensor_array(b, t) for t in P["tensors"]}
    expect = {}
    for k, lay in enumerate(c.layers):
        for d, sfx in enumerate(["", "_reverse"][:lay.num_directions]):
            expect[f"l{k}.d{d}.w_ih"] = sd[f"{prefix}weight_ih_l{k}{sfx}"]
            expect[f"l{k}.d{d}.w_hh"] = sd[f"{prefix}weight_hh_l{k}{sfx}"]
            if lay.bias:
                expect[f"l{k}.d{d}.b_ih"] = sd[f"{prefix}bias_ih_l{k}{sfx}"]
                expect[f"l{k}.d{d}.b_hh"] = sd[f"{prefix}bias_hh_l{k}{sfx}"]
    n_gru = len(c.layers)                 # head layers follow the GRU layers
    for j, (name, _) in enumerate(meta["head"]):
        expect[f"l{n_gru + j}.w"] = sd[f"{name}.weight"]
        if f"{name}.bias" in sd:
            expect[f"l{n_gru + j}.b"] = sd[f"{name}.bias"]
    assert sorted(stored) == sorted(expect)
    for name in expect:
        assert_array_equal(stored[name], expect[name], err_msg=name)


# ---- grulite convert against live torch.nn.GRU ------------------------------

# (prefix, num_layers, bidirectional, bias, head modules, time_major)
TORCH_CASES = [
    ("gru.", 1, False, True, "fc", False),
    ("rnn.", 2, True, True, None, False),
    ("encoder.gru.", 3, False, False, "fc", False),
    ("", 1, True, True, None, False),
    ("", 2, False, False, None, True),
    ("gru.", 2, True, False, "fc", False),
    ("encoder.gru.", 1, True, True, "seq", True),
    ("rnn.", 3, True, True, None, False),
]


def _torch_case_id(c):
    p, L, bi, bias, head, tm = c
    return (f"{p.rstrip('.') or 'bare'}-L{L}{'-bi' if bi else ''}{'' if bias else '-nobias'}"
            f"{'-' + head if head else ''}{'-tm' if tm else ''}")


@pytest.mark.parametrize("case", TORCH_CASES, ids=[_torch_case_id(c) for c in TORCH_CASES])
def test_convert_matches_live_torch(tmp_path, case):
    torch = pytest.importorskip("torch")
    prefix, L, bi, bias, head, time_major = case
    I, H, B, T = 5, 7, 3, 9
    torch.manual_seed(len(prefix) * 10 + L + 2 * bi + 4 * bias)
    gru = torch.nn.GRU(I, H, num_layers=L, bidirectional=bi, bias=bias,
                       batch_first=not time_major)
    out_w = (2 if bi else 1) * H
    mods = {}
    head_arg = None
    if head == "fc":
        mods["fc"] = torch.nn.Linear(out_w, 4)
        head_arg = "fc:none"
    elif head == "seq":
        mods["head"] = torch.nn.Sequential(torch.nn.Linear(out_w, 6), torch.nn.ReLU(),
                                           torch.nn.Linear(6, 3), torch.nn.Softmax(-1))
        head_arg = "head.0:relu,head.2:softmax"
    # Place the GRU under its prefix, as a module tree would.
    sd = {prefix + k: v for k, v in gru.state_dict().items()}
    for name, mod in mods.items():
        sd.update({f"{name}.{k}": v for k, v in mod.state_dict().items()})
    npz = _write_npz(tmp_path / "w.npz", {k: v.detach().numpy() for k, v in sd.items()})

    cmd = [sys.executable, "-m", "grulite", "convert", npz, "-o", str(tmp_path / "w.grl")]
    if head_arg:
        cmd += ["--head", head_arg]
    if time_major:
        cmd += ["--time-major"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=child_env(),
                       timeout=60)
    assert p.returncode == 0, p.stderr
    m = grulite.load(tmp_path / "w.grl")
    assert m.config.batch_first == (not time_major)
    assert m.metadata["prefix"] == prefix.rstrip(".")

    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((L * (2 if bi else 1), B, H)).astype(np.float32)
    with torch.no_grad():
        for init in (None, h0):
            yt, ht = gru(torch.from_numpy(x), None if init is None else torch.from_numpy(init))
            y, hn = m(x, init)
            np.testing.assert_allclose(y, yt.numpy(), rtol=0, atol=2e-5)
            np.testing.assert_allclose(hn, ht.numpy(), rtol=0, atol=2e-5)
        if head:    # predict() starts from zeros
            yt, _ = gru(torch.from_numpy(x))
            last = yt[-1] if time_major else yt[:, -1]
            want = mods["fc"](last) if head == "fc" else mods["head"](last)
            np.testing.assert_allclose(m.predict(x), want.numpy(), rtol=0, atol=2e-5)
        # Unbatched input too.
        yt1, ht1 = gru(torch.from_numpy(x[:, 0] if time_major else x[0]))
        y1, h1 = m(x[:, 0] if time_major else x[0])
        np.testing.assert_allclose(y1, yt1.numpy(), rtol=0, atol=2e-5)
        np.testing.assert_allclose(h1, ht1.numpy(), rtol=0, atol=2e-5)

    # The command line and the API are one conversion path: same bytes.
    direct = grulite.from_npz(npz, head=head_arg, batch_first=not time_major)
    with open(tmp_path / "w.grl", "rb") as f:
        assert f.read() == direct.to_bytes()


# ---- hostile files ------------------------------------------------------------

def _write_cases(directory, cases):
    """cases: list of (label, bytes) -> list of paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, (_, data) in enumerate(cases):
        p = os.path.join(directory, f"c{i:05d}.grl")
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    return paths


def _run_cases(directory, cases):
    paths = _write_cases(directory, cases)
    return load_in_child(paths, [label for label, _ in cases])


def _refused(r):
    return not r["ok"] and r["grulite_error"] and r["type"] == "GruliteError"


def test_empty_random_and_foreign_files(tmp_path, small_model):
    path, b = small_model
    rng = np.random.default_rng(11)
    cases = [("empty", b"")]
    for n in (1, 7, 8, 15, 16, 63, 64, 65, 100, 1000, len(b), 5000):
        cases.append((f"random {n} bytes", rng.bytes(n)))
        if n >= 8:
            cases.append((f"magic + random {n} bytes", MAGIC + rng.bytes(n - 8)))
        if n >= 16:
            cases.append((f"magic, version + random {n} bytes",
                          MAGIC + FORMAT_VERSION.to_bytes(4, "little") + rng.bytes(n - 12)))
    # Random tail behind a valid header (size fixed, CRC recomputed): the
    # tables are garbage that passes the checksum.
    for n in (64, 200, 2000):
        data = bytearray(b[:64] + rng.bytes(n - 64))
        data[OFF_FILE_SIZE:OFF_FILE_SIZE + 8] = n.to_bytes(8, "little")
        cases.append((f"valid header + random tail, {n} bytes", with_crc(data)))
    cases.append(("all zero", bytes(len(b))))
    cases.append(("all 0xff", b"\xff" * len(b)))
    cases.append(("text", b"GRULITE model, honest\n" * 10))
    # A zip that is not a model: an .npz.
    npz = tmp_path / "not_a_model.npz"
    np.savez(npz, a=np.zeros(3))
    cases.append(("an .npz archive", npz.read_bytes()))

    results = _run_cases(tmp_path / "cases", cases)
    for (label, data), r in zip(cases, results):
        assert _refused(r), (label, r)
        if label == "empty":
            assert "empty" in r["msg"], r
        elif len(data) < HEADER_SIZE:
            assert f"file has {len(data)} bytes" in r["msg"], (label, r)
        elif data[:8] != MAGIC:
            assert "bad magic" in r["msg"], (label, r)
        assert "is not a valid grulite model" in r["msg"], (label, r)


def test_paths_that_are_not_files(tmp_path):
    missing = tmp_path / "missing.grl"
    directory = tmp_path / "a_directory.grl"
    directory.mkdir()
    code = ("import json, sys, grulite\n"
            "out = []\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        grulite.load(p); out.append(['ok', ''])\n"
            "    except BaseException as e:\n"
            "        out.append([type(e).__name__, str(e), isinstance(e, OSError)])\n"
            "print(json.dumps(out))\n")
    npz = tmp_path / "weights.npz"
    np.savez(npz, **gru_state(np.random.default_rng(0), 2, 3))
    p = subprocess.run([sys.executable, "-c", code, str(missing), str(directory), str(tmp_path),
                        str(npz)],
                       capture_output=True, text=True, env=child_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    (t_missing, m_missing, _), (t_dir, m_dir, os_dir), (t_dir2, _, os_dir2), \
        (t_npz, m_npz, _) = json.loads(p.stdout)
    assert t_npz == "GruliteError" and "weights.npz" in m_npz and "bad magic" in m_npz
    assert t_missing == "FileNotFoundError" and "missing.grl" in m_missing
    assert os_dir and os_dir2, (t_dir, t_dir2)
    assert "a_directory.grl" in m_dir and "regular file" in m_dir
    # In process too: the exception types are part of the API.
    with pytest.raises(FileNotFoundError):
        grulite.load(missing)
    with pytest.raises(OSError):
        grulite.load(directory)


def test_truncated_everywhere(tmp_path, small_model):
    _, b = small_model
    points = list(range(0, min(300, len(b))))
    points += sorted(set(np.linspace(300, len(b) - 1, 60).astype(int).tolist()))
    cases = [(f"truncated to {n} of {len(b)} bytes", b[:n]) for n in points]
    results = _run_cases(tmp_path / "cases", cases)
    for n, (label, _), r in zip(points, cases, results):
        assert _refused(r), (label, r)
        if n == 0:
            assert "empty" in r["msg"]
        elif n < 8:
            assert f"file has {n} bytes" in r["msg"], r
        elif n < HEADER_SIZE:
            assert f"file has {n} bytes" in r["msg"] and "header" in r["msg"], r
        else:
            assert f"header says {len(b)} bytes, the file has {n}" in r["msg"], r


def test_truncated_with_consistent_header(tmp_path, bidir_model):
    """Cut, then fix the header's size and the CRC: the tables and the
    tensors must be checked against the file's end."""
    _, b = bidir_model
    P = parse_grl(b)
    needed = max([P["header"]["meta_off"] + P["header"]["meta_len"]] +
                 [t["offset"] + tensor_nbytes(t) for t in P["tensors"]])
    points = list(range(HEADER_SIZE, len(b)))
    cases = [(f"cut to {n} bytes, size and CRC fixed",
              patch(b[:n], OFF_FILE_SIZE, n, "<Q")) for n in points]
    results = _run_cases(tmp_path / "cases", cases)
    for n, (label, _), r in zip(points, cases, results):
        if n >= needed:   # only padding after the last tensor was cut
            assert r["ok"] and r["finite"], (label, r)
        else:
            assert _refused(r), (label, r)
            assert any(w in r["msg"] for w in ("tensor table", "metadata", "outside the data area")), r


def _expected_flip_check(offset, mask=0xFF):
    if offset < 8:
        return "bad magic"
    if offset == 8 and mask == 0x01:
        return ""        # version 3 -> 2, still read: refused by version 2's structure checks
    if offset < 12:
        return "format version"
    if OFF_FILE_SIZE <= offset < OFF_FILE_SIZE + 8:
        return "header says"
    return "checksum mismatch"


def test_every_byte_flip_is_refused(tmp_path, small_model):
    """Never a silently wrong model: any single changed byte, payload
    included, is refused, by the check that covers that byte."""
    _, b = small_model
    cases = []
    for mask in (0xFF, 0x01):
        for off in range(len(b)):
            data = bytearray(b)
            data[off] ^= mask
            cases.append((f"byte {off} ^ {mask:#04x}", bytes(data)))
    results = _run_cases(tmp_path / "cases", cases)
    for (label, _), r in zip(cases, results):
        off, mask = int(label.split()[1]), int(label.split()[3], 16)
        assert _refused(r), (label, r)
        assert _expected_flip_check(off, mask) in r["msg"], (label, r)


def _always_checked_bytes(b):
    """Offsets of bytes whose change can never give a valid file: sizes,
    counts, shapes, dtypes, tensor names.  (Not: flags, reset_after,
    activation, tensor offsets, metadata, reserved bytes, which a change
    may leave valid.)"""
    P = parse_grl(b)
    offs = set(range(OFF_FILE_SIZE, OFF_FLAGS)) | set(range(OFF_INPUT_SIZE, OFF_META_OFF))
    for rec in P["layers"]:
        p = rec["pos"]
        offs |= set(range(p - 4, p + 8)) | set(range(p + 12, p + 20))    # kind word too
    for rec in P["dense"]:
        p = rec["pos"]
        offs |= set(range(p - 4, p + 4)) | set(range(p + 8, p + 12))
    for t in P["tensors"]:
        e = t["entry"]
        offs |= set(range(e, e + len(t["name"]) + 1)) | set(range(e + T_DTYPE, e + 44)) | \
            set(range(e + T_D0, e + T_OFFSET))
    return offs


def test_structural_byte_flips_behind_a_valid_crc(tmp_path, small_model, bidir_model):
    """Every byte of the header, tables and metadata changed, with the CRC
    recomputed so the structural checks see it: a clear GruliteError, or
    (for bytes whose change may leave a valid file) a model that loads and
    runs; never a crash."""
    cases, checked = [], []
    for name, (_, b) in (("small", small_model), ("bidir", bidir_model)):
        P = parse_grl(b)
        always = _always_checked_bytes(b)
        first_tensor = min(t["offset"] for t in P["tensors"])
        for off in range(CRC_START, first_tensor):
            for mask in (0xFF, 0x01, 0x80):
                data = bytearray(b)
                data[off] ^= mask
                cases.append((f"{name}: byte {off} ^ {mask:#04x}, CRC fixed", with_crc(data)))
                checked.append(off in always)
    results = _run_cases(tmp_path / "cases", cases)
    for (label, _), must_refuse, r in zip(cases, checked, results):
        if r["ok"]:
            assert not must_refuse, (label, "accepted", r)
            assert r["metadata"] and r.get("finite", True), (label, r)
        else:
            assert _refused(r), (label, r)
            assert r["msg"].startswith("'") and "is not a valid grulite model: " in r["msg"], r
    assert sum(checked) > 500


def test_random_field_values_behind_a_valid_crc(tmp_path, bidir_model):
    """A small fuzz: header, record and table fields set to edge values."""
    _, b = bidir_model
    P = parse_grl(b)
    fields32 = [OFF_HEADER_SIZE, OFF_FLAGS, OFF_INPUT_SIZE, OFF_NUM_LAYERS, OFF_LAYER_REC,
                OFF_NUM_TENSORS]
    for rec in P["layers"]:
        fields32 += [rec["pos"] + 4 * i for i in range(-1, 6)]      # the kind word, the fields
    for t in P["tensors"]:
        fields32 += [t["entry"] + f for f in (T_DTYPE, T_LAYOUT, T_NDIM, T_D0, T_D1)]
    fields64 = [OFF_FILE_SIZE, OFF_META_OFF, OFF_META_LEN] + \
        [t["entry"] + T_OFFSET for t in P["tensors"]]
    edge32 = [0, 1, 2, 3, 64, 65, 2**20, 2**20 + 1, 2**31 - 1, 2**31, 2**32 - 1]
    edge64 = [0, 64, len(b), len(b) + 64, 2**32, 2**63, 2**64 - 64, 2**64 - 1]
    rng = np.random.default_rng(5)
    cases = []
    for i in range(400):
        data = bytearray(b)
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.7:
                off = fields32[int(rng.integers(len(fields32)))]
                v = edge32[int(rng.integers(len(edge32)))] if rng.random() < 0.7 else \
                    (u32(b, off) + int(rng.integers(-3, 4))) % 2**32
                data[off:off + 4] = v.to_bytes(4, "little")
            else:
                off = fields64[int(rng.integers(len(fields64)))]
                v = edge64[int(rng.integers(len(edge64)))] if rng.random() < 0.7 else \
                    int(rng.integers(0, len(b) + 256))
                data[off:off + 8] = v.to_bytes(8, "little")
        cases.append((f"fuzz case {i}", with_crc(data)))
    results = _run_cases(tmp_path / "cases", cases)
    for (label, _), r in zip(cases, results):
        assert r["ok"] or _refused(r), (label, r)
        if r["ok"]:
            assert r.get("finite", True), (label, r)


def _absurd_cases(b):
    P = parse_grl(b)
    h = P["header"]
    t0 = P["tensors"][0]
    e0 = t0["entry"]
    l0 = P["layers"][0]["pos"]
    d0 = P["dense"][0]["pos"]
    n = len(b)
    name_off = e0   # first tensor's name
    C = [
        # (label, image, words the message must contain)
        ("num_tensors 2^32-1", patch(b, OFF_NUM_TENSORS, 2**32 - 1), "tensor table"),
        ("num_tensors 0", patch(b, OFF_NUM_TENSORS, 0), "tensors in the table"),
        ("num_tensors one short", patch(b, OFF_NUM_TENSORS, h["num_tensors"] - 1),
         "tensors in the table"),
        ("num_layers 10^6", patch(b, OFF_NUM_LAYERS, 10**6), "a model has 1 to 193"),
        ("num_layers 0", patch(b, OFF_NUM_LAYERS, 0), "a model has 1 to 193"),
        ("num_layers 194", patch(b, OFF_NUM_LAYERS, 194), "a model has 1 to 193"),
        ("num_layers 2^32-1", patch(b, OFF_NUM_LAYERS, 2**32 - 1), "a model has 1 to 193"),
        ("layer record size 10^6", patch(b, OFF_LAYER_REC, 10**6), "layer records of 1000000 bytes"),
        ("layer kind 0", patch(b, l0 - 4, 0), "unknown layer kind 0"),
        ("head before the GRU", patch(b, l0 - 4, KIND_DENSE), "layer 0"),
        ("layer 0 projected without an embedding", patch(b, l0 + 24, 1),
         "only a GRU layer right after an embedding may be projected"),
        ("input_size 2^31", patch(b, OFF_INPUT_SIZE, 2**31), "input_size"),
        ("input_size 0", patch(b, OFF_INPUT_SIZE, 0), "input_size"),
        ("input_size 4 (shape)", patch(b, OFF_INPUT_SIZE, 4), "shape"),
        ("hidden_size 2^31", patch(b, l0, 2**31), "layer 0"),
        ("hidden_size 2^32-1", patch(b, l0, 2**32 - 1), "layer 0"),
        ("hidden_size 2^20+1", patch(b, l0, 2**20 + 1), "out of range"),
        ("hidden_size 2^20", patch(b, l0, 2**20), "shape"),
        ("hidden_size 0", patch(b, l0, 0), "hidden_size 0"),
        ("num_directions 3", patch(b, l0 + 4, 3), "num_directions"),
        ("num_directions 0", patch(b, l0 + 4, 0), "num_directions"),
        ("reset_after 2", patch(b, l0 + 8, 2), "reset_after"),
        ("has_bias 7", patch(b, l0 + 12, 7), "has_bias"),
        ("layer dtype 2", patch(b, l0 + 16, 2), "dtype"),
        ("head out_features 0", patch(b, d0, 0), "out_features"),
        ("head out_features 2^31", patch(b, d0, 2**31), "head layer 0"),
        ("head activation 5", patch(b, d0 + 4, 5), "activation"),
        ("head has_bias 2", patch(b, d0 + 8, 2), "has_bias"),
        ("tensor offset = file size", patch(b, e0 + T_OFFSET, n, "<Q"), "outside the data area"),
        ("tensor offset far past the end", patch(b, e0 + T_OFFSET, 2**40, "<Q"),
         "outside the data area"),
        ("tensor offset 2^64-64", patch(b, e0 + T_OFFSET, 2**64 - 64, "<Q"), t0["name"]),
        ("tensor offset 2^63", patch(b, e0 + T_OFFSET, 2**63, "<Q"), t0["name"]),
        ("tensor offset 0 (on the header)", patch(b, e0 + T_OFFSET, 0, "<Q"),
         "outside the data area"),
        ("tensor offset on the tables", patch(b, e0 + T_OFFSET, 64, "<Q"),
         "outside the data area"),
        ("tensor ends past the end", patch(b, e0 + T_OFFSET, n - 64, "<Q"),
         "outside the data area"),
        ("tensor offset misaligned", patch(b, e0 + T_OFFSET, t0["offset"] + 4, "<Q"), "aligned"),
        ("tensor dims 2^32-1", patch(patch(b, e0 + T_D0, 2**32 - 1), e0 + T_D1, 2**32 - 1),
         "shape"),
        ("tensor ndim 3", patch(b, e0 + T_NDIM, 3), "ndim"),
        ("tensor dtype 2", patch(b, e0 + T_DTYPE, 2), "dtype"),
        ("tensor layout 0", patch(b, e0 + T_LAYOUT, 0), "layout"),
        ("tensor name not terminated",
         with_crc(b[:name_off] + b"x" * 32 + b[name_off + 32:]), "NUL-terminated"),
        ("tensor name duplicated",
         with_crc(b[:name_off + 64] + b[name_off:name_off + 32] + b[name_off + 96:]),
         "twice"),
        ("tensor renamed", with_crc(b[:name_off] + b"l9" + b[name_off + 2:]), "missing"),
        ("metadata overlapping the tables",
         patch(b, OFF_META_OFF, P["tables_end"] - 8, "<Q"), "metadata"),
        ("metadata offset 0", patch(b, OFF_META_OFF, 0, "<Q"), "metadata"),
        ("metadata offset past the end", patch(b, OFF_META_OFF, n + 1, "<Q"), "metadata"),
        ("metadata offset 2^64-1", patch(b, OFF_META_OFF, 2**64 - 1, "<Q"), "metadata"),
        ("metadata length past the end", patch(b, OFF_META_LEN, n, "<Q"), "metadata"),
        ("metadata length 2^64-1", patch(b, OFF_META_LEN, 2**64 - 1, "<Q"), "metadata"),
        ("header size 0", patch(b, OFF_HEADER_SIZE, 0), "header size"),
        ("header size 65", patch(b, OFF_HEADER_SIZE, 65), "header size"),
        ("unknown flag", patch(b, OFF_FLAGS, 4), "flags"),
        ("file size larger than the file", patch(b, OFF_FILE_SIZE, n + 64, "<Q"),
         "header says"),
        ("file size 2^64-1", patch(b, OFF_FILE_SIZE, 2**64 - 1, "<Q"), "header says"),
        ("file size smaller than the file", patch(b, OFF_FILE_SIZE, n - 64, "<Q"),
         "trailing data"),
        ("trailing bytes", with_crc(b + bytes(64)), "trailing data"),
        (f"version {FORMAT_VERSION + 1}", patch(b, OFF_VERSION, FORMAT_VERSION + 1), f"version {FORMAT_VERSION + 1}"),
        ("version 0", patch(b, OFF_VERSION, 0), "version 0"),
        ("stored CRC wrong", patch(b, OFF_CRC, (u32(b, OFF_CRC) + 1) % 2**32, fix_crc=False),
         "checksum mismatch"),
    ]
    return C


def test_absurd_fields_behind_a_valid_crc(tmp_path, small_model):
    """Valid magic and CRC, absurd structure: a GruliteError naming the
    failed check."""
    _, b = small_model
    cases = _absurd_cases(b)
    results = _run_cases(tmp_path / "cases", [(label, data) for label, data, _ in cases])
    for (label, _, word), r in zip(cases, results):
        assert _refused(r), (label, r)
        assert word in r["msg"], (label, word, r["msg"])
    # Each failing check is reported in its own words, not one generic line.
    assert len({r["msg"].split(": ", 1)[1] for r in results}) >= len(cases) - 10


@pytest.mark.parametrize("what", ["tensor inside the metadata", "metadata over the tensors",
                                  "two tensors share bytes"])
def test_overlapping_regions_are_refused(tmp_path, small_model, what):
    _, b = small_model
    P = parse_grl(b)
    h = P["header"]
    t = P["tensors"]
    if what == "tensor inside the metadata":
        off = -(-h["meta_off"] // ALIGN) * ALIGN
        assert off < h["meta_off"] + h["meta_len"]
        data = patch(b, t[0]["entry"] + T_OFFSET, off, "<Q")
    elif what == "metadata over the tensors":
        data = patch(b, OFF_META_LEN, len(b) - h["meta_off"], "<Q")
    else:
        data = patch(b, t[1]["entry"] + T_OFFSET, t[0]["offset"], "<Q")
    (r,) = _run_cases(tmp_path / "cases", [(what, data)])
    assert _refused(r), r


def test_child_runner_reports_a_crash(tmp_path, monkeypatch):
    """The batch runner itself: a child that dies is a failure naming the file."""
    import helpers_format

    line = '    rec = {"i": i}\n'
    assert line in helpers_format.CHILD_CODE
    monkeypatch.setattr(helpers_format, "CHILD_CODE", helpers_format.CHILD_CODE.replace(
        line, line + "    if p.endswith('boom.grl'):\n        import os; os.abort()\n"))
    good, boom = tmp_path / "good.grl", tmp_path / "boom.grl"
    good.write_bytes(b"harmless")
    boom.write_bytes(b"")
    with pytest.raises(helpers_format.ChildCrash, match="crashed the process.*on boom"):
        helpers_format.load_in_child([good, boom, good], ["good", "boom", "good again"])


def test_version_2_files_still_load(tmp_path):
    """A version-2 file (GRU and head records apart, head tensors named
    "head<j>."; tests/c/fixtures/digits.grl, kept at version 2 on purpose)
    loads, gives the outputs grulite wrote with it, and re-saves as
    version 3 with the same numbers."""
    fx = os.path.join(os.path.dirname(__file__), "c", "fixtures")
    src = os.path.join(fx, "digits.grl")
    with open(src, "rb") as f:
        assert parse_grl(f.read())["header"]["version"] == 2
    m2 = grulite.load(src)
    x = np.load(os.path.join(fx, "digits_x.npy"))
    head = m2.predict(x)
    np.testing.assert_allclose(head, np.load(os.path.join(fx, "digits_head.npy")), rtol=0, atol=1e-6)
    m2.save(tmp_path / "v3.grl")
    with open(tmp_path / "v3.grl", "rb") as f:
        P = parse_grl(f.read())
    assert P["header"]["version"] == FORMAT_VERSION == 3
    assert P["kinds"] == [KIND_GRU] * m2.config.num_layers + [KIND_DENSE] * len(m2.config.head)
    m3 = grulite.load(tmp_path / "v3.grl")
    assert m3.config == m2.config
    np.testing.assert_array_equal(m3.predict(x), head)
    np.testing.assert_array_equal(m3(x)[0], m2(x)[0])


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_version_2_layout_of_every_dtype(tmp_path, dtype):
    """The version-2 layout of a model (written from its version-3 image by
    tests/helpers_format.to_version_2, the layout older grulite wrote) loads
    with the same configuration and bits, and saving it writes the
    version-3 image again, byte for byte (int8 keeps codes and scales)."""
    rng = np.random.default_rng(11)
    sd = {**gru_state(rng, 5, 9, layers=2, bidirectional=True, prefix="gru."),
          **linear_state(rng, 18, 4, "fc"), **linear_state(rng, 4, 3, "out")}
    m3 = grulite.from_state_dict(sd, head="fc:relu,out:softmax").astype(dtype)
    b3 = m3.to_bytes()
    b2 = to_version_2(b3)
    m2 = grulite.from_bytes(b2)
    assert m2.config == m3.config
    x = rng.standard_normal((3, 7, 5)).astype(np.float32)
    np.testing.assert_array_equal(m2(x)[0], m3(x)[0])
    np.testing.assert_array_equal(m2.predict(x), m3.predict(x))
    m2.save(tmp_path / "up.grl")
    with open(tmp_path / "up.grl", "rb") as f:
        assert f.read() == b3


def test_version_2_save_keeps_stored_bits(tmp_path):
    """Saving a version-2 model copies each tensor as stored: int8 codes that
    do not reach 127 in a row (another writer's scales: here every code of a
    matrix halved) survive, and so do the outputs, bit for bit."""
    rng = np.random.default_rng(12)
    sd = {**gru_state(rng, 6, 20, layers=2, prefix="gru."), **linear_state(rng, 20, 3, "fc")}
    b3 = bytearray(grulite.from_state_dict(sd, head="fc:none").astype("int8").to_bytes())
    t = next(t for t in parse_grl(bytes(b3))["tensors"] if t["name"] == "l0.d0.w_hh")
    n = tensor_nbytes(t) // 4                                   # int8: one byte a weight
    q = np.frombuffer(b3, np.uint8, count=n, offset=t["offset"]).astype(np.int16) - 128
    b3[t["offset"]:t["offset"] + n] = ((q // 2) + 128).astype(np.uint8).tobytes()
    b3 = with_crc(b3)
    m3 = grulite.from_bytes(b3)
    m2 = grulite.from_bytes(to_version_2(b3))
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(m2(x)[0], m3(x)[0])
    m2.save(tmp_path / "up.grl")
    with open(tmp_path / "up.grl", "rb") as f:
        assert f.read() == b3
