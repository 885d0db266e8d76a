"""Helpers for the .grl format and CLI tests.

An independent reader of the .grl layout (written from the layout
documented in docs/format.md and src/core/format/format.h, not from the
library), image patching helpers, and a child-process runner that loads
many (hostile) files with grulite.load and reports what happened to each,
so that a crash cannot take pytest down and is pinned to the file that
caused it.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from typing import Optional

import numpy as np

# ---- the documented layout (docs/format.md) ---------------------------------

MAGIC = b"GRULITE\0"
FORMAT_VERSION = 3          # version 2 files are still read
HEADER_SIZE = 64
LAYER_REC = 32              # v3: kind word + 7 fields; v2: a GRU record (6 fields)
DENSE_REC_V2 = 16           # v2 only: a head record
KIND_GRU, KIND_DENSE = 1, 2
TENSOR_REC = 64
NAME_LEN = 32
CRC_START = 16
ALIGN = 64
DTYPE_F32 = 1
LAYOUT_PANEL16 = 2          # (nb, K, G, 16) panels, see docs/format.md
LANES = 16
FLAG_TIME_MAJOR = 1
MAX_LAYERS = 64
MAX_DENSE = 64
MAX_FEATURES = 1 << 20

# header field offsets
OFF_VERSION = 8
OFF_CRC = 12
OFF_FILE_SIZE = 16        # u64
OFF_HEADER_SIZE = 24
OFF_FLAGS = 28
OFF_INPUT_SIZE = 32
OFF_NUM_LAYERS = 36       # v3: every layer (GRU and head); v2: GRU layers
OFF_LAYER_REC = 40        # v3: bytes per layer record (32); v2: head layers
OFF_NUM_TENSORS = 44
OFF_META_OFF = 48         # u64
OFF_META_LEN = 56         # u64

# tensor-entry field offsets
T_DTYPE, T_LAYOUT, T_NDIM, T_GATES, T_D0, T_D1, T_OFFSET = 32, 36, 40, 44, 48, 52, 56


def u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def u64(b: bytes, off: int) -> int:
    return struct.unpack_from("<Q", b, off)[0]


def crc_of(b: bytes) -> int:
    return zlib.crc32(bytes(b[CRC_START:])) & 0xFFFFFFFF


def parse_grl(b: bytes) -> dict:
    """Parses an image by the documented layout (no validation beyond what
    parsing needs)."""
    assert b[:8] == MAGIC
    h = dict(version=u32(b, OFF_VERSION), crc=u32(b, OFF_CRC), file_size=u64(b, OFF_FILE_SIZE),
             header_size=u32(b, OFF_HEADER_SIZE), flags=u32(b, OFF_FLAGS),
             input_size=u32(b, OFF_INPUT_SIZE), num_layers=u32(b, OFF_NUM_LAYERS),
             layer_rec=u32(b, OFF_LAYER_REC), num_tensors=u32(b, OFF_NUM_TENSORS),
             meta_off=u64(b, OFF_META_OFF), meta_len=u64(b, OFF_META_LEN))
    # Records: v3 has a kind word, then the kind's fields; v2 has GRU records
    # then head records, kinds implied.  "pos" is each record's first field.
    if h["version"] == 2:
        kinds = [KIND_GRU] * h["num_layers"] + [KIND_DENSE] * h["layer_rec"]
    else:
        kinds = [u32(b, HEADER_SIZE + i * LAYER_REC) for i in range(h["num_layers"])]
    p = HEADER_SIZE
    layers, dense = [], []
    for kind in kinds:
        if h["version"] != 2:
            p += 4
        if kind == KIND_GRU:
            hs, nd, ra, bias, dt, rev = struct.unpack_from("<6I", b, p)
            layers.append(dict(pos=p, hidden_size=hs, num_directions=nd, reset_after=ra,
                               has_bias=bias, dtype=dt, reverse=rev))
        else:
            of, act, bias = struct.unpack_from("<3I", b, p)
            dense.append(dict(pos=p, out_features=of, activation=act, has_bias=bias))
        if h["version"] == 2:
            p += LAYER_REC if kind == KIND_GRU else DENSE_REC_V2
        else:
            p += LAYER_REC - 4
    table = p
    tensors = []
    for i in range(h["num_tensors"]):
        e = table + i * TENSOR_REC
        name = bytes(b[e:e + NAME_LEN]).split(b"\0", 1)[0].decode("ascii")
        tensors.append(dict(entry=e, name=name, dtype=u32(b, e + T_DTYPE),
                            layout=u32(b, e + T_LAYOUT), ndim=u32(b, e + T_NDIM),
                            gates=u32(b, e + T_GATES),
                            dims=(u32(b, e + T_D0), u32(b, e + T_D1)), offset=u64(b, e + T_OFFSET)))
    tables_end = table + h["num_tensors"] * TENSOR_REC
    meta = bytes(b[h["meta_off"]:h["meta_off"] + h["meta_len"]])
    return dict(header=h, kinds=kinds, layers=layers, dense=dense, table=table, tables_end=tables_end,
                tensors=tensors, metadata=meta)


def to_version_2(b: bytes) -> bytes:
    """A version-3 image rewritten as the version-2 layout it replaced (GRU
    records, then 16-byte head records; head tensors named "head<j>."),
    tensors and metadata where they were, CRC fixed: what an older
    grulite wrote for the same model."""
    P = parse_grl(b)
    h = P["header"]
    assert h["version"] == 3
    out = bytearray(b)
    n_gru = len(P["layers"])
    struct.pack_into("<I", out, OFF_VERSION, 2)
    struct.pack_into("<I", out, OFF_NUM_LAYERS, n_gru)
    struct.pack_into("<I", out, OFF_LAYER_REC, len(P["dense"]))        # v2: head layers
    p = HEADER_SIZE
    out[p:P["tables_end"]] = bytes(P["tables_end"] - p)
    for r in P["layers"]:
        struct.pack_into("<6I", out, p, r["hidden_size"], r["num_directions"], r["reset_after"],
                         r["has_bias"], r["dtype"], r["reverse"])
        p += LAYER_REC
    for r in P["dense"]:
        struct.pack_into("<3I", out, p, r["out_features"], r["activation"], r["has_bias"])
        p += DENSE_REC_V2
    for i in range(h["num_tensors"]):
        e = P["table"] + i * TENSOR_REC
        entry = bytearray(b[e:e + TENSOR_REC])
        name = P["tensors"][i]["name"]
        layer, rest = name.split(".", 1)
        if int(layer[1:]) >= n_gru:                                     # a head tensor
            new = f"head{int(layer[1:]) - n_gru}.{rest}".encode()
            entry[:NAME_LEN] = new + bytes(NAME_LEN - len(new))
        out[p + i * TENSOR_REC:p + (i + 1) * TENSOR_REC] = entry
    return with_crc(out)


def tensor_nbytes(t: dict) -> int:
    """Bytes a parsed panel16 tensor occupies: (nb, K, G, 16) or (nb, G, 16)."""
    G = t["gates"]
    if t["ndim"] == 2:
        K, N = t["dims"]
    else:
        K, N = 1, t["dims"][0]
    nb = -(-(N // G) // LANES)
    return 4 * nb * K * G * LANES


def tensor_array(b: bytes, t: dict) -> np.ndarray:
    """The payload of a parsed panel16 tensor, unpacked into PyTorch's layout:
    (G*H, K) for matrices (nn.GRU / nn.Linear weight), (G*H,) for biases.
    Asserts the padding lanes are zero."""
    G = t["gates"]
    if t["ndim"] == 2:
        K, N = t["dims"]
    else:
        K, N = 1, t["dims"][0]
    H = N // G
    nb = -(-H // LANES)
    n = nb * K * G * LANES
    P = np.frombuffer(b, dtype="<f4", count=n, offset=t["offset"]).reshape(nb, K, G, LANES)
    # (nb, K, G, 16) -> (G, nb*16, K) -> drop padding -> (G*H, K)
    full = P.transpose(2, 0, 3, 1).reshape(G, nb * LANES, K)
    assert not full[:, H:, :].any(), f"{t['name']}: padding lanes are not zero"
    W = full[:, :H, :].reshape(G * H, K)
    return W if t["ndim"] == 2 else W[:, 0]

def patch(b: bytes, off: int, value: int, fmt: str = "<I", fix_crc: bool = True) -> bytes:
    """A copy of image `b` with a field overwritten (and the CRC recomputed,
    so that the structural checks behind the checksum are exercised)."""
    out = bytearray(b)
    struct.pack_into(fmt, out, off, value)
    return with_crc(out) if fix_crc else bytes(out)


def with_crc(b) -> bytes:
    out = bytearray(b)
    struct.pack_into("<I", out, OFF_CRC, crc_of(out))
    return bytes(out)


# ---- loading hostile files in a child process ------------------------------

# The child loads each listed file with grulite.load and prints one JSON line
# per file, flushed, *after* the attempt.  A crash therefore leaves the
# culprit as the first file without a line.  A model that loads is also run
# once (to show that what validation accepts is safe to use).
CHILD_CODE = r"""
import json, sys
import numpy as np
import grulite
paths = json.load(sys.stdin)
out = sys.stdout
for i, p in enumerate(paths):
    rec = {"i": i}
    try:
        m = grulite.load(p)
    except BaseException as e:
        rec.update(ok=False, type=type(e).__name__, msg=str(e),
                   grulite_error=isinstance(e, grulite.GruliteError))
    else:
        rec.update(ok=True, type=None, msg="", grulite_error=False)
        c = m.config
        if c.input_size <= 4096 and m.nbytes < (1 << 24):
            x = np.linspace(-1, 1, 2 * 3 * c.input_size, dtype=np.float32).reshape(2, 3, -1)
            y, h = m(x, batch_first=True)
            rec["finite"] = bool(np.isfinite(y).all())
            if c.head:
                rec["head_finite"] = bool(np.isfinite(m.predict(x, batch_first=True)).all())
        rec["metadata"] = isinstance(m.metadata, dict)
        del m
    out.write(json.dumps(rec) + "\n")
    out.flush()
