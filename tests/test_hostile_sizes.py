"""Absurd sizes (child process, address space capped at 4 GiB): terabyte
broadcast views as x, state_dicts claiming hidden_size 2**31 made of
zero-stride views (no memory behind them), a hundred thousand layers.  They
must fail fast with GruliteError / MemoryError, not crash or hang.

A case that is not fixed at once gets an xfail reason in the table (strict:
it turns into a failure once fixed).  None is open now.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from helpers_format import (
    child_env,
)

# ===========================================================================
# 2. absurd sizes, in a child with the address space capped


ABSURD_CHILD = textwrap.dedent(r"""
    import json, resource, sys, time
    LIMIT = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    import numpy as np
    import grulite
    rng = np.random.default_rng(0)
    I = 3
    def sd(H=4, L=1):
        return {"weight_ih_l0": rng.standard_normal((3 * H, I)).astype(np.float32),
                "weight_hh_l0": rng.standard_normal((3 * H, H)).astype(np.float32)}
    m = grulite.from_state_dict(sd(), head=None)
    mh = grulite.from_state_dict(dict(sd(), **{"fc.weight": np.ones((2, 4), np.float32)}), head="fc")
    z = np.float32(0)
    def bc(*shape):                       # zero strides: no memory behind it
        return np.broadcast_to(z, shape)
    small = np.ones(I, np.float32)
    layers = {}                           # 5000 layers of H=512 (3 MiB a copy), no memory behind
    for k in range(5000):
        layers[f"weight_ih_l{k}"] = bc(1536, I if k == 0 else 512)
        layers[f"weight_hh_l{k}"] = bc(1536, 512)
    cases = {
        "bcast-call": lambda: m(np.broadcast_to(small, (2 ** 20, 2 ** 20, I))),
        "bcast-predict": lambda: mh.predict(np.broadcast_to(small, (2 ** 20, 2 ** 20, I))),
        "bcast-time-major": lambda: m(np.broadcast_to(small, (2 ** 20, 2 ** 20, I)), batch_first=False),
        "bcast-f64": lambda: m(np.broadcast_to(small.astype(np.float64), (2 ** 20, 2 ** 20, I))),
        "bcast-lengths": lambda: m(np.broadcast_to(small, (2 ** 20, 2 ** 20, I)),
                                   lengths=np.broadcast_to(np.int64(1), (2 ** 20,))),
        "bcast-stream": lambda: m.stream(1).step(np.broadcast_to(small, (1, 2 ** 36, I))),
        "bcast-steps-2**31": lambda: m(np.broadcast_to(small, (1, 2 ** 31, I))),
        "bcast-batch-2**31": lambda: m(np.broadcast_to(small, (2 ** 31, 1, I))),
        "stream-batch-2**31": lambda: m.stream(2 ** 31),
        "stream-batch-2**31-1": lambda: m.stream(2 ** 31 - 1),
        # A (3*2**31, 2**31) view overflows numpy's intp: W_hh claims 2**31 rows
        # with fewer columns, which numpy can build.
        "sd-hidden-2**31": lambda: grulite.from_state_dict({"weight_ih_l0": bc(3 * 2 ** 31, I),
                                                            "weight_hh_l0": bc(3 * 2 ** 31, 2 ** 28)}),
        "sd-hidden-2**21": lambda: grulite.from_state_dict({"weight_ih_l0": bc(3 * 2 ** 21, I),
                                                            "weight_hh_l0": bc(3 * 2 ** 21, 2 ** 21)}),
        "sd-input-2**21": lambda: grulite.from_state_dict({"weight_ih_l0": bc(12, 2 ** 21),
                                                           "weight_hh_l0": bc(12, 4)}),
        "sd-head-2**31": lambda: grulite.from_state_dict(dict(sd(), **{"fc.weight": bc(2 ** 31, 4)}),
                                                         head="fc"),
        "sd-5000-layers": lambda: grulite.from_state_dict(layers),
    }
    out = {}
    for name in json.loads(sys.argv[1]):
        t0 = time.perf_counter()
        try:
            cases[name]()
            rec = {"outcome": "ok"}
        except BaseException as e:
            rec = {"outcome": "error", "type": type(e).__name__, "msg": str(e)[:500],
                   "grulite_error": isinstance(e, grulite.GruliteError)}
        rec["seconds"] = time.perf_counter() - t0
        print(json.dumps(dict(rec, id=name)), flush=True)
""")

ABSURD = [
    # name, allowed exception types, message pattern (None: any), max seconds, xfail reason
    ("bcast-call", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-predict", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-time-major", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-f64", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-lengths", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-stream", ("GruliteError", "MemoryError"), None, 5, None),
    ("bcast-steps-2**31", ("GruliteError",), r"2\*\*31", 5, None),
    ("bcast-batch-2**31", ("GruliteError",), r"2\*\*31", 5, None),
    ("stream-batch-2**31", ("GruliteError",), r"batch_size", 5, None),
    ("stream-batch-2**31-1", ("GruliteError", "MemoryError"), None, 5, None),
    ("sd-hidden-2**31", ("GruliteError",), r"hidden_size", 5, None),
    ("sd-hidden-2**21", ("GruliteError",), r"hidden_size", 5, None),
    ("sd-input-2**21", ("GruliteError",), r"input_size", 5, None),
    ("sd-head-2**31", ("GruliteError",), r"out_features|head", 5, None),
    ("sd-5000-layers", ("GruliteError",), r"1 to 64 layers", 5, None),
]


@pytest.fixture(scope="module")
def absurd_results():
    names = [c[0] for c in ABSURD]
    p = subprocess.run([sys.executable, "-c", ABSURD_CHILD, json.dumps(names)],
                       capture_output=True, text=True, timeout=120, env=child_env())
    res = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            res[r["id"]] = r
    return res, p.returncode, p.stderr


@pytest.mark.caps_address_space
@pytest.mark.parametrize("name, types, match, max_s", [
    pytest.param(n, t, m, s, marks=[pytest.mark.xfail(strict=True, reason=x)] if x else [], id=n)
    for n, t, m, s, x in ABSURD])
def test_absurd_sizes(absurd_results, name, types, match, max_s):
    res, rc, err = absurd_results
    assert name in res, (f"the child died (status {rc}) before or while running {name!r}:\n"
                         f"{err[-2000:]}")
    r = res[name]
    assert r["outcome"] == "error", f"{name}: no exception"
    assert r["type"] in types, f"{name}: {r['type']}: {r['msg']}"
    if match:
        assert re.search(match, r["msg"]), f"{name}: message {r['msg']!r} lacks {match!r}"
    assert r["seconds"] < max_s, f"{name}: took {r['seconds']:.2f} s"
