"""The hostile-file matrix's machinery, shared by test_hostile_<importer>.py.

Hostile files for every importer (.grl, .npz, .pt, .safetensors, .onnx,
.keras) are loaded in child processes (batched, run in parallel):
truncated, bit-flipped, wrong magic, oversized claims, zip / deflate bombs
(a 1 GiB deflate bomb is generated here in ~0.1 s), malicious pickles.
Each case must end in the expected exception (GruliteError, or OSError
where said) with a useful message, within a time and peak-memory budget,
with no signal death and no payload run.

A bug found here that is not fixed at once gets ``xfail(strict=True)`` with
a reason saying what is wrong and where (the case tables take an xfail
reason); it turns into a failure (XPASS) once fixed: drop the marker then.
None is open now.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import shlex
import subprocess
import sys
import textwrap
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers_format import (
    child_env,
)
from support.files import (
    PROTO2,
    STOP,
    Evil,
    pk_call,
    pk_global,
    pk_ordered_dict,
    pk_str,
    pk_tuple,
    stored,
    torch_state_dict_parts,
    write_zip,
)
from support.models import random_state_dict

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(TESTS_DIR, "fixtures")
HAVE_ONNX = importlib.util.find_spec("onnx") is not None
HAVE_H5PY = importlib.util.find_spec("h5py") is not None
IS_LINUX = sys.platform.startswith("linux")


# ===========================================================================
# 3. hostile files


FILE_CHILD = textwrap.dedent(r"""
    import json, os, re, resource, signal, sys, time
    LIMIT = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    import numpy as np
    import grulite

    def status(field):
        with open("/proc/self/status") as f:
            m = re.search(field + r":\s+(\d+)", f.read())
        return int(m.group(1)) / 1024 if m else None

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    class Hang(BaseException):
        pass

    def on_alarm(*_):
        raise Hang()

    signal.signal(signal.SIGALRM, on_alarm)
    LOADERS = {"grl": grulite.load, "npz": grulite.from_npz, "pt": grulite.from_torch_file,
               "safetensors": grulite.from_safetensors, "onnx": grulite.from_onnx,
               "keras": grulite.from_keras}
    for n, c in enumerate(json.load(sys.stdin)):
        rec = {"id": c["id"]}
        base = status("VmRSS")
        # the peak since the last reset; without /proc/self/clear_refs, the
        # lifetime peak, which is right for the first case of a child
        peak_ok = (reset_peak() or n == 0) and base is not None
        t0 = time.perf_counter()
        signal.alarm(c["alarm"])
        try:
            m = LOADERS[c["importer"]](c["path"], **c["kwargs"])
            cfg = m.config
            if cfg.input_size <= 4096 and m.nbytes < (1 << 24):
                x = np.linspace(-1, 1, 2 * 3 * cfg.input_size, dtype=np.float32).reshape(2, 3, -1)
                y, h = m(x, batch_first=True)
                if cfg.head:
                    m.predict(x, batch_first=True)
            rec.update(outcome="ok")
        except Hang:
            rec.update(outcome="hang")
        except BaseException as e:
            rec.update(outcome="error", type=type(e).__name__, msg=str(e)[:3000],
                       grulite_error=isinstance(e, grulite.GruliteError))
        finally:
            signal.alarm(0)
        rec["seconds"] = time.perf_counter() - t0
        rec["peak_mb"] = (status("VmHWM") - base) if peak_ok else None
        print(json.dumps(rec), flush=True)
