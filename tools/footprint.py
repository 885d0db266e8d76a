#!/usr/bin/env python3
"""Footprint of grulite: import cost, memory of load + run, file and package
sizes, and page sharing of memory-mapped models between processes.

Every measurement runs in a fresh child interpreter (``python -c ...``) and
is repeated; the tables show medians.  The children import nothing before
the thing measured (no json, no argparse): they report a Python literal on
one stdout line that this script parses.

    python tools/footprint.py                      # everything, < 3 minutes
    python tools/footprint.py --runs 3 --skip-wheel
    python tools/footprint.py --from-wheel         # measure the installed wheel, not src/

Outputs: Markdown tables on stdout and in ``tools/footprint/footprint.md``,
all numbers (every run) in ``tools/footprint/footprint.json``.

Needs torch, onnx and onnxruntime (for the models and the comparison rows)
and a grulite importable from ``src/`` (``python setup.py build_ext --inplace``).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT_DIR = os.path.join(HERE, "footprint")
MiB = 1024 * 1024

# Model shapes of section 2 and section 5.
B, T, I, H, L = 1, 100, 64, 256, 2
BIG_H, BIG_L = 1024, 2
DTYPES = ("float32", "float16", "int8")
N_SHARED = 4

# Targets.
IMPORT_BEYOND_NUMPY_MS = 20.0
RSS_BEYOND_NUMPY_MIB = 10.0
INSTALLED_NO_DATA_BYTES = 1 * MiB

# ---------------------------------------------------------------------------
# Child snippets.  PRELUDE defines _report() with builtins only; it imports
# `resource` when called, after everything measured.

PRELUDE = r'''
import time as _time
def _kv(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(':') and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1])
    except OSError:
        pass
    return out
def _mapping(path):
    """Rss/Pss/... lines (kB) of the mapping(s) of `path` in /proc/self/smaps."""
    import os as _o
    real = _o.path.realpath(path)
    res, cur = {}, None
    with open('/proc/self/smaps') as f:
        for line in f:
            head = line.split()
            if head and '-' in head[0] and not head[0].endswith(':'):
                cur = len(head) >= 6 and ' '.join(head[5:]) == real
                continue
            if cur and len(head) >= 2 and head[0].endswith(':') and head[1].isdigit():
                res[head[0][:-1]] = res.get(head[0][:-1], 0) + int(head[1])
    return res
def _by_mapping():
    """Rss (kB) of /proc/self/smaps grouped by backing path."""
    res, name = {}, None
    with open('/proc/self/smaps') as f:
        for line in f:
            head = line.split()
            if head and '-' in head[0] and not head[0].endswith(':'):
                name = ' '.join(head[5:]) if len(head) >= 6 else '[anon]'
                continue
            if head and head[0] == 'Rss:':
                res[name] = res.get(name, 0) + int(head[1])
    return res
def _report(**kw):
    import resource as _r, sys as _s
    kw['maxrss_kib'] = _r.getrusage(_r.RUSAGE_SELF).ru_maxrss
    kw['status'] = {k: v for k, v in _kv('/proc/self/status').items()
                    if k in ('VmHWM', 'VmRSS', 'RssAnon', 'RssFile', 'RssShmem')}
    kw['rollup'] = _kv('/proc/self/smaps_rollup')
    kw['nmods'] = len(_s.modules)
    _s.stdout.write('@@RESULT ' + repr(kw) + '\n')
    _s.stdout.flush()
'''

INPUT = "np.random.default_rng(0).standard_normal(({B}, {T}, {I})).astype(np.float32)"

SNIPPETS = {
    "python": "_report()",
    "import numpy": """
_t0 = _time.perf_counter()
import numpy
_report(import_s=_time.perf_counter() - _t0)
""",
    "import grulite": """
_t0 = _time.perf_counter()
import grulite
_report(import_s=_time.perf_counter() - _t0, grulite_file=grulite.__file__)
""",
    "import numpy, then grulite": """
_t0 = _time.perf_counter()
import numpy
_t1 = _time.perf_counter()
import grulite
_t2 = _time.perf_counter()
_report(import_s=_t2 - _t0, numpy_s=_t1 - _t0, grulite_s=_t2 - _t1)
""",
    "numpy alone": """
_t0 = _time.perf_counter()
import numpy as np
_t1 = _time.perf_counter()
x = {INPUT}
_report(import_s=_t1 - _t0, ysum=float(x.sum()))
""",
    "grulite": """
_t0 = _time.perf_counter()
import numpy as np
import grulite
_t1 = _time.perf_counter()
x = {INPUT}
m = grulite.load({path!r})
m.num_threads = 1
_t2 = _time.perf_counter()
y, h = m(x)
_t3 = _time.perf_counter()
_report(import_s=_t1 - _t0, load_s=_t2 - _t1, run_s=_t3 - _t2, ysum=float(y.sum()),
        grl=_mapping({path!r}))
""",
    "torch": """
_t0 = _time.perf_counter()
import numpy as np
import torch
_t1 = _time.perf_counter()
torch.set_num_threads(1)
x = {INPUT}
gru = torch.nn.GRU({I}, {H}, {L}, batch_first=True)
gru.load_state_dict(torch.load({path!r}, weights_only=True))
gru.eval()
_t2 = _time.perf_counter()
with torch.inference_mode():
    y, h = gru(torch.from_numpy(x))
_t3 = _time.perf_counter()
_report(import_s=_t1 - _t0, load_s=_t2 - _t1, run_s=_t3 - _t2, ysum=float(y.sum()))
""",
    "onnxruntime": """
_t0 = _time.perf_counter()
import numpy as np
import onnxruntime as ort
_t1 = _time.perf_counter()
x = {INPUT}
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
sess = ort.InferenceSession({path!r}, so, providers=['CPUExecutionProvider'])
_t2 = _time.perf_counter()
y, h = sess.run(None, {{'x': x}})
_t3 = _time.perf_counter()
_report(import_s=_t1 - _t0, load_s=_t2 - _t1, run_s=_t3 - _t2, ysum=float(y.sum()))
""",
    # analysis only: where grulite's memory goes
    "breakdown numpy": """
