"""grulite.from_safetensors: .safetensors files parsed directly, every field
checked.

* Committed fixtures (tests/fixtures/torchfile/*.safetensors, made by
  tools/make_torchfile_fixtures.py with the safetensors package) with
  torch's outputs: run everywhere.
* Files written by the small writer of that tool (numpy only), and damaged
  versions of them: header length, JSON, dtypes, shapes, offsets.
* Live (torch and the safetensors package importable): real modules saved
  with safetensors.torch.save_file / save_model, outputs within 2e-5 of
  torch, tensors equal to safetensors' own loader.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import grulite
from conftest import ROOT, check_case, load_tool, same_model
from grulite._convert import build_image
from grulite._safetensors import from_safetensors, read_safetensors, safetensors_image
from support.files import raw_safetensors, write_safetensors
from support.models import random_state_dict

TOL = 2e-5
FIX = os.path.join(ROOT, "tests", "fixtures", "torchfile")


tool = load_tool("make_torchfile_fixtures")
ST_CASES = [c for c in tool.load_expected(os.path.join(FIX, tool.EXPECTED))
            if c["config"]["file"].endswith(".safetensors")]


def gru_arrays(seed=0, I=3, H=4, layers=1, bidir=False, prefix="gru.", head=2) -> dict:
    return random_state_dict(seed, I, (H,) * layers, bidir, head=(head,) if head else (), prefix=prefix,
                             head_names=["fc"], head_scale=1.0, head_bias_scale=1.0, normal=True)


# ---------------------------------------------------------------------------
# committed fixtures


@pytest.mark.parametrize("case", ST_CASES, ids=[c["name"] for c in ST_CASES])
def test_fixture(case):
    c = case["config"]
    path = os.path.join(FIX, c["file"])
    m = from_safetensors(path, prefix=c["prefix"], head=c["head"], batch_first=c["batch_first"])
    check_case(m, case, "safetensors", case["name"])
    assert m.metadata["source"] == c["file"]
    image, summary = safetensors_image(path, prefix=c["prefix"], head=c["head"],
                                       batch_first=c["batch_first"])
    assert image == m.to_bytes() and summary["parameters"] > 0


def test_fixture_bf16_widened():
    sd = read_safetensors(os.path.join(FIX, "gru_bf16.safetensors"))
    assert sd and all(v.dtype == np.float32 for v in sd.values())
    # bfloat16 values: the low 16 bits of each float32 are zero
    assert all(not np.any(v.view(np.uint32) & 0xFFFF) for v in sd.values())


# ---------------------------------------------------------------------------
# files written here


def test_written_file_loads(tmp_path):
    arrays = gru_arrays(1, layers=2, bidir=True)
    p = str(tmp_path / "w.safetensors")
    write_safetensors(p, arrays, {"format": "pt"})
    same_model(from_safetensors(p, head="fc:softmax"), arrays, head="fc:softmax")
    image, summary = safetensors_image(p, head="fc")
    assert image == build_image(arrays, head="fc", source="w.safetensors")[0]
    assert summary["prefix"] == "gru"
    back = read_safetensors(p)
    assert list(back) == list(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])


def test_dtypes(tmp_path):
    arrays = {"f64": np.array([1.5, -2.0]), "f16": np.array([0.5, 65504], np.float16),
              "i64": np.arange(6, dtype=np.int64).reshape(2, 3), "i8": np.array([-128, 5], np.int8),
              "u8": np.array([0, 255], np.uint8), "b": np.array([True, False]),
              "empty": np.zeros((0, 3), np.float32), "scalar": np.array(2.5, np.float32)}
    p = str(tmp_path / "d.safetensors")
    write_safetensors(p, arrays)
    back = read_safetensors(p)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)


def test_bf16_and_f16_models(tmp_path):
    arrays = gru_arrays(2)
    # bfloat16 by truncation of float32, written as raw BF16
    bf = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in arrays.items()}
    header, data, pos = {}, b"", 0
    for k, v in bf.items():
        raw = v.tobytes()
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [pos, pos + len(raw)]}
        data += raw
        pos += len(raw)
    p = raw_safetensors(tmp_path / "bf.safetensors", header, data)
    widened = {k: (v.astype(np.uint32) << 16).view(np.float32) for k, v in bf.items()}
    same_model(from_safetensors(p, head="fc"), widened, head="fc")
    q = str(tmp_path / "h.safetensors")
    write_safetensors(q, {k: v.astype(np.float16) for k, v in arrays.items()})
    same_model(from_safetensors(q), {k: v.astype(np.float16).astype(np.float32)
                                     for k, v in arrays.items()})


def test_unused_fp8_tensor_is_fine(tmp_path):
    arrays = gru_arrays(3)
    p = str(tmp_path / "a.safetensors")
    write_safetensors(p, arrays)
    raw = open(p, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    end = len(data)
    header["scales"] = {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [end, end + 4]}
    p2 = raw_safetensors(tmp_path / "b.safetensors", header, data + b"\x01\x02\x03\x04")
    same_model(from_safetensors(p2), arrays)
    with pytest.raises(grulite.GruliteError, match="dtype F8_E4M3"):
        read_safetensors(p2)


def test_no_gru_and_prefix(tmp_path):
    p = str(tmp_path / "n.safetensors")
    write_safetensors(p, {"fc.weight": np.ones((2, 2), np.float32)})
    with pytest.raises(grulite.GruliteError, match="no GRU tensors found"):
        from_safetensors(p)
    arrays = {**gru_arrays(4, prefix="a."), **gru_arrays(5, prefix="b.", head=0)}
    q = str(tmp_path / "two.safetensors")
    write_safetensors(q, arrays)
    with pytest.raises(grulite.GruliteError, match="several GRUs"):
        from_safetensors(q)
    m = from_safetensors(q, prefix="b")
    same_model(m, gru_arrays(5, prefix="b.", head=0))


# ---------------------------------------------------------------------------
# damaged files

F32_4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        from_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        read_safetensors(str(tmp_path / "nope.safetensors"))


@pytest.mark.parametrize("header,data,n,match", [
    (b"", b"", None, "too short"),
    (b"{}", b"", 10 ** 6, "header length is 1000000 bytes but the file has only 2"),
    (b"{}", b"", 2 ** 64 - 1, "header length"),
    (b"{not json}", b"", None, "not valid UTF-8 JSON"),
    (b"{\"a\": \xff}", b"", None, "not valid UTF-8 JSON"),
    (b"[1, 2]", b"", None, "does not start with"),
    (b"{\"x\": 1}", b"", None, "not an object"),
    (b"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
     b"\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", b"\0" * 8, None,
     "names 'w' twice"),
    ({"w": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, None, "dtype 'F33'"),
    ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, b"\0" * 16, None, "shape"),
    ({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, b"\0" * 16, None, "shape"),
    ({"w": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}}, b"\0" * 16, None, "shape"),
    ({"w": {"dtype": "F32", "shape": [4]}}, b"\0" * 16, None, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, b"\0" * 16, None, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16, 32]}}, b"\0" * 16, None,
     "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, b"\0" * 16, None,
     "data_offsets"),
    ({"w": F32_4}, b"\0" * 8, None, "ends at byte 16 of a data area of 8"),           # out of range
    ({"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, b"\0" * 16, None,
     "needs 20 bytes"),                                                              # wrong count
    ({"w": {"dtype": "F32", "shape": [10 ** 12, 10 ** 12], "data_offsets": [0, 16]}}, b"\0" * 16,
     None, "needs 4000000000000000000000000 bytes"),
    ({"w": F32_4, "v": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16, None,
     "overlaps"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16, None, "hole"),
    ({"w": F32_4}, b"\0" * 20, None, "cover 16 bytes of a data area of 20"),
    ({"w": F32_4, "__metadata__": {"a": 1}}, b"\0" * 16, None, "__metadata__"),
    ({"w": F32_4, "__metadata__": [1]}, b"\0" * 16, None, "__metadata__"),
])
def test_bad_files(tmp_path, header, data, n, match):
    p = raw_safetensors(tmp_path / "bad.safetensors", header, data, n)
    for fn in (from_safetensors, read_safetensors):
        with pytest.raises(grulite.GruliteError, match=match):
            fn(p)


def test_short_files(tmp_path):
    for content in (b"", b"\x02\x00\x00"):
        p = tmp_path / "s.safetensors"
        p.write_bytes(content)
        with pytest.raises(grulite.GruliteError, match="8-byte header length"):
            from_safetensors(p)


def test_header_over_100mb(tmp_path):
    """A header length under the file size but over the 100 MB limit (sparse file)."""
    p = tmp_path / "huge.safetensors"
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 150_000_000))
        f.write(b"{")
        f.truncate(200_000_000)
    with pytest.raises(grulite.GruliteError, match="limit 100000000"):
        from_safetensors(p)


def test_truncated_file(tmp_path):
    arrays = gru_arrays(6)
    p = str(tmp_path / "t.safetensors")
    write_safetensors(p, arrays)
    raw = open(p, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    for cut in (len(raw) - 1, 8 + n + 10, 8 + n // 2, 4):
        q = tmp_path / "cut.safetensors"
        q.write_bytes(raw[:cut])
        with pytest.raises(grulite.GruliteError):
            from_safetensors(q)


def test_header_padding_and_order(tmp_path):
    """Spaces after the JSON (the reference writer pads to 8 bytes) and
    tensors listed out of data order are fine."""
    a = np.arange(4, dtype=np.float32)
    b = np.arange(2, dtype=np.float64)
    header = {"b": {"dtype": "F64", "shape": [2], "data_offsets": [16, 32]},
              "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    hb = json.dumps(header).encode() + b"       "
    p = raw_safetensors(tmp_path / "p.safetensors", hb, a.tobytes() + b.tobytes())
    back = read_safetensors(p)
    np.testing.assert_array_equal(back["a"], a)
    np.testing.assert_array_equal(back["b"], b)


# ---------------------------------------------------------------------------
# live: the safetensors package and torch


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("how", ["save_file", "save_model"])
def test_live_safetensors_package(tmp_path, dtype, how):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    net, gru, heads = tool.build_net(70, 5, 9, num_layers=2, bidirectional=True,
                                     gru_path="encoder.gru", head=[("fc", 4, "softmax")])
    net.to(getattr(torch, dtype))
    p = str(tmp_path / "m.safetensors")
    if how == "save_file":
        st.save_file(net.state_dict(), p, metadata={"format": "pt"})
    else:
        st.save_model(net, p)
    lengths = [6, 2, 4]
    x = np.random.default_rng(1).standard_normal((3, 6, 5)).astype(np.float32)
    ref = tool.reference(gru, heads, x, lengths)
    m = from_safetensors(p, head="fc:softmax")
    check_case(m, dict(x=x, lengths=np.array(lengths), **ref), "safetensors (live)",
               f"{how} {dtype}")
    back = read_safetensors(p)
    want = st.load_file(p)
    assert set(back) == set(want)
    for k, v in want.items():
        w = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
        assert back[k].dtype == w.dtype
        np.testing.assert_array_equal(back[k], w)


def test_live_writer_matches_package(tmp_path):
    """The tool's fallback writer makes files the safetensors package reads."""
    pytest.importorskip("torch")
    stn = pytest.importorskip("safetensors.numpy")
    arrays = {**gru_arrays(8), "i": np.arange(3, dtype=np.int32)}
    p = str(tmp_path / "w.safetensors")
    write_safetensors(p, arrays, {"k": "v"})
    back = stn.load_file(p)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