""")


def run_file_cases(cases: list, timeout: float = 120) -> dict:
    """Runs the cases in child processes, restarting after a crash or a hang;
    returns {id: record}.  A case that killed its child gets outcome
    "crash" (with the exit status) or "killed" (hung past the timeout)."""
    results: dict = {}
    pending = list(cases)
    while pending:
        try:
            p = subprocess.run([sys.executable, "-c", FILE_CHILD], input=json.dumps(pending),
                               capture_output=True, text=True, timeout=timeout, env=child_env())
            out, rc, err = p.stdout, p.returncode, p.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc, err = "timeout", ""
        done = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        for r in done:
            results[r["id"]] = r
        if len(done) == len(pending):
            break
        culprit = pending[len(done)]
        results[culprit["id"]] = {"id": culprit["id"], "seconds": None, "peak_mb": None,
                                  "outcome": "killed" if rc == "timeout" else "crash",
                                  "status": rc, "stderr": err[-2000:]}
        pending = pending[len(done) + 1:]
    return results


# ---- writers ------------------------------------------------------------------------

def deflate_zero_bomb(n_mib: int, prefix: bytes = b"") -> tuple:
    """(raw deflate data, crc32, size) of prefix + n_mib MiB of zeros, made
    in ~0.1 s: one 16 MiB block compressed once with a full flush (byte
    aligned, dictionary reset) and repeated, then an empty final block."""
    chunk = bytes(16 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    blk = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    head = b""
    if prefix:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    n = n_mib // 16
    crc = zlib.crc32(prefix)
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    return head + blk * n + b"\x03\x00", crc, len(prefix) + n * len(chunk)


def pt_state_dict(arrays: dict, numel=None, shapes=None) -> tuple:
    """(data.pkl bytes, {key: raw bytes}) of a torch.save'd state_dict;
    numel / shapes ({name: value}) make tensors lie."""
    items, records = torch_state_dict_parts(arrays, numel=numel, shapes=shapes)
    return PROTO2 + pk_ordered_dict(items) + STOP, records


def write_pt(path, pkl: bytes, records: dict, extra=()) -> str:
    entries = [stored("archive/data.pkl", pkl), stored("archive/byteorder", b"little")]
    entries += [stored(f"archive/data/{k}", v) for k, v in records.items()]
    entries += list(extra)
    entries.append(stored("archive/version", b"3\n"))
    return write_zip(path, entries)


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_len(field: int, payload: bytes) -> bytes:
    return varint((field << 3) | 2) + varint(len(payload)) + payload


# ---- the malicious payloads -----------------------------------------------------------

def touch_cmd(marker: str) -> str:
    return f"touch {shlex.quote(marker)}"


def pickle_payloads(marker: str) -> dict:
    cmd = touch_cmd(marker).encode()
    return {
        # GLOBAL os.system + REDUCE, protocol 2 (what pickle.dumps(Evil) writes)
        "reduce-os-system": pickle.dumps(Evil(touch_cmd(marker)), protocol=2),
        # protocol 4: STACK_GLOBAL builtins.exec
        "stack-global-exec": (b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93"
                              + b"\x8c" + bytes([len(f"open({marker!r}, 'w')")])
                              + f"open({marker!r}, 'w')".encode() + b"\x85R."),
        # INST opcode (protocol 0): instantiates posix.system with the argument
        "inst-posix-system": b"(S'" + cmd + b"'\niposix\nsystem\n.",
        # hidden inside an allowed container: an OrderedDict built from the result of a call
        "nested-subprocess": (PROTO2 + pk_call(pk_global("collections", "OrderedDict"))
                              + b"(" + pk_str("gru.weight_ih_l0")
                              + pk_call(pk_global("subprocess", "check_output"),
                                         pk_tuple(pk_str("sh"), pk_str("-c"),
                                                   pk_str(touch_cmd(marker))))
                              + b"u."),
    }


# ---- case building ------------------------------------------------------------------------

class Case:
    def __init__(self, cid, importer, build, *, match=None, types=("GruliteError",),
                 ok_allowed=False, max_mb=200, max_s=15, alarm=30, kwargs=None, marker=False,
                 xfail=None, needs=None):
        self.id, self.importer, self.build = cid, importer, build
        self.match, self.types, self.ok_allowed = match, types, ok_allowed
        self.max_mb, self.max_s, self.alarm = max_mb, max_s, alarm
        self.kwargs = kwargs or {}
        self.marker, self.xfail, self.needs = marker, xfail, needs


SD = random_state_dict(11, input_size=3, hidden=(5,), head=(2,))
SD_KW = {"head": "fc0:softmax"}


def mutations(importer, base, ext, *, flips_ok=True, match_trunc=None, match_magic=None,
               needs=None, kwargs=None):
    """The generic cases: empty, truncated, bit-flipped, wrong magic, another
    format's file."""
    kw = kwargs or {}
    cases = []

    def from_bytes_of(fn):
        def build(d):
            data = open(base(d), "rb").read()
            p = os.path.join(d, f"{importer}_{fn.__name__}{ext}")
            with open(p, "wb") as f:
                f.write(fn(data))
            return p
        return build

    def empty(data):
        return b""

    def head16(data):
        return data[:16]

    def half(data):
        return data[:len(data) // 2]

    def minus1(data):
        return data[:-1]

    def zeros_magic(data):
        return b"\x00" * 8 + data[8:]

    def garbage(data):
        return np.random.default_rng(5).integers(0, 256, len(data), dtype=np.uint8).tobytes()

    for fn, m in [(empty, match_trunc), (head16, match_trunc), (half, match_trunc),
                  (minus1, match_trunc), (zeros_magic, match_magic), (garbage, match_magic)]:
        cases.append(Case(f"{importer}-{fn.__name__}", importer, from_bytes_of(fn), match=m,
                          kwargs=kw, needs=needs))
    for k in range(12):
        def flip(data, k=k):
            b = bytearray(data)
            rng = np.random.default_rng(1000 + k)
            pos = int(rng.integers(0, len(b)))
            b[pos] ^= 1 << int(rng.integers(0, 8))
            if k >= 8:                                   # a burst of 32 random bytes
                pos = int(rng.integers(0, max(1, len(b) - 32)))
                b[pos:pos + 32] = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
            return bytes(b)
        flip.__name__ = f"flip{k}"
        cases.append(Case(f"{importer}-flip{k}", importer, from_bytes_of(flip), ok_allowed=flips_ok,
                          kwargs=kw, needs=needs))
    return cases


def _available(c: Case) -> bool:
    return (c.needs != "onnx" or HAVE_ONNX) and (c.needs != "h5py" or HAVE_H5PY)


def file_matrix(cases: list):
    """The fixture and the test of one importer's case table, for its test
    module: ``file_results, test_hostile_file = file_matrix(CASES)``."""
    by_id = {c.id: c for c in cases}
    assert len(by_id) == len(cases), "duplicate case ids"

    @pytest.fixture(scope="module")
    def file_results(tmp_path_factory):
        """Builds every case's file and runs them in child processes, three at a
        time: one child for the quick cases, one per heavy case."""
        d = str(tmp_path_factory.mktemp("hostile"))
        groups: dict = {}
        for c in cases:
            if not _available(c):
                continue
            path = c.build(d)
            heavy = c.xfail is not None or "bomb" in c.id
            # heavy cases get a child each (their peak memory is then exact even
            # where /proc/self/clear_refs is not writable); the others are batched
            key = f"0-{c.id}" if heavy else f"1-{c.importer}"
            groups.setdefault(key, []).append(dict(id=c.id, importer=c.importer, path=path,
                                                   kwargs=c.kwargs, alarm=c.alarm))
        with ThreadPoolExecutor(max_workers=3) as ex:
            parts = list(ex.map(run_file_cases, [groups[k] for k in sorted(groups)]))
        results = {}
        for part in parts:
            results.update(part)
        return d, results

    @pytest.mark.caps_address_space
    @pytest.mark.skipif(not IS_LINUX, reason="the child caps its address space with RLIMIT_AS and "
                        "reads its peak RSS from /proc")
    @pytest.mark.parametrize("cid", [
        pytest.param(c.id, id=c.id, marks=([pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail
                                            else []))
        for c in cases])
    def test_hostile_file(file_results, cid):
        c = by_id[cid]
        if not _available(c):
            pytest.skip(f"needs {c.needs}")
        d, results = file_results
        r = results[cid]
        where = f"{cid} ({c.importer})"
        assert r["outcome"] not in ("crash", "killed"), (
            f"{where}: the child process died (status {r.get('status')}: a signal if negative, "
            f"or hung past the timeout)\n{r.get('stderr', '')}")
        assert r["outcome"] != "hang", f"{where}: still running after {c.alarm} s"
        if c.marker:
            pwned = [f for f in os.listdir(d) if f.startswith("PWNED")]
            assert not pwned, f"{where}: the payload ran ({pwned})"
        if r["outcome"] == "ok":
            assert c.ok_allowed, f"{where}: loaded without complaint"
        else:
            assert r["type"] in c.types, f"{where}: {r['type']}: {r['msg']}"
            if c.match:
                assert re.search(c.match, r["msg"]), f"{where}: message {r['msg']!r} lacks {c.match!r}"
        assert r["seconds"] < c.max_s, f"{where}: took {r['seconds']:.1f} s"
        if r["peak_mb"] is not None:
            assert r["peak_mb"] < c.max_mb, f"{where}: peak memory grew by {r['peak_mb']:.0f} MiB"

    return file_results, test_hostile_file