import numpy as np
x = {INPUT}
_report(maps=_by_mapping())
""",
    "breakdown grulite": """
import numpy as np
import grulite
x = {INPUT}
m = grulite.load({path!r})
m.num_threads = 1
y, h = m(x)
_report(maps=_by_mapping())
""",
    "tracemalloc": """
import tracemalloc
tracemalloc.start()
import numpy as np
_a = tracemalloc.get_traced_memory()
import grulite
_b = tracemalloc.get_traced_memory()
x = {INPUT}
m = grulite.load({path!r})
m.num_threads = 1
y, h = m(x)
_c = tracemalloc.get_traced_memory()
_report(after_numpy=_a, after_grulite=_b, after_run=_c)
""",
}

SHARED_CHILD = """
import sys
import numpy as np
import grulite
x = {INPUT}
if {copy!r}:
    with open({path!r}, 'rb') as f:
        m = grulite.from_bytes(f.read())
else:
    m = grulite.load({path!r})
m.num_threads = 1
y, h = m(x)
del y, h
sys.stdout.write('ready\\n')
sys.stdout.flush()
sys.stdin.readline()
"""

MAKE_MODELS = r"""
import os, sys
import numpy as np
import torch
import grulite
out = {out!r}
torch.manual_seed(0)
gru = torch.nn.GRU({I}, {H}, {L}, batch_first=True).eval()
sd = gru.state_dict()
torch.save(sd, os.path.join(out, 'gru.pt'))
for dt in {dtypes!r}:
    grulite.from_state_dict(sd, dtype=dt).save(os.path.join(out, 'gru_%s.grl' % dt))

class Wrap(torch.nn.Module):
    def __init__(self, g):
        super().__init__()
        self.g = g
    def forward(self, x):
        return self.g(x)
x = torch.zeros({B}, {T}, {I})
torch.onnx.export(Wrap(gru), (x,), os.path.join(out, 'gru.onnx'), input_names=['x'],
                  output_names=['y', 'h_n'], dynamo=False)