"""


class ChildCrash(AssertionError):
    pass


def load_in_child(paths, labels=None, timeout: float = 120.0) -> list:
    """Loads every path with grulite.load in one child process.

    Returns one dict per path (ok, type, msg, grulite_error).  If the child
    dies (signal, abort, non-zero exit, hang), raises ChildCrash naming the
    file being loaded when it died, after confirming it alone in a fresh
    child; when it does not reproduce alone, names the batch range instead.
    """
    paths = [os.fspath(p) for p in paths]
    labels = list(labels) if labels is not None else paths
    results, rc, err = _run_child(paths, timeout)
    if rc == 0 and len(results) == len(paths):
        return results
    k = len(results)
    where = labels[k] if k < len(labels) else "(after the last file)"
    if k < len(paths):
        alone, rc1, err1 = _run_child([paths[k]], timeout)
        if rc1 != 0 or len(alone) != 1:
            raise ChildCrash(f"grulite.load crashed the process (exit status {rc1}) on {where}: "
                             f"{paths[k]}\nstderr:\n{err1[-2000:]}")
    raise ChildCrash(f"the child died (exit status {rc}) while loading files {k}..{len(paths) - 1} "
                     f"of a batch of {len(paths)} (first unreported: {where}); not reproduced alone"
                     f"\nstderr:\n{err[-2000:]}")


def _run_child(paths, timeout):
    try:
        p = subprocess.run([sys.executable, "-c", CHILD_CODE], input=json.dumps(paths),
                           capture_output=True, text=True, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return [json.loads(l) for l in out.splitlines() if l.startswith("{")], "timeout", ""
    results = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return results, p.returncode, p.stderr


def child_env(extra: Optional[dict] = None) -> dict:
    """The current environment, with the directory of the grulite package this
    process imported first on PYTHONPATH (so children run the same build)."""
    import grulite

    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(grulite.__file__)))
    parts = [src] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    if extra:
        env.update(extra)
    return env