big = torch.nn.GRU({I}, {BIG_H}, {BIG_L}, batch_first=True)
grulite.from_state_dict(big.state_dict()).save(os.path.join(out, 'big_float32.grl'))
print('ok')
"""


def fmt_snippet(src: str, **kw) -> str:
    kw.setdefault("B", B)
    kw.setdefault("T", T)
    kw.setdefault("I", I)
    kw.setdefault("H", H)
    kw.setdefault("L", L)
    kw.setdefault("INPUT", INPUT.format(B=B, T=T, I=I))
    return src.format(**kw)


# ---------------------------------------------------------------------------
# Running children

class ChildError(RuntimeError):
    pass


def child_env(grulite_path: str, pycache: str = None) -> dict:
    """Environment of the children: grulite first on PYTHONPATH; with
    `pycache`, bytecode is written and read under that directory
    (PYTHONPYCACHEPREFIX), as an installed package has its .pyc files,
    without writing into the checkout; without it, the caller's setting
    (PYTHONDONTWRITEBYTECODE=1 makes every import compile grulite's .py)."""
    env = dict(os.environ)
    env.pop("PYTHONTRACEMALLOC", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    env["PYTHONPATH"] = grulite_path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(code: str, env: dict, timeout: float = 120.0) -> dict:
    """Runs `python -c PRELUDE+code` in a fresh process; its report plus the
    wall time of the whole child (start, run, exit) seen from here."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PRELUDE + code], env=env, cwd=tempfile.gettempdir(),
                       capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise ChildError(f"child failed (rc={p.returncode}):\n{p.stderr.strip()[-2000:]}")
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT "):
            res = ast.literal_eval(line[len("@@RESULT "):])
            res["wall_s"] = wall
            return res
    raise ChildError(f"child printed no result:\n{p.stdout[-1000:]}\n{p.stderr[-1000:]}")


def run_cases(cases: list, env: dict, runs: int, log) -> dict:
    """cases: [(name, code)].  One unrecorded warm-up of each, then `runs`
    rounds, interleaved so that drift hits every case alike."""
    results = {name: [] for name, _ in cases}
    errors = {}
    for name, code in cases:
        try:
            run_child(code, env)
        except (ChildError, subprocess.TimeoutExpired) as e:
            errors[name] = str(e)
            log(f"  ! {name}: {e}")
    for _ in range(runs):
        for name, code in cases:
            if name in errors:
                continue
            try:
                results[name].append(run_child(code, env))
            except (ChildError, subprocess.TimeoutExpired) as e:
                errors[name] = str(e)
                log(f"  ! {name}: {e}")
    return {"runs": results, "errors": errors}


def med(rows: list, key) -> float:
    vals = [key(r) for r in rows]
    return statistics.median(vals) if vals else float("nan")


def span(rows: list, key, scale=1.0, nd=1) -> str:
    vals = [key(r) * scale for r in rows]
    if not vals:
        return "–"
    return f"{min(vals):.{nd}f}–{max(vals):.{nd}f}"


def verdict(ok) -> str:
    return "**PASS**" if ok else "**FAIL**"


def maxrss_mib(r: dict) -> float:
    return r["maxrss_kib"] / 1024.0


def rss_mib(r: dict) -> float:
    """Peak RSS of the child: VmHWM of its own address space.  (ru_maxrss
    also counts the pre-exec image of the forked parent, so it never reads
    below this script's own RSS; it is shown beside.)"""
    return r["status"].get("VmHWM", 0) / 1024.0


# ---------------------------------------------------------------------------
# Sections

NOPYC = "import numpy, then grulite, inherited bytecode setting"


def section_import(env: dict, env_nopyc: dict, runs: int, log) -> tuple:
    log("[1] import cost")
    names = ["python", "import numpy", "import grulite", "import numpy, then grulite"]
    cases = [(n, fmt_snippet(SNIPPETS[n])) for n in names]
    data = run_cases(cases, env, runs, log)
    extra = run_cases([(NOPYC, fmt_snippet(SNIPPETS["import numpy, then grulite"]))],
                      env_nopyc, runs, log)
    data["runs"].update(extra["runs"])
    data["errors"].update(extra["errors"])
    R = data["runs"]
    md = ["## 1. Import cost", "",
          f"Median of {runs} fresh processes (after one warm-up each).  *import* is "
          "`time.perf_counter()` around the import statement inside the child; *child wall* "
          "is the whole `python -c` process seen from the parent (start-up, import, exit); "
          "peak RSS is the child's VmHWM (`ru_maxrss` beside: on Linux it also counts the "
          "forked parent's image before `exec`, so it cannot read below this script's RSS).  "
          "Bytecode is cached (`PYTHONPYCACHEPREFIX` in a temp dir, filled by the warm-up), "
          "as for an installed package; the last row keeps the caller's bytecode setting"
          + (" (`PYTHONDONTWRITEBYTECODE=1` here: grulite's `.py` files have no `.pyc` beside "
             "them in a source checkout, so they are compiled at every import)"
             if os.environ.get("PYTHONDONTWRITEBYTECODE") else "") + ".", "",
          "| child | import (ms) | import range (ms) | child wall (ms) | peak RSS = VmHWM (MiB) "
          "| ru_maxrss (MiB) | modules |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names + [NOPYC]:
        rows = R.get(n)
        if not rows:
            md.append(f"| `{n}` | error | | | | | |")
            continue
        imp = "–" if n == "python" else f"{med(rows, lambda r: r['import_s']) * 1e3:.1f}"
        rng = "–" if n == "python" else span(rows, lambda r: r["import_s"], 1e3)
        md.append(f"| `{n}` | {imp} | {rng} | {med(rows, lambda r: r['wall_s']) * 1e3:.1f} | "
                  f"{med(rows, rss_mib):.1f} | {med(rows, maxrss_mib):.1f} | "
                  f"{int(med(rows, lambda r: r['nmods']))} |")
        if "grulite_s" in rows[0]:
            md.append(f"| ↳ of which `import grulite` after numpy | "
                      f"{med(rows, lambda r: r['grulite_s']) * 1e3:.1f} | "
                      f"{span(rows, lambda r: r['grulite_s'], 1e3)} | | | | |")
    split = R["import numpy, then grulite"]
    md.append("")
    checks = []
    summary = {}
    if R["import numpy"] and R["import grulite"]:
        beyond = (med(R["import grulite"], lambda r: r["import_s"])
                  - med(R["import numpy"], lambda r: r["import_s"])) * 1e3
        wall_beyond = (med(R["import grulite"], lambda r: r["wall_s"])
                       - med(R["import numpy"], lambda r: r["wall_s"])) * 1e3
        rss_beyond = med(R["import grulite"], rss_mib) - med(R["import numpy"], rss_mib)
        after = med(split, lambda r: r["grulite_s"]) * 1e3 if split else float("nan")
        summary = dict(import_beyond_numpy_ms=beyond, wall_beyond_numpy_ms=wall_beyond,
                       rss_beyond_numpy_mib=rss_beyond, grulite_after_numpy_ms=after)
        checks.append(("import grulite − import numpy (median import times)",
                       f"{beyond:.1f} ms", f"≤ {IMPORT_BEYOND_NUMPY_MS:g} ms",
                       beyond <= IMPORT_BEYOND_NUMPY_MS))
        checks.append(("import grulite after numpy, same process (median)",
                       f"{after:.1f} ms", f"≤ {IMPORT_BEYOND_NUMPY_MS:g} ms",
                       after <= IMPORT_BEYOND_NUMPY_MS))
        md += ["| measure | value | target | result |", "|---|---:|---:|---|"]
        for name, val, tgt, ok in checks:
            md.append(f"| {name} | {val} | {tgt} | {verdict(ok)} |")
        md.append(f"| child wall: grulite − numpy (info) | {wall_beyond:.1f} ms | | |")
        md.append(f"| peak RSS: grulite − numpy (info) | {rss_beyond:.2f} MiB | | |")
        if R.get(NOPYC):
            nopyc = med(R[NOPYC], lambda r: r["grulite_s"]) * 1e3
            summary["grulite_after_numpy_nopyc_ms"] = nopyc
            md.append(f"| import grulite after numpy, inherited bytecode setting (info) | "
                      f"{nopyc:.1f} ms | | |")
        md.append("")
    for n, e in data["errors"].items():
        md.append(f"> ERROR in `{n}`: {e.splitlines()[-1] if e else e}")
    return md, {"data": data, "summary": summary,
                "checks": [dict(name=c[0], value=c[1], target=c[2], ok=c[3]) for c in checks]}


def section_run(env: dict, runs: int, models: dict, log) -> tuple:
    log("[2] load + one run")
    cases = [("numpy alone", fmt_snippet(SNIPPETS["numpy alone"]))]
    for dt in DTYPES:
        cases.append((f"grulite {dt}", fmt_snippet(SNIPPETS["grulite"], path=models[f"grl_{dt}"])))
    cases.append(("torch", fmt_snippet(SNIPPETS["torch"], path=models["pt"])))
    cases.append(("onnxruntime", fmt_snippet(SNIPPETS["onnxruntime"], path=models["onnx"])))
    data = run_cases(cases, env, runs, log)
    R = data["runs"]
    base = med(R["numpy alone"], rss_mib) if R["numpy alone"] else float("nan")
    md = ["## 2. Peak RSS: load a model + one run", "",
          f"B={B}, T={T}, I={I}, H={H}, {L} layers, one thread everywhere; median of {runs} "
          "fresh processes.  *numpy alone* imports numpy and makes the same input array.  "
          "torch builds `nn.GRU`, `load_state_dict(torch.load(.pt))`, one forward under "
          "`inference_mode`; ONNX Runtime makes an `InferenceSession` from the `.onnx` "
          "(`torch.onnx.export(..., dynamo=False)`) and runs once.  Peak RSS is the "
          "child's VmHWM; Δ is against numpy alone.  Σy (sum of the output) checks that all "
          "compute the same thing.", "",
          "| runtime | peak RSS (MiB) | range (MiB) | Δ vs numpy (MiB) | anon / file RSS at exit (MiB) "
          "| import (ms) | load (ms) | run (ms) | child wall (ms) | Σy |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _ in cases:
        rows = R[name]
        if not rows:
            md.append(f"| {name} | error | | | | | | | | |")
            continue
        peak = med(rows, rss_mib)
        anon = med(rows, lambda r: r["status"].get("RssAnon", 0)) / 1024
        filer = med(rows, lambda r: r["status"].get("RssFile", 0)) / 1024
        ld = "–" if "load_s" not in rows[0] else f"{med(rows, lambda r: r['load_s']) * 1e3:.2f}"
        rn = "–" if "run_s" not in rows[0] else f"{med(rows, lambda r: r['run_s']) * 1e3:.2f}"
        md.append(f"| {name} | {peak:.1f} | {span(rows, rss_mib)} | "
                  f"{'–' if name == 'numpy alone' else f'{peak - base:+.1f}'} | "
                  f"{anon:.1f} / {filer:.1f} | {med(rows, lambda r: r['import_s']) * 1e3:.1f} | "
                  f"{ld} | {rn} | {med(rows, lambda r: r['wall_s']) * 1e3:.0f} | "
                  f"{rows[0]['ysum']:.4f} |")
    md.append("")
    checks = []
    md += ["| target | peak RSS − numpy alone | target | result |", "|---|---:|---:|---|"]
    for dt in DTYPES:
        rows = R[f"grulite {dt}"]
        if not rows:
            checks.append((f"grulite {dt} load+run", "error", f"≤ {RSS_BEYOND_NUMPY_MIB:g} MiB", False))
        else:
            d = med(rows, rss_mib) - base
            checks.append((f"grulite {dt} load+run", f"{d:+.2f} MiB",
                           f"≤ {RSS_BEYOND_NUMPY_MIB:g} MiB", d <= RSS_BEYOND_NUMPY_MIB))
    for name, val, tgt, ok in checks:
        md.append(f"| {name} | {val} | {tgt} | {verdict(ok)} |")
    md.append("")
    if R["grulite float32"]:
        g = R["grulite float32"][0].get("grl", {})
        md.append(f"The `.grl` mapping in a float32 child: Size {g.get('Size', 0)} kB, "
                  f"Rss {g.get('Rss', 0)} kB, Pss {g.get('Pss', 0)} kB "
                  f"(file {os.path.getsize(models['grl_float32'])} bytes).")
        md.append("")
    for n, e in data["errors"].items():
        md.append(f"> ERROR in `{n}`: {e.splitlines()[-1] if e else e}")
    return md, {"data": data, "baseline_mib": base,
                "checks": [dict(name=c[0], value=c[1], target=c[2], ok=c[3]) for c in checks]}


def section_files(models: dict) -> tuple:
    f32 = os.path.getsize(models["grl_float32"])
    md = ["## 3. Model file sizes", "",
          f"The same random `nn.GRU({I}, {H}, num_layers={L})` "
          f"({3 * H * (I + H + 2) + 3 * H * (2 * H + 2) * (L - 1)} parameters).", "",
          "| file | bytes | ratio to float32 .grl |", "|---|---:|---:|"]
    rows = {}
    for label, key in [("grulite float32 .grl", "grl_float32"), ("grulite float16 .grl", "grl_float16"),
                       ("grulite int8 .grl", "grl_int8"), ("ONNX (.onnx, float32)", "onnx"),
                       ("torch state_dict (.pt)", "pt")]:
        n = os.path.getsize(models[key])
        rows[key] = n
        md.append(f"| {label} | {n:,} | {n / f32:.3f} |")
    md.append("")
    return md, {"bytes": rows}


def source_tree_key(repo: str) -> str:
    h = hashlib.sha256()
    for path in sorted(iter_source(repo)):
        rel = os.path.relpath(path, repo)
        h.update(rel.encode())
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


SKIP_DIRS = {".git", "build", "dist", ".pytest_cache", ".benchmarks", "__pycache__", "footprint",
             ".venv", ".mypy_cache"}


def _skip_name(name: str) -> bool:
    return (name in SKIP_DIRS or name.endswith(".egg-info") or name.endswith(".so")
            or name.endswith(".pyd") or name.endswith(".o") or name.startswith("build-")
            or name.endswith(".tmp~"))


# What a wheel is built from: the top-level files (setup.py, pyproject.toml,
# README.md, ...) and these directories; tests/, tools/, docs/ are not packaged.
WHEEL_DIRS = ("include", "src")


def _wheel_ignore(repo: str):
    def ignore(d, names):
        top = os.path.abspath(d) == os.path.abspath(repo)
        return [n for n in names if _skip_name(n) or
                (top and os.path.isdir(os.path.join(d, n)) and n not in WHEEL_DIRS)]
    return ignore


def iter_source(repo: str):
    ignore = _wheel_ignore(repo)
    for root, dirs, files in os.walk(repo):
        skip = set(ignore(root, dirs + files))
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files = [f for f in files if f not in skip]
        for fn in files:
            if not _skip_name(fn):
                yield os.path.join(root, fn)


def build_wheel(repo: str, cache_root: str, use_cache: bool, log) -> tuple:
    """A wheel of a copy of the working tree (the checkout itself is not
    touched: no build/ or .egg-info in it).  Cached by a hash of the sources."""
    key = source_tree_key(repo)
    cdir = os.path.join(cache_root, key)
    if use_cache and os.path.isdir(cdir):
        wheels = [f for f in os.listdir(cdir) if f.endswith(".whl")]
        if wheels:
            log(f"  wheel from cache {cdir}")
            return os.path.join(cdir, wheels[0]), 0.0, True, key
    with tempfile.TemporaryDirectory(prefix="grulite-src-") as src:
        copy = os.path.join(src, "grulite")
        shutil.copytree(repo, copy, ignore=_wheel_ignore(repo))
        out = os.path.join(src, "wheelhouse")
        cmd = [sys.executable, "-m", "pip", "wheel", copy, "-w", out, "--no-deps",
               "--no-build-isolation", "-q", "--disable-pip-version-check"]
        log("  " + " ".join(cmd[2:4]) + " <copy of the tree> --no-deps --no-build-isolation")
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise ChildError("pip wheel failed:\n" + (p.stdout + p.stderr)[-3000:])
        whl = [f for f in os.listdir(out) if f.endswith(".whl")][0]
        # keep the cache small: the 3 most recent source states
        if os.path.isdir(cache_root):
            old = sorted((os.path.join(cache_root, d) for d in os.listdir(cache_root)),
                         key=os.path.getmtime)[:-2]
            for d in old:
                shutil.rmtree(d, ignore_errors=True)
        os.makedirs(cdir, exist_ok=True)
        shutil.copy2(os.path.join(out, whl), os.path.join(cdir, whl))
    return os.path.join(cdir, whl), dt, False, key


def tree_bytes(path: str) -> tuple:
    """(sum of file sizes, disk usage in blocks*512)."""
    size = disk = 0
    for root, _, files in os.walk(path):
        for fn in files:
            st = os.lstat(os.path.join(root, fn))
            size += st.st_size
            disk += st.st_blocks * 512
    return size, disk


def section_package(repo: str, tmp: str, use_cache: bool, log) -> tuple:
    log("[4] wheel + installed size")
    cache_root = os.path.join(tempfile.gettempdir(), "grulite-footprint-wheels")
    whl, build_s, cached, key = build_wheel(repo, cache_root, use_cache, log)
    target = os.path.join(tmp, "site")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                        "--disable-pip-version-check", "--target", target, whl],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise ChildError("pip install --target failed:\n" + (p.stdout + p.stderr)[-3000:])
    pkg = os.path.join(target, "grulite")
    whl_size = os.path.getsize(whl)
    with zipfile.ZipFile(whl) as z:
        infos = z.infolist()
    data_c = sum(i.compress_size for i in infos if "/data/" in i.filename)
    data_u = sum(i.file_size for i in infos if "/data/" in i.filename)
    total, total_disk = tree_bytes(pkg)
    data_dir = os.path.join(pkg, "data")
    data, data_disk = tree_bytes(data_dir) if os.path.isdir(data_dir) else (0, 0)
    sos = [os.path.join(pkg, f) for f in os.listdir(pkg) if f.endswith((".so", ".pyd"))]
    so = sum(os.path.getsize(f) for f in sos)
    pyc = tree_bytes(os.path.join(pkg, "__pycache__"))[0] if os.path.isdir(os.path.join(pkg, "__pycache__")) else 0
    py = sum(os.path.getsize(os.path.join(pkg, f)) for f in os.listdir(pkg) if f.endswith(".py"))
    other = total - data - so - pyc - py
    stripped = None
    if sos and shutil.which("strip"):
        s = os.path.join(tmp, "stripped.so")
        shutil.copy2(sos[0], s)
        if subprocess.run(["strip", "--strip-debug", s], capture_output=True).returncode == 0:
            stripped = os.path.getsize(s)
    sections = None
    if sos and shutil.which("size"):
        q = subprocess.run(["size", "-A", sos[0]], capture_output=True, text=True)
        if q.returncode == 0:
            sections = {}
            for line in q.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
                    sections[parts[0]] = int(parts[1])
    no_data = total - data
    md = ["## 4. Package size", "",
          f"`pip wheel <copy of the working tree: top-level files, include/, src/> --no-deps --no-build-isolation` "
          f"({'cached, key ' + key if cached else f'built in {build_s:.0f} s'}), then "
          "`pip install --no-deps --target DIR <wheel>`.  Sizes are bytes of the files "
          "(disk usage in blocks beside).", "",
          "| item | bytes | MiB |", "|---|---:|---:|",
          f"| wheel `{os.path.basename(whl)}` | {whl_size:,} | {whl_size / MiB:.3f} |",
          f"| wheel without `data/` (minus its {data_c:,} compressed bytes) | {whl_size - data_c:,} "
          f"| {(whl_size - data_c) / MiB:.3f} |",
          f"| installed `grulite/` (disk usage {total_disk:,}) | {total:,} | {total / MiB:.3f} |",
          f"| installed `grulite/` without `data/` | {no_data:,} | {no_data / MiB:.3f} |",
          f"| ↳ extension module `{os.path.basename(sos[0]) if sos else '-'}` | {so:,} | {so / MiB:.3f} |",
          f"| ↳ `.py` sources | {py:,} | {py / MiB:.3f} |",
          f"| ↳ `__pycache__/` (written by pip) | {pyc:,} | {pyc / MiB:.3f} |",
          f"| ↳ other (`py.typed`, ...) | {other:,} | {other / MiB:.3f} |",
          f"| ↳ `data/` (bundled models, README) | {data:,} | {data / MiB:.3f} |"]
    if stripped is not None:
        md.append(f"| (info) extension module after `strip --strip-debug` | {stripped:,} | {stripped / MiB:.3f} |")
        md.append(f"| (info) installed without `data/`, stripped module | {no_data - so + stripped:,} "
                  f"| {(no_data - so + stripped) / MiB:.3f} |")
    md.append("")
    ok = no_data < INSTALLED_NO_DATA_BYTES
    md += ["| target | value | target | result |", "|---|---:|---:|---|",
           f"| installed package without bundled models | {no_data / MiB:.3f} MiB | < 1 MiB | {verdict(ok)} |", ""]
    if sections:
        dbg = sum(v for k, v in sections.items() if k.startswith(".debug"))
        code = sections.get(".text", 0)
        md.append(f"Extension module sections: `.text` {code:,} bytes, `.debug_*` {dbg:,} bytes "
                  f"({dbg / max(so, 1):.0%} of the file).")
        md.append("")
    return md, {"wheel": whl, "wheel_bytes": whl_size, "wheel_data_compressed": data_c,
                "wheel_data_uncompressed": data_u, "build_s": build_s, "cached": cached,
                "installed_bytes": total, "installed_disk": total_disk, "data_bytes": data,
                "installed_no_data_bytes": no_data, "so_bytes": so, "so_stripped_bytes": stripped,
                "so_sections": sections, "py_bytes": py, "pyc_bytes": pyc,
                "checks": [dict(name="installed package without data", value=no_data,
                                target=INSTALLED_NO_DATA_BYTES, ok=ok)]}


def read_smaps_mapping(pid: int, path: str) -> tuple:
    real = os.path.realpath(path)
    lines, fields, cur = [], {}, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                cur = len(head) >= 6 and " ".join(head[5:]) == real
                if cur:
                    lines.append(line.rstrip("\n"))
                continue
            if cur:
                lines.append(line.rstrip("\n"))
                if len(head) >= 2 and head[0].endswith(":") and head[1].isdigit():
                    fields[head[0][:-1]] = fields.get(head[0][:-1], 0) + int(head[1])
    return fields, lines


def read_kv(path: str) -> dict:
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1])
    return out


def shared_run(env: dict, path: str, copy: bool, log) -> dict:
    code = fmt_snippet(SHARED_CHILD, path=path, copy=copy)
    procs = []
    try:
        for _ in range(N_SHARED):
            procs.append(subprocess.Popen([sys.executable, "-c", code], env=env,
                                          cwd=tempfile.gettempdir(), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise ChildError(f"shared-pages child {p.pid} failed: {p.stderr.read()[-2000:]}")
        kids = []
        for p in procs:
            roll = read_kv(f"/proc/{p.pid}/smaps_rollup")
            fields, lines = read_smaps_mapping(p.pid, path)
            kids.append(dict(pid=p.pid, rollup=roll, grl=fields, grl_lines=lines))
        return {"children": kids}
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def section_shared(env: dict, models: dict, log) -> tuple:
    log("[5] shared pages")
    path = models["grl_big"]
    size = os.path.getsize(path)
    size_kib = size / 1024
    res = {"file_bytes": size}
    md = ["## 5. Shared pages: 4 processes, one model file", "",
          f"{N_SHARED} children each load the same float32 `.grl` "
          f"(`nn.GRU({I}, {BIG_H}, num_layers={BIG_L})`, {size:,} bytes = {size / MiB:.1f} MiB), "
          "run it once on B=1, T=100, then sleep; read while all are alive.  "
          "`grulite.load` maps the file (`MAP_SHARED`, read-only); `grulite.from_bytes` "
          "(a private copy in each process) is shown for contrast.", "",
          "| mode | Σ RSS (MiB) | Σ PSS (MiB) | Σ RSS − Σ PSS (MiB) | .grl mapping: Σ Rss (MiB) "
          "| .grl mapping: Σ Pss (MiB) | Σ Pss of mapping / file |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    checks = []
    for label, copy in (("grulite.load (mmap)", False), ("grulite.from_bytes (copy)", True)):
        try:
            r = shared_run(env, path, copy, log)
        except ChildError as e:
            md.append(f"| {label} | error: {str(e).splitlines()[-1]} | | | | | |")
            res[label] = {"error": str(e)}
            if not copy:
                checks.append(("4 processes load the same .grl", "error", "runs", False))
            continue
        kids = r["children"]
        srss = sum(k["rollup"].get("Rss", 0) for k in kids) / 1024
        spss = sum(k["rollup"].get("Pss", 0) for k in kids) / 1024
        mrss = sum(k["grl"].get("Rss", 0) for k in kids) / 1024
        mpss = sum(k["grl"].get("Pss", 0) for k in kids) / 1024
        ratio = (mpss * 1024) / size_kib if kids and kids[0]["grl"] else float("nan")
        md.append(f"| {label} | {srss:.1f} | {spss:.1f} | {srss - spss:.1f} | "
                  f"{mrss:.1f} | {mpss:.1f} | {'–' if ratio != ratio else f'{ratio:.2f}'} |")
        r.update(sum_rss_mib=srss, sum_pss_mib=spss, map_rss_mib=mrss, map_pss_mib=mpss)
        res[label] = r
        if not copy:
            touched = min(k["grl"].get("Rss", 0) for k in kids) / size_kib
            checks.append(("Σ Pss of the .grl mapping over 4 processes ≈ 1× file",
                           f"{ratio:.2f}×", "≤ 1.10×", ratio <= 1.10))
            checks.append(("each process has every page of the file resident (min Rss / file)",
                           f"{touched:.2f}", "≥ 0.95", touched >= 0.95))
    md.append("")
    md.append("Per child (kB, from `/proc/PID/smaps_rollup` and the `.grl` entry of `/proc/PID/smaps`):")
    md.append("")
    md += ["| mode | pid | Rss | Pss | Pss_Anon | Pss_File | .grl Rss | .grl Pss | .grl Shared_Clean "
           "| .grl Private_Clean |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in ("grulite.load (mmap)", "grulite.from_bytes (copy)"):
        for k in res.get(label, {}).get("children", []):
            ro, g = k["rollup"], k["grl"]
            md.append(f"| {label} | {k['pid']} | {ro.get('Rss', 0)} | {ro.get('Pss', 0)} | "
                      f"{ro.get('Pss_Anon', '–')} | {ro.get('Pss_File', '–')} | {g.get('Rss', '–')} | "
                      f"{g.get('Pss', '–')} | {g.get('Shared_Clean', '–')} | {g.get('Private_Clean', '–')} |")
    md.append("")
    mm = res.get("grulite.load (mmap)", {})
    if mm.get("children"):
        k = mm["children"][0]
        keep = ("Size", "Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean",
                "Private_Dirty", "Anonymous")
        md.append(f"The `.grl` mapping in `/proc/{k['pid']}/smaps` (one of the mmap children):")
        md.append("")
        md.append("```")
        for line in k["grl_lines"]:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):
                md.append(line)
            elif head[0][:-1] in keep:
                md.append(line)
        md.append("```")
        md.append("")
    if checks:
        md += ["| check | value | target | result |", "|---|---:|---:|---|"]
        for name, val, tgt, ok in checks:
            md.append(f"| {name} | {val} | {tgt} | {verdict(ok)} |")
        md.append("")
    res["checks"] = [dict(name=c[0], value=c[1], target=c[2], ok=c[3]) for c in checks]
    return md, res


def importtime(env: dict, runs: int) -> dict:
    """Self / cumulative µs of the modules imported by `import grulite`
    after numpy, from -X importtime (median over runs)."""
    per = {}
    totals = []
    for _ in range(runs + 1):
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import numpy; import grulite"],
                           env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            return {"error": p.stderr[-2000:]}
        rows = []
        for line in p.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            selfus, cum, name = line[len("import time:"):].split("|", 2)
            rows.append((name.strip(), int(selfus), int(cum)))
        # rows come in completion order; grulite's part is after the top-level numpy
        start = max(i for i, r in enumerate(rows) if r[0] == "numpy") + 1
        part = rows[start:]
        if _ == 0:
            continue                              # warm-up
        for name, selfus, cum in part:
            per.setdefault(name, []).append((selfus, cum))
        totals.append(sum(r[1] for r in part))     # self times add up to the whole
    mods = sorted(((n, statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
                   for n, vals in per.items()), key=lambda t: -t[1])
    return {"runs": runs, "modules": mods, "total_us": statistics.median(totals)}


def _group(name: str) -> str:
    if name.startswith("["):
        return name
    if "/numpy.libs/" in name:
        return "numpy.libs/" + os.path.basename(name).split("-")[0] + "*.so"
    if "/numpy/" in name:
        return "numpy/ extension modules"
    if "/grulite/" in name and (name.endswith(".so") or ".so" in os.path.basename(name)):
        return "grulite/_core*.so"
    if name.endswith(".grl"):
        return "the .grl model file"
    if "/lib-dynload/" in name:
        return "lib-dynload/ (stdlib extension modules)"
    if "libpython" in name or os.path.basename(name).startswith("python"):
        return "python / libpython"
    return os.path.basename(name)


def section_breakdown(env: dict, models: dict, log) -> tuple:
    log("[6] breakdown (analysis)")
    res = {}
    for key, snip in (("numpy", "breakdown numpy"), ("grulite", "breakdown grulite"),
                      ("tracemalloc", "tracemalloc")):
        try:
            res[key] = run_child(fmt_snippet(SNIPPETS[snip], path=models["grl_float32"]), env)
        except (ChildError, subprocess.TimeoutExpired) as e:
            res[key] = {"error": str(e)}
    md = ["## 6. Where the RSS goes (analysis)", "",
          "One child each: numpy alone (import + input array) and grulite float32 load + run; "
          "`/proc/self/smaps` Rss grouped by what backs the mapping, read at the end.", ""]
    for key in ("numpy", "grulite", "tracemalloc"):
        if "error" in res[key]:
            md += [f"> ERROR in the {key} child: {res[key]['error'].strip().splitlines()[-1]}", ""]
    if "maps" in res.get("numpy", {}) and "maps" in res.get("grulite", {}):
        groups = {}
        for side in ("numpy", "grulite"):
            for name, kb in res[side]["maps"].items():
                g = groups.setdefault(_group(name), {"numpy": 0, "grulite": 0})
                g[side] += kb
        rows = sorted(groups.items(), key=lambda kv: -max(kv[1]["grulite"], kv[1]["numpy"]))
        md += ["| mapping | numpy alone (kB) | grulite load+run (kB) | Δ (kB) |", "|---|---:|---:|---:|"]
        tn = tg = 0
        for name, v in rows:
            tn += v["numpy"]
            tg += v["grulite"]
            if max(v["numpy"], v["grulite"]) >= 100 or abs(v["grulite"] - v["numpy"]) >= 64:
                md.append(f"| {name} | {v['numpy']} | {v['grulite']} | {v['grulite'] - v['numpy']:+d} |")
        md.append(f"| **total Rss** | {tn} | {tg} | {tg - tn:+d} |")
        md.append(f"| peak (ru_maxrss) | {res['numpy']['maxrss_kib']} | {res['grulite']['maxrss_kib']} | "
                  f"{res['grulite']['maxrss_kib'] - res['numpy']['maxrss_kib']:+d} |")
        md.append("")
    it = importtime(env, 5)
    res["importtime"] = it
    if it.get("modules"):
        md += [f"`python -X importtime -c 'import numpy; import grulite'` (analysis only; median "
               f"of {it['runs']} runs, bytecode cached): the modules `import grulite` adds after "
               f"numpy, {it['total_us'] / 1e3:.1f} ms cumulative under the profiler.", "",
               "| module | self (µs) | cumulative (µs) |", "|---|---:|---:|"]
        for name, selfus, cum in it["modules"][:14]:
            md.append(f"| `{name}` | {selfus:.0f} | {cum:.0f} |")
        md.append("")
    tm = res.get("tracemalloc", {})
    if "after_run" in tm:
        a, b, c = tm["after_numpy"], tm["after_grulite"], tm["after_run"]
        md.append(f"tracemalloc (Python-level allocations): after `import numpy` {a[0] / 1024:.0f} kB "
                  f"(peak {a[1] / 1024:.0f}), after `import grulite` {b[0] / 1024:.0f} kB "
                  f"(+{(b[0] - a[0]) / 1024:.0f} kB), after load + run {c[0] / 1024:.0f} kB "
                  f"(peak {c[1] / 1024:.0f} kB).  Native buffers of the C core (workspace) "
                  "are not traced.")
        md.append("")
    return md, res


# ---------------------------------------------------------------------------

def make_models(env: dict, out: str, log) -> dict:
    log("[0] making models (torch child)")
    code = MAKE_MODELS.format(out=out, B=B, T=T, I=I, H=H, L=L, BIG_H=BIG_H, BIG_L=BIG_L,
                              dtypes=DTYPES)
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=out, capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit("making the models failed:\n" + p.stderr[-3000:])
    models = {f"grl_{dt}": os.path.join(out, f"gru_{dt}.grl") for dt in DTYPES}
    models.update(pt=os.path.join(out, "gru.pt"), onnx=os.path.join(out, "gru.onnx"),
                  grl_big=os.path.join(out, "big_float32.grl"))
    # Written just now, their page-cache pages are dirty until writeback; flush
    # them so that the mappings show what a deployed file shows (Shared_Clean).
    for path in models.values():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return models


def scrub_paths(text: str) -> str:
    """The report without this machine's paths: the interpreter's prefixes,
    the home directory and the checkout become placeholders."""
    for path, name in sorted(((sys.prefix, "<prefix>"), (sys.base_prefix, "<base-prefix>"),
                              (REPO, "<repo>"), (os.path.expanduser("~"), "<home>")),
                             key=lambda pn: -len(pn[0])):
        if path and path not in ("/", "~"):
            text = text.replace(path, name)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9, help="fresh processes per import case (default 7)")
    ap.add_argument("--run-runs", type=int, default=5,
                    help="fresh processes per load+run case (default 5)")
    ap.add_argument("--markdown", default=os.path.join(OUT_DIR, "footprint.md"))
    ap.add_argument("--json", default=os.path.join(OUT_DIR, "footprint.json"))
    ap.add_argument("--repo", default=REPO, help="the grulite checkout (default: this one)")
    ap.add_argument("--grulite-path", default=None,
                    help="directory put first on the children's PYTHONPATH (default REPO/src)")
    ap.add_argument("--from-wheel", action="store_true",
                    help="measure sections 1, 2, 5 with the grulite installed from the wheel")
    ap.add_argument("--skip-wheel", action="store_true", help="skip section 4")
    ap.add_argument("--no-wheel-cache", action="store_true",
                    help="rebuild the wheel even if one of the same sources is cached")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    repo = os.path.abspath(args.repo)
    tmp = tempfile.mkdtemp(prefix="grulite-footprint-")
    report = {"machine": dict(python=sys.version.split()[0], platform=platform.platform(),
                              cpus=os.cpu_count(), executable=sys.executable),
              "shapes": dict(B=B, T=T, I=I, H=H, L=L, big_H=BIG_H, big_L=BIG_L)}
    md = ["# grulite footprint", "",
          f"`python tools/footprint.py` — Python {sys.version.split()[0]}, {platform.platform()}, "
          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    try:
        package = None
        if args.from_wheel or not args.skip_wheel:
            try:
                pmd, package = section_package(repo, tmp, not args.no_wheel_cache, log)
            except (ChildError, subprocess.TimeoutExpired) as e:
                pmd, package = ["## 4. Package size", "", f"> ERROR: {e}", ""], {"error": str(e),
                                                                                "checks": []}
        if args.grulite_path:
            gpath, where = args.grulite_path, f"`{args.grulite_path}`"
        elif args.from_wheel and package and "error" not in package:
            gpath, where = os.path.join(tmp, "site"), "the wheel installed in a temp dir"
        else:
            # A snapshot: src/ may change under a long run (edits, rebuilds).
            gpath = os.path.join(tmp, "snapshot")
            shutil.copytree(os.path.join(repo, "src", "grulite"), os.path.join(gpath, "grulite"),
                            ignore=shutil.ignore_patterns("__pycache__", "*.tmp~"))
            where = (f"a copy of `{os.path.join(repo, 'src', 'grulite')}` (the in-place build) "
                     "taken at start")
        report["grulite_path"] = gpath
        md.append(f"grulite imported from {where}.")
        md.append("")
        env = child_env(gpath, pycache=os.path.join(tmp, "pycache"))
        models_dir = os.path.join(tmp, "models")
        os.makedirs(models_dir)
        models = make_models(env, models_dir, log)

        s1, report["import"] = section_import(env, child_env(gpath), args.runs, log)
        s2, report["load_run"] = section_run(env, args.run_runs, models, log)
        s3, report["files"] = section_files(models)
        s5, report["shared"] = section_shared(env, models, log)
        s6, report["breakdown"] = section_breakdown(env, models, log)
        if package is not None:
            report["package"] = package
        md += s1 + s2 + s3 + (pmd if package is not None else []) + s5

        checks = []
        for sec in ("import", "load_run", "package", "shared"):
            for c in report.get(sec, {}).get("checks", []):
                checks.append((sec, c))
        md += ["## Summary", "", "| section | check | value | target | result |",
               "|---|---|---:|---:|---|"]
        for sec, c in checks:
            val = c["value"]
            if sec == "package":
                val = f"{val / MiB:.3f} MiB"
            tgt = c["target"] if sec != "package" else "< 1 MiB"
            md.append(f"| {sec} | {c['name']} | {val} | {tgt} | {verdict(c['ok'])} |")
        md.append("")
        md += s6
        elapsed = time.perf_counter() - t_start
        md.append(f"_Total run time {elapsed:.0f} s._")
        md.append("")
        report["elapsed_s"] = elapsed
        report["all_pass"] = all(c["ok"] for _, c in checks)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    text = "\n".join(md)
    print(text)
    for path, content in ((args.markdown, scrub_paths(text) + "\n"),
                          (args.json, scrub_paths(json.dumps(report, indent=1, default=str)) + "\n")):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(content)
    log(f"wrote {args.markdown} and {args.json} ({report['elapsed_s']:.0f} s)")
    return 0 if report["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
