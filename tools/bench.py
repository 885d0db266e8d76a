"""Benchmarks grulite against ONNX Runtime, torch.nn.GRU and a plain numpy GRU.

    python tools/bench.py                          # everything, 1 thread and all cores
    python tools/bench.py --quick --no-plot        # smoke test, a few seconds
    python tools/bench.py --cases latency,streaming --threads 1
    python tools/bench.py --markdown speed.md      # also write the Markdown tables
    python tools/bench.py --dtypes int8            # low-precision variants: int8 only
    python tools/bench.py --dtypes bfloat16        # ... bfloat16 only

Cases (--cases takes names or prefixes, comma-separated: "latency" = both
latency cases):

    latency-h128    B=1,  T=100, I=64,  H=128, 1 layer
    latency-bidir   B=1,  T=100, I=64,  H=256, 2 layers, bidirectional
    batch           B=32, T=100, I=64,  H=128, 1 layer
    throughput      B=64, T=50,  I=256, H=512, 1 layer
    streaming       B=1, I=64, H=128: 100 steps fed one at a time from Python
                    (grulite m.stream(1).step, torch nn.GRU with the state
                    carried, ORT on a T=1 export taking h0, numpy); per step
    c-step          tools/bench_step.c compiled with setup.py's flags: the
                    C-level cost of one stream step (H=64, 128, batch 1) and
                    of grulite_forward (B=1, T=100); no Python, batch 1

Every runtime gets the same float32 weights (PyTorch's init) and inputs.
Peers: torch.nn.GRU (torch.set_num_threads, inference_mode), ONNX Runtime
(model exported by torch.onnx.export(dynamo=False) from the same nn.GRU;
intra_op_num_threads = threads, inter_op 1) and numpy (vectorized over the
batch, a loop over time, the input projection as one matmul; its BLAS
thread count is set through OpenBLAS when found).  grulite's thread count is
set with m.num_threads when the build has it.

Each thread count runs in a fresh process that sets every runtime's
thread count once, so no thread pool is resized mid-run (on the 2-core
development VM, torch going from 1 to 2 threads in-process was seen to
stall for ~1.6 s per call).
Before each measurement the tool sleeps 0.2 s so that the previous
runtime's spinning worker threads go idle.

Timing: warm-up, then best of N with N adaptive: at least 20 runs and
0.3 s, but a measurement stops after --max-time seconds (default 4) once it
has 5 runs, so slow cases stay affordable; the JSON records N.  Every
runtime of a case is timed in turn, --rounds times over (default 3), and
keeps its best: a slow spell of the machine then costs every runtime a
round rather than one runtime its ratio.  Ratios are peer time / grulite
time (> 1: grulite is faster).  GFLOP/s counts
2*3H*(in+H) FLOPs per step, direction, layer and batch row.  Each peer's
outputs (y and h_n) are checked against grulite's: a warning is printed
when they differ by more than 1e-4.

Low-precision weights (--dtypes, default "float16,bfloat16,int8"; ""
disables): in the whole-sequence cases (not streaming), each dtype's
m.astype(dtype) is timed in the same process and rounds as float32 grulite
(same input, timer and thread count).  Its outputs (y and h_n) are checked
against float32 grulite's: the max abs difference is recorded, and a
warning printed above 2e-3 (float16), 5e-3 (bfloat16: 8 mantissa bits to
float16's 11, so about 8x float16's error) or 2e-2 (int8).  The JSON holds
them as grulite_<dtype> (best/median, runs, isa, speedup over float32
grulite, peer ratios), and a second Markdown table, "Low-precision
weights", follows the main one, a column per dtype (float16, bfloat16,
int8).  With int8, torch's dynamic int8 quantization of the same nn.GRU is
timed beside it (JSON: torch_int8).  The chart gets one more bar per
whole-sequence case: ORT (float32) time / grulite int8 time.

The JSON also records each measurement's median and run count ("noisy"
when the median exceeds 1.5x the best) and how much CPU other processes
used during the run (a warning is printed above 0.1 CPU: numbers taken on
a busy machine, multi-thread ones especially, are not to be trusted).

Writes tools/bench/results.json (all numbers, machine info, versions) and
tools/bench/bench.png (speedup of grulite over each peer, one panel per
thread count; needs matplotlib, imported only then; --no-plot skips it)
and prints a Markdown table (--markdown FILE also writes it).  torch,
onnxruntime and matplotlib are tools-only dependencies: a missing one is
skipped with a note.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import importlib.machinery
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT_DIR = os.path.join(HERE, "bench")

# Prefer the in-place build of this checkout (python setup.py build_ext
# --inplace) over an installed grulite, unless PYTHONPATH says otherwise.
# Only a compiled extension counts: `pip install .` leaves the generated
# _core.c in the tree, and that alone is not an importable build.
if not os.environ.get("PYTHONPATH") and any(
        os.path.exists(os.path.join(ROOT, "src", "grulite", "_core" + suffix))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES):
    sys.path.insert(0, os.path.join(ROOT, "src"))

grulite = None       # imported by main() once the arguments are parsed: --help needs no build

TOL = 1e-4
# Low-precision weight storage (Model.astype): max abs output difference
# from float32 grulite above which a warning is printed.  bfloat16 keeps 8
# mantissa bits to float16's 11: about 8x float16's error.  The order is the
# tables' column order.
DTYPE_TOL = {"float16": 2e-3, "bfloat16": 5e-3, "int8": 2e-2}
DTYPE_SHORT = {"float16": "f16", "bfloat16": "bf16", "int8": "int8"}
DEFAULT_DTYPES = "float16,bfloat16,int8"
PEERS = ("torch", "ort", "numpy")
PEER_LABEL = {"torch": "torch", "ort": "ORT", "numpy": "numpy"}

CASES = [
    dict(name="latency-h128", kind="sequence", label="latency", B=1, T=100, I=64, H=128, L=1, bidir=False),
    dict(name="latency-bidir", kind="sequence", label="latency", B=1, T=100, I=64, H=256,
         L=2, bidir=True),
    dict(name="batch", kind="sequence", label="batch", B=32, T=100, I=64, H=128, L=1, bidir=False),
    dict(name="throughput", kind="sequence", label="throughput", B=64, T=50, I=256, H=512, L=1,
         bidir=False),
    dict(name="streaming", kind="stream", label="streaming, per step", B=1, T=100, I=64, H=128, L=1,
         bidir=False),
    dict(name="c-step", kind="cstep", label="C step (bench_step.c)", hidden=(64, 128), I=64),
]


def log(msg: str = "") -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Timing

class Timer:
    def __init__(self, quick: bool, max_time: float, rounds: int = 3):
        if quick:
            self.min_runs, self.min_time, self.max_time, self.floor = 3, 0.0, min(max_time, 0.2), 1
            self.settle = 0.02
            self.rounds = 1
        else:
            self.min_runs, self.min_time, self.max_time, self.floor = 20, 0.3, max_time, 5
            self.settle = 0.2
            self.rounds = max(1, rounds)

    def rounds_of(self, fns: dict) -> dict:
        """Times every runtime of one case in turn, `rounds` times over, and
        keeps each one's best: a slow spell of the machine then hits every
        runtime alike instead of whichever was being timed."""
        out: dict = {}
        # The setup just ran every runtime once (the output checks): give
        # torch's OpenMP and ORT's spinning pool threads time to go idle, or
        # they take the cores grulite's threads need.
        time.sleep(0.3)
        for _ in range(self.rounds):
            for key, fn in fns.items():
                r = self(fn)
                if key not in out:
                    out[key] = dict(r, round_best_s=[r["best_s"]])
                    continue
                o = out[key]
                o["round_best_s"].append(r["best_s"])
                o["runs"] += r["runs"]
                o["median_s"] = min(o["median_s"], r["median_s"])
                if r["best_s"] < o["best_s"]:
                    o["best_s"] = r["best_s"]
                o["noisy"] = bool(o["median_s"] > 1.5 * o["best_s"])
        return out

    def __call__(self, fn) -> dict:
        """Warm-up, then best of N: N >= min_runs and >= min_time seconds,
        stopping at max_time once `floor` runs are done."""
        time.sleep(self.settle)     # let other runtimes' spinning worker threads go idle
        t0 = time.perf_counter()
        k = 0
        while k < 3 and (k == 0 or time.perf_counter() - t0 < 0.2):
            fn()
            k += 1
        times = []
        start = time.perf_counter()
        while True:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start
            n = len(times)
            if n >= self.min_runs and elapsed >= self.min_time:
                break
            if elapsed >= self.max_time and n >= self.floor:
                break
        best, med = min(times), statistics.median(times)
        return {"best_s": best, "median_s": med, "runs": len(times), "noisy": bool(med > 1.5 * best)}


# ---------------------------------------------------------------------------
# numpy's BLAS thread count (threadpoolctl when installed, else OpenBLAS by ctypes)

class BlasThreads:
    def __init__(self):
        self.libs = []       # (path, set_fn, get_fn)
        self.info = {}
        try:
            import threadpoolctl  # noqa: F401
            self.tpc = threadpoolctl
            self.info = {"control": "threadpoolctl",
                         "libraries": [{k: public_path(d[k]) if k == "filepath" and d.get(k) else d.get(k)
                                        for k in ("internal_api", "version", "num_threads",
                                                  "architecture", "filepath")}
                                       for d in threadpoolctl.threadpool_info()]}
            return
        except ImportError:
            self.tpc = None
        import ctypes
        paths = set()
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    p = line.split()[-1]
                    if "openblas" in os.path.basename(p).lower() and p.startswith("/"):
                        paths.add(p)
        except OSError:
            pass
        for p in sorted(paths):
            try:
                lib = ctypes.CDLL(p)
            except OSError:
                continue
            found = {}
            for what in ("set_num_threads", "get_num_threads", "get_corename", "get_config"):
                for pre in ("scipy_openblas_", "openblas_"):
                    for suf in ("64_", "", "_64_"):
                        fn = getattr(lib, pre + what + suf, None)
                        if fn is not None:
                            found[what] = fn
                            break
                    if what in found:
                        break
            if "set_num_threads" in found:
                if "get_corename" in found:
                    found["get_corename"].restype = ctypes.c_char_p
                if "get_config" in found:
                    found["get_config"].restype = ctypes.c_char_p
                self.libs.append((p, found))
        libs = []
        for p, found in self.libs:
            d = {"filepath": public_path(p)}
            if "get_num_threads" in found:
                d["num_threads"] = found["get_num_threads"]()
            if "get_corename" in found:
                d["corename"] = found["get_corename"]().decode(errors="replace")
            if "get_config" in found:
                d["config"] = found["get_config"]().decode(errors="replace")
            libs.append(d)
        self.info = {"control": "openblas-ctypes" if self.libs else "none (numpy BLAS threads not set)",
                     "libraries": libs}

    def set(self, n: int) -> bool:
        if getattr(self, "current", None) == n:
            return self.current_ok
        self.current = n
        self.current_ok = self._set(n)
        return self.current_ok

    def _set(self, n: int) -> bool:
        if self.tpc is not None:
            self._ctx = self.tpc.threadpool_limits(limits=n, user_api="blas")
            return True
        for _, found in self.libs:
            found["set_num_threads"](int(n))
        return bool(self.libs)


# ---------------------------------------------------------------------------
# Machine info

def cpu_snapshot():
    """(busy CPU seconds of the whole machine, CPU seconds of this process and
    its waited-for children), or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    t = os.times()
    busy = (v[0] + v[1] + v[2]) / os.sysconf("SC_CLK_TCK")      # user + nice + system
    return busy, t.user + t.system + t.children_user + t.children_system


def other_load(start, end, wall: float):
    """Average number of CPUs used by other processes between two snapshots."""
    if not start or not end or wall <= 0:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / wall)


def machine_info(blas: BlasThreads) -> dict:
    cpu, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and cpu is None:
                    cpu = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    info = {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": affinity,
        "flags": {f: f in flags for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                          "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS",
                                                "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                "OMP_WAIT_POLICY", "GRULITE_NUM_THREADS",
                                                "GRULITE_ISA")},
        "numpy_blas": blas.info,
    }
    return info


def public_path(p: str) -> str:
    """p as results record it, naming nothing of this machine: relative to
    the repository inside it, from site-packages/ inside an environment,
    else the file name alone."""
    ap = os.path.abspath(p)
    if ap == ROOT or ap.startswith(ROOT + os.sep):
        return os.path.relpath(ap, ROOT)
    parts = ap.split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker):])
    return os.path.basename(ap.rstrip(os.sep)) or ap


def versions() -> dict:
    v = {"grulite": getattr(grulite, "__version__", None),
         "grulite_path": public_path(os.path.dirname(grulite.__file__)),
         "grulite_isas": grulite.available_isas() if hasattr(grulite, "available_isas") else None,
         "numpy": np.__version__}
    for mod, key in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx")):
        try:
            v[key] = __import__(mod).__version__
        except ImportError:
            v[key] = None
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "include",
                                "setup.py"], capture_output=True, text=True, timeout=10).stdout.strip()
        v["git"] = head + ("+dirty" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        v["git"] = None
    return v


# ---------------------------------------------------------------------------
# Models: one set of weights for every runtime

def make_weights(I, H, L, bidir, seed=0) -> dict:
    """A torch-style GRU state_dict of float32 numpy arrays (PyTorch's init)."""
    rng = np.random.default_rng(seed)
    D = 2 if bidir else 1
    k = 1.0 / np.sqrt(H)
    sd = {}
    for l in range(L):
        n_in = I if l == 0 else D * H
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            sd["weight_ih" + sfx] = rng.uniform(-k, k, (3 * H, n_in)).astype(np.float32)
            sd["weight_hh" + sfx] = rng.uniform(-k, k, (3 * H, H)).astype(np.float32)
            sd["bias_ih" + sfx] = rng.uniform(-k, k, 3 * H).astype(np.float32)
            sd["bias_hh" + sfx] = rng.uniform(-k, k, 3 * H).astype(np.float32)
    return sd


def flops_per_step_row(m) -> float:
    """FLOPs one batch row costs per step: twice the C core's multiply-add
    count (grulite_model_macs), 3H(in + H) per layer direction."""
    return 2.0 * m._core.macs


def set_grulite_threads(m, n: int):
    if hasattr(m, "num_threads"):
        try:
            m.num_threads = n
            return int(m.num_threads)
        except Exception as e:  # an API still in flux: report, don't die
            warn(f"grulite: setting num_threads={n} failed: {e}")
    return None


def grulite_isa(m):
    isa = getattr(m, "isa", None)
    return str(isa) if isa is not None else None


class NumpyGRU:
    """torch.nn.GRU (reset_after, batch_first) in plain numpy, float32."""

    def __init__(self, sd, L, bidir):
        D = 2 if bidir else 1
        self.layers = []
        for l in range(L):
            dirs = []
            for d in range(D):
                sfx = f"_l{l}" + ("_reverse" if d else "")
                dirs.append((np.ascontiguousarray(sd["weight_ih" + sfx].T),
                             np.ascontiguousarray(sd["weight_hh" + sfx].T),
                             sd["bias_ih" + sfx], sd["bias_hh" + sfx]))
            self.layers.append(dirs)

    @staticmethod
    def _cell(xp_t, h, whT, bh, H):
        hp = h @ whT
        hp += bh
        rz = xp_t[:, :2 * H] + hp[:, :2 * H]
        rz = np.tanh(rz * 0.5) * 0.5 + 0.5            # sigmoid, no overflow
        n = np.tanh(xp_t[:, 2 * H:] + rz[:, :H] * hp[:, 2 * H:])
        return n + rz[:, H:] * (h - n)

    def __call__(self, x):
        B, T, _ = x.shape
        inp = x
        h_n = []
        for dirs in self.layers:
            outs = []
            for d, (wiT, whT, bi, bh) in enumerate(dirs):
                H = whT.shape[0]
                xp = (inp.reshape(B * T, -1) @ wiT + bi).reshape(B, T, 3 * H)
                h = np.zeros((B, H), np.float32)
                out = np.empty((B, T, H), np.float32)
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    h = self._cell(xp[:, t], h, whT, bh, H)
                    out[:, t] = h
                outs.append(out)
                h_n.append(h)
            inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=-1)
        return inp, np.stack(h_n)

    def step(self, x_t, h):
        """One step of a 1-layer unidirectional GRU: x_t (B, I), h (B, H)."""
        wiT, whT, bi, bh = self.layers[0][0]
        xp = x_t @ wiT
        xp += bi
        return self._cell(xp, h, whT, bh, whT.shape[0])


def torch_dynamic_int8(gru):
    """torch.ao.quantization.quantize_dynamic of a module holding `gru`: int8
    weights, activations quantized on the fly (the GRU torch users quantize)."""
    import warnings

    import torch

    class Holder(torch.nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, x):
            return self.g(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # its deprecation notice
        return torch.ao.quantization.quantize_dynamic(Holder(gru).eval(), {torch.nn.GRU},
                                                      dtype=torch.qint8)


def onnx_session(gru, args, input_names, output_names, threads):
    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gru, args, buf, input_names=list(input_names), output_names=list(output_names),
                          dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


# ---------------------------------------------------------------------------
# Cases

def available_peers(wanted):
    have = {"numpy": True}
    try:
        import torch  # noqa: F401
        have["torch"] = True
    except ImportError:
        have["torch"] = False
        warn("torch is not installed: torch and ORT are skipped")
    try:
        import onnxruntime  # noqa: F401
        have["ort"] = have["torch"]
    except ImportError:
        have["ort"] = False
        warn("onnxruntime is not installed: ORT is skipped")
    return [p for p in PEERS if p in wanted and have[p]]


def check(res: dict, peer: str, case: str, threads: int, diff: float) -> None:
    res[peer]["max_abs_diff"] = diff
    res[peer]["match"] = bool(diff <= TOL)
    if not diff <= TOL:
        warn(f"{case}, {threads} thread(s): {PEER_LABEL[peer]} differs from grulite by {diff:.3g} "
             f"(> {TOL:g})")


def check_dtype(res: dict, dt: str, case: str, threads: int, diff: float) -> None:
    d = res["grulite_" + dt]
    tol = DTYPE_TOL[dt]
    d["max_abs_diff"] = diff
    d["tolerance"] = tol
    d["match"] = bool(diff <= tol)
    if not diff <= tol:
        warn(f"{case}, {threads} thread(s): grulite {dt} differs from grulite float32 by {diff:.3g} "
             f"(> {tol:g})")


def run_sequence(c, threads_list, peers, timer, blas, dtypes=()):
    B, T, I, H, L, bidir = c["B"], c["T"], c["I"], c["H"], c["L"], c["bidir"]
    sd = make_weights(I, H, L, bidir)
    x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    m = grulite.from_state_dict(sd)
    flops = flops_per_step_row(m) * B * T
    npg = NumpyGRU(sd, L, bidir)
    low = {}                      # dtype -> (model, seconds astype took)
    for dt in dtypes:
        t = time.perf_counter()
        low[dt] = (m.astype(dt), time.perf_counter() - t)
    gru = None
    if "torch" in peers or "ort" in peers:
        import torch
        gru = torch.nn.GRU(I, H, L, batch_first=True, bidirectional=bidir).eval()
        gru.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        xt = torch.from_numpy(x)
    out = []
    for threads in threads_list:
        res = {"case": c["name"], "kind": c["kind"], "config": dict(B=B, T=T, I=I, H=H, layers=L,
                                                                    bidirectional=bidir),
               "threads": threads, "unit": "sequence", "flops": flops}
        nt = set_grulite_threads(m, threads)
        y_ref, h_ref = m(x)
        fns = {"grulite": lambda: m(x)}
        ntq, diffs = {}, {}
        for dt, (mq, _) in low.items():
            ntq[dt] = set_grulite_threads(mq, threads)
            yq, hq = mq(x)
            diffs[dt] = max(max_diff(yq, y_ref), max_diff(hq, h_ref))
            fns["grulite_" + dt] = lambda mq=mq: mq(x)
        sess, peer_diff = None, {}
        qgru = None
        if "torch" in peers:
            import torch
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            with torch.inference_mode():
                y, h = gru(xt)
            peer_diff["torch"] = max(max_diff(y.numpy(), y_ref), max_diff(h.numpy(), h_ref))

            def t_run():
                with torch.inference_mode():
                    gru(xt)
            fns["torch"] = t_run
            if "int8" in low:
                # grulite int8's peer: torch's dynamic quantization (int8 weights,
                # activations quantized per call; fbgemm int8 GEMMs).
                qgru = torch_dynamic_int8(gru)
                with torch.inference_mode():
                    y, h = qgru(xt)
                diffs["torch_int8"] = max(max_diff(y.numpy(), y_ref), max_diff(h.numpy(), h_ref))

                def tq_run(qgru=qgru):
                    with torch.inference_mode():
                        qgru(xt)
                fns["torch_int8"] = tq_run
        if "ort" in peers:
            sess = onnx_session(gru, (torch.from_numpy(x),), ["x"], ["y", "h"], threads)
            feed = {"x": x}
            y, h = sess.run(None, feed)
            peer_diff["ort"] = max(max_diff(y, y_ref), max_diff(h, h_ref))
            fns["ort"] = lambda sess=sess, feed=feed: sess.run(None, feed)
        if "numpy" in peers:
            res["numpy_blas_threads_set"] = blas.set(threads)
            y, h = npg(x)
            peer_diff["numpy"] = max(max_diff(y, y_ref), max_diff(h, h_ref))
            fns["numpy"] = lambda: npg(x)
        times = timer.rounds_of(fns)
        del sess, fns                 # the ONNX Runtime session goes now
        r = times["grulite"]
        r.update(num_threads=nt, isa=grulite_isa(m))
        res["grulite"] = r
        res["grulite_gflops"] = flops / r["best_s"] / 1e9
        for dt, (mq, convert_s) in low.items():
            rq = times["grulite_" + dt]
            rq.update(dtype=dt, num_threads=ntq[dt], isa=grulite_isa(mq), convert_s=convert_s,
                      gflops=flops / rq["best_s"] / 1e9)
            res["grulite_" + dt] = rq
            check_dtype(res, dt, c["name"], threads, diffs[dt])
        for p in ("torch", "ort", "numpy"):
            if p in times:
                res[p] = times[p]
                check(res, p, c["name"], threads, peer_diff[p])
        if "torch_int8" in times:
            res["torch_int8"] = dict(times["torch_int8"], max_abs_diff=diffs["torch_int8"])
        finish(res, peers)
        out.append(res)
    return out


def run_stream(c, threads_list, peers, timer, blas):
    B, T, I, H = c["B"], c["T"], c["I"], c["H"]
    sd = make_weights(I, H, 1, False)
    x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    xs = [np.ascontiguousarray(x[:, t]) for t in range(T)]             # (B, I) each
    xs3 = [np.ascontiguousarray(x[:, t:t + 1]) for t in range(T)]      # (B, 1, I) each
    m = grulite.from_state_dict(sd)
    flops = flops_per_step_row(m) * B
    npg = NumpyGRU(sd, 1, False)
    y_seq, _ = m(x)
    s = m.stream(B)

    def g_loop():
        s.reset()
        for xt_ in xs:
            s.step(xt_)

    def g_collect():
        s.reset()
        return np.stack([s.step(xt_) for xt_ in xs], axis=1)

    gru = None
    if "torch" in peers or "ort" in peers:
        import torch
        gru = torch.nn.GRU(I, H, 1, batch_first=True).eval()
        gru.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        txs = [torch.from_numpy(a) for a in xs3]
        th0 = torch.zeros(1, B, H)

        def t_loop():
            h = th0
            for xt_ in txs:
                _, h = gru(xt_, h)
            return h

        def t_collect():
            h, ys = th0, []
            for xt_ in txs:
                y, h = gru(xt_, h)
                ys.append(y.numpy().copy())
            return np.concatenate(ys, axis=1)

    zeros_h = np.zeros((1, B, H), np.float32)
    out = []
    for threads in threads_list:
        res = {"case": c["name"], "kind": c["kind"], "config": dict(B=B, T=T, I=I, H=H, layers=1,
                                                                    bidirectional=False),
               "threads": threads, "unit": "step", "flops": flops}
        nt = set_grulite_threads(m, threads)
        y_ref = g_collect()
        if max_diff(y_ref, y_seq) > TOL:
            warn(f"streaming: grulite stream differs from its whole-sequence call by {max_diff(y_ref, y_seq):.3g}")
        fns = {"grulite": g_loop}
        sess, peer_diff = None, {}
        if "torch" in peers:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            with torch.inference_mode():
                y = t_collect()
            peer_diff["torch"] = max_diff(y, y_ref)

            def t_run():
                with torch.inference_mode():
                    t_loop()
            fns["torch"] = t_run
        if "ort" in peers:
            sess = onnx_session(gru, (torch.from_numpy(xs3[0]), torch.from_numpy(zeros_h)), ["x", "h0"],
                                ["y", "h"], threads)

            def o_loop(sess=sess):
                h = zeros_h
                for xt_ in xs3:
                    _, h = sess.run(None, {"x": xt_, "h0": h})

            h, ys = zeros_h, []
            for xt_ in xs3:
                y, h = sess.run(None, {"x": xt_, "h0": h})
                ys.append(y)
            peer_diff["ort"] = max_diff(np.concatenate(ys, axis=1), y_ref)
            fns["ort"] = o_loop
        if "numpy" in peers:
            res["numpy_blas_threads_set"] = blas.set(threads)
            zh = np.zeros((B, H), np.float32)

            def n_loop(zh=zh):
                h = zh
                for xt_ in xs:
                    h = npg.step(xt_, h)

            h, ys = zh, []
            for xt_ in xs:
                h = npg.step(xt_, h)
                ys.append(h)
            peer_diff["numpy"] = max_diff(np.stack(ys, axis=1), y_ref)
            fns["numpy"] = n_loop
        times = timer.rounds_of(fns)
        del sess, fns                 # the ONNX Runtime session goes now
        per_step = {k: {f: ([w / T for w in v] if f == "round_best_s" else
                            v / T if f.endswith("_s") else v) for f, v in r.items()}
                    for k, r in times.items()}
        r = per_step["grulite"]
        r.update(num_threads=nt, isa=grulite_isa(m), steps_per_run=T)
        res["grulite"] = r
        res["grulite_gflops"] = flops / r["best_s"] / 1e9
        for p in ("torch", "ort", "numpy"):
            if p in per_step:
                res[p] = per_step[p]
                check(res, p, c["name"], threads, peer_diff[p])
        finish(res, peers)
        out.append(res)
    return out


def finish(res, peers):
    g = res["grulite"]["best_s"]
    for p in peers:
        if p in res:
            res[p]["ratio"] = res[p]["best_s"] / g
    for key in [k for k in res if k.startswith("grulite_") and isinstance(res[k], dict)]:
        d = res[key]
        d["speedup_vs_float32"] = g / d["best_s"]           # > 1: faster than float32 grulite
        d["peer_ratios"] = {p: res[p]["best_s"] / d["best_s"] for p in peers if p in res}


# ---------------------------------------------------------------------------
# The C step benchmark

def setup_py_build() -> dict:
    """C sources, include dirs and compile flags of setup.py's extension,
    found by running setup.py with setup() and cythonize() stubbed out."""
    import runpy

    import setuptools

    captured = {}
    saved = {"setup": setuptools.setup, "cwd": os.getcwd(), "argv": sys.argv}
    try:
        import Cython.Build as cb
        saved["cythonize"] = cb.cythonize
        cb.cythonize = lambda exts, *a, **k: exts
    except ImportError:
        cb = None
    setuptools.setup = lambda *a, **k: captured.update(k)
    try:
        os.chdir(ROOT)
        sys.argv = ["setup.py", "build_ext"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = saved["setup"]
        os.chdir(saved["cwd"])
        sys.argv = saved["argv"]
        if cb is not None:
            cb.cythonize = saved["cythonize"]
    ext = captured["ext_modules"][0]
    sources = [os.path.join(ROOT, s) for s in ext.sources if s.endswith(".c")
               and os.path.normpath(s).startswith(os.path.join("src", "core"))]
    if not sources:
        raise RuntimeError("no src/core sources found in setup.py's extension")
    return {"sources": sources,
            "include_dirs": [os.path.join(ROOT, d) for d in ext.include_dirs if not os.path.isabs(d)],
            "cflags": list(ext.extra_compile_args or []),
            "defines": [f"-D{k}" + (f"={v}" if v is not None else "") for k, v in (ext.define_macros or [])
                        if not k.startswith("NPY_")],
            "ldflags": list(ext.extra_link_args or []) + [f"-l{x}" for x in (ext.libraries or [])]}


def _num(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def run_cstep(c, cc, cflags_override):
    res = {"case": c["name"], "kind": c["kind"], "threads": 1}
    try:
        b = setup_py_build()
        res["flags_from"] = "setup.py"
    except Exception as e:
        warn(f"c-step: could not read setup.py's flags ({e}); using -O3 -std=c99 and src/core/*.c")
        b = {"sources": sorted(glob.glob(os.path.join(ROOT, "src", "core", "**", "*.c"),
                                         recursive=True)),
             "include_dirs": [os.path.join(ROOT, "include"), os.path.join(ROOT, "src", "core")],
             "cflags": ["-O3", "-std=c99"], "defines": [], "ldflags": []}
        res["flags_from"] = "fallback"
    if cflags_override is not None:
        b["cflags"] = cflags_override.split()
        res["flags_from"] = "--step-cflags"
    tmp = tempfile.mkdtemp(prefix="grulite_bench_step_")
    exe = os.path.join(tmp, "bench_step")
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    cmd = ([cc] + b["cflags"] + b["defines"] + [f"-I{rel(d)}" for d in b["include_dirs"]]
           + [rel(s) for s in b["sources"]] + [rel(os.path.join(HERE, "bench_step.c")), "-o", exe]
           + b["ldflags"] + ["-lm", "-lpthread"])
    res["compile_command"] = " ".join(cmd).replace(exe, "bench_step")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        if p.returncode != 0:
            warn("c-step: compiling tools/bench_step.c failed:\n" + p.stderr[-3000:])
            res["error"] = "compile failed: " + p.stderr[-2000:]
            return [res]
        args = [exe] + [str(h) for h in c["hidden"]]
        p = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            warn(f"c-step: bench_step failed ({p.returncode}): {p.stderr[-2000:]}")
            res["error"] = f"bench_step exit {p.returncode}: {p.stderr[-2000:]}"
            return [res]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["output"] = p.stdout
    res["steps"], res["forward"], res["read_floor"] = [], [], []
    for line in p.stdout.splitlines():
        kv = dict(re.findall(r"(\w+)=(\S+)", line))
        num = {k: _num(v) for k, v in kv.items()}
        if "step_ns" in kv:
            res["steps"].append({"H": int(num["H"]), "I": c["I"], "step_ns": num["step_ns"],
                                 "gflops": num["gflops"], "runs": int(num["runs"]),
                                 "steps_per_run": int(num["steps_per_run"]), "isa": kv.get("isa")})
        elif "forward_us" in kv:
            res["forward"].append({"H": int(num["H"]), "I": c["I"], "B": 1, "T": int(num["forward_T"]),
                                   "forward_us": num["forward_us"], "gflops": num["gflops"],
                                   "runs": int(num["runs"])})
        elif "read_ns" in kv:
            res["read_floor"].append({"H": int(num["H"]), "bytes": int(num["read_bytes"]),
                                      "read_ns": num["read_ns"], "runs": int(num["runs"])})
        elif "version" in kv:
            res["version"] = kv["version"]
    return [res]


# ---------------------------------------------------------------------------
# Reporting

def fmt_time(s: float, unit: str) -> str:
    if unit == "step":
        return f"{s * 1e6:.2f} µs/step" if s < 1e-4 else f"{s * 1e6:.1f} µs/step"
    ms = s * 1e3
    return f"{ms:.3f} ms" if ms < 1 else (f"{ms:.2f} ms" if ms < 100 else f"{ms:.1f} ms")


def case_label(r: dict) -> str:
    c = next(c for c in CASES if c["name"] == r["case"])
    k = r.get("config", {})
    if r["kind"] == "stream":
        return f"{c['label']}: B={k['B']}, I={k['I']}, H={k['H']}"
    extra = f", {k['layers']} layers" if k["layers"] > 1 else ""
    extra += ", bidir" if k["bidirectional"] else ""
    return f"{c['label']}: B={k['B']}, T={k['T']}, I={k['I']}, H={k['H']}{extra}"


def markdown(results: list, peers: list, meta: dict) -> str:
    m, v = meta["machine"], meta["versions"]
    isa = next((r["grulite"].get("isa") for r in results if "grulite" in r and r["grulite"].get("isa")), None)
    lines = [f"`python tools/bench.py` on {m['cpu']}, {m['cpu_count']} cores"
             + (", AVX-512" if m["flags"].get("avx512f") else ", AVX2" if m["flags"].get("avx2") else "")
             + f"; grulite {v['grulite']}" + (f" ({isa} kernel)" if isa else "")
             + (f", torch {v['torch']}" if v.get("torch") else "")
             + (f", ONNX Runtime {v['onnxruntime']}" if v.get("onnxruntime") else "")
             + f", numpy {v['numpy']}. Best of ≥ {meta['settings']['min_runs']} runs"
             + (f" in each of {meta['settings']['rounds']} rounds (every runtime in turn)"
                if meta['settings'].get('rounds', 1) > 1 else "")
             + f" (≥ {meta['settings']['floor_runs']} for slow cases); (×) = peer time / grulite time, "
             "> 1 means grulite is faster.", ""]
    # The read floor of a B=1 whole-sequence row: T steps, each reading every
    # layer direction's W_hh once, at the rate bench_step measured for that H.
    floor_ns = {f["H"]: f["read_ns"] for r in results if r["kind"] == "cstep"
                for f in r.get("read_floor", [])}

    def floor_of(r: dict) -> Optional[float]:
        k = r.get("config", {})
        if r["kind"] != "sequence" or k.get("B") != 1 or k.get("H") not in floor_ns:
            return None
        return k["T"] * k["layers"] * (2 if k["bidirectional"] else 1) * floor_ns[k["H"]] / 1e9
    show_floor = any(floor_of(r) for r in results)
    head = (["case", "threads", "grulite"] + [f"{PEER_LABEL[p]} (×)" for p in peers]
            + (["read floor (grulite / floor)"] if show_floor else []) + ["grulite GFLOP/s"])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    floors = []
    for r in results:
        if r["kind"] == "cstep":
            for s in r.get("steps", []):
                row = [f"C stream step (no Python): B=1, I={s['I']}, H={s['H']}", "1",
                       f"{s['step_ns'] / 1e3:.2f} µs/step"] + ["–"] * len(peers) + \
                      (["–"] if show_floor else []) + [f"{s['gflops']:.2f}"]
                lines.append("| " + " | ".join(row) + " |")
            for f in r.get("forward", []):
                fl = floor_ns.get(f["H"])
                row = [f"C forward (no Python): B=1, T={f['T']}, I={f['I']}, H={f['H']}", "1",
                       fmt_time(f["forward_us"] / 1e6, "sequence")] + ["–"] * len(peers) + \
                      ([f"{fmt_time(f['T'] * fl / 1e9, 'sequence')} "
                        f"({f['forward_us'] * 1e3 / (f['T'] * fl):.2f}×)" if fl else "–"]
                       if show_floor else []) + [f"{f['gflops']:.2f}"]
                lines.append("| " + " | ".join(row) + " |")
            floors.extend(r.get("read_floor", []))
            continue
        unit = r["unit"]
        row = [case_label(r), str(r["threads"]), fmt_time(r["grulite"]["best_s"], unit)]
        for p in peers:
            if p in r:
                t = fmt_time(r[p]["best_s"], unit)
                flag = "" if r[p].get("match", True) else " ⚠"
                row.append(f"{t} ({r[p]['ratio']:.2f}×){flag}")
            else:
                row.append("–")
        if show_floor:
            fl = floor_of(r)
            row.append(f"{fmt_time(fl, unit)} ({r['grulite']['best_s'] / fl:.2f}×)" if fl else "–")
        row.append(f"{r['grulite_gflops']:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    if floors:
        lines += ["", "Read floor (tools/bench_step.c): at batch 1 every step reads all of W_hh and "
                  "does two flops per weight, so a step cannot take less than one core needs to "
                  "read those bytes: " + "; ".join(
                      f"H={f['H']}: {f['bytes'] / 1024:.0f} KiB in {f['read_ns'] / 1e3:.2f} µs "
                      f"({f['bytes'] / f['read_ns']:.0f} GB/s), ≥ {f['read_ns'] * 100 / 1e6:.3f} ms "
                      "for T=100" for f in floors) + "."]
    return "\n".join(lines) + "\n"


def result_dtypes(results: list) -> list:
    """The low-precision dtypes present in the results, in DTYPE_TOL's order."""
    return [dt for dt in DTYPE_TOL if any("grulite_" + dt in r for r in results)]


def markdown_low_precision(results: list, peers: list, meta: dict) -> str:
    """The second table: grulite with float16 / bfloat16 / int8 weights against
    float32 grulite (whole-sequence cases); "" when none was measured."""
    rows = [r for r in results if r["kind"] == "sequence" and any(k.startswith("grulite_") and
                                                                   isinstance(r[k], dict) for k in r)]
    dtypes = result_dtypes(rows)
    if not rows or not dtypes:
        return ""
    vs = "int8" if "int8" in dtypes else dtypes[-1]      # the ORT column's low-precision side
    show_ort = "ort" in peers and any("ort" in r for r in rows)
    show_tq = "int8" in dtypes and any("torch_int8" in r for r in rows)
    isas = sorted({r["grulite_" + dt].get("isa") for r in rows for dt in dtypes
                   if "grulite_" + dt in r and r["grulite_" + dt].get("isa")})
    tols = " / ".join(f"{DTYPE_TOL[dt]:g} ({dt})" for dt in dtypes)
    lines = ["**Low-precision weights**", "",
             "grulite with its weights stored as " + " / ".join(dtypes) + " (`m.astype(dtype)`"
             + (f", {', '.join(isas)} kernel" if isas else "") + "), timed in the same process and rounds as "
             "float32 grulite (same input, thread count and timer). (×) = grulite float32 time / "
             "low-precision time, > 1 means the low-precision model is faster"
             + (f"; ORT float32 / grulite {vs} = ONNX Runtime's (float32) time over grulite {vs}'s"
                if show_ort else "")
             + ("; torch dynamic int8 = `torch.ao.quantization.quantize_dynamic` of the same nn.GRU "
                "(int8 weights and activations, fbgemm), (×) = its time / grulite int8's"
                if show_tq else "")
             + f"; max abs diff of the outputs (y and h_n) from float32 grulite's, ⚠ above {tols}.", ""]
    head = (["case", "threads", "grulite float32"] + [f"{dt} (speedup vs f32)" for dt in dtypes]
            + ([f"ORT float32 / grulite {vs}"] if show_ort else [])
            + (["torch dynamic int8 (×)"] if show_tq else [])
            + ["max abs diff " + " / ".join([DTYPE_SHORT.get(dt, dt) for dt in dtypes]
                                            + (["torch int8"] if show_tq else []))])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for r in rows:
        unit = r["unit"]
        row = [case_label(r), str(r["threads"]), fmt_time(r["grulite"]["best_s"], unit)]
        diffs = []
        for dt in dtypes:
            d = r.get("grulite_" + dt)
            if d is None:
                row.append("–")
                diffs.append("–")
                continue
            row.append(f"{fmt_time(d['best_s'], unit)} ({d['speedup_vs_float32']:.2f}×)")
            diffs.append(f"{d['max_abs_diff']:.1e}" + ("" if d.get("match", True) else " ⚠"))
        if show_ort:
            d = r.get("grulite_" + vs, {})
            ratio = d.get("peer_ratios", {}).get("ort")
            row.append(f"{ratio:.2f}×" if ratio is not None else "–")
        if show_tq:
            tq, gq = r.get("torch_int8"), r.get("grulite_int8")
            row.append(f"{fmt_time(tq['best_s'], unit)} ({tq['best_s'] / gq['best_s']:.2f}×)"
                       if tq and gq else "–")
            diffs.append(f"{tq['max_abs_diff']:.1e}" if tq else "–")
        row.append(" / ".join(diffs))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def console_line(r: dict, peers: list) -> str:
    unit = r["unit"]
    g = r["grulite"]
    noisy = lambda d: ", noisy" if d.get("noisy") else ""  # noqa: E731  median > 1.5 x best
    parts = [f"grulite {fmt_time(g['best_s'], unit)} ({r['grulite_gflops']:.2f} GFLOP/s, n={g['runs']}"
             f"{noisy(g)})"]
    for p in peers:
        if p in r:
            parts.append(f"{PEER_LABEL[p]} {fmt_time(r[p]['best_s'], unit)} ({r[p]['ratio']:.2f}x"
                         + ("" if r[p].get("match", True) else ", MISMATCH")
                         + f", n={r[p]['runs']}{noisy(r[p])})")
    lows = [(dt, r["grulite_" + dt]) for dt in DTYPE_TOL if "grulite_" + dt in r]
    line = "  " + " | ".join(parts)
    if lows:
        line += "\n    low-precision: " + " | ".join(
            f"{dt} {fmt_time(d['best_s'], unit)} ({d['speedup_vs_float32']:.2f}x vs f32, isa={d.get('isa')}, "
            f"max diff {d['max_abs_diff']:.2g}" + ("" if d.get("match", True) else ", OVER TOLERANCE")
            + f", n={d['runs']}{noisy(d)})" for dt, d in lows)
    return line


def plot(results: list, peers: list, meta: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["kind"] != "cstep"]
    threads_list = sorted({r["threads"] for r in rows})
    if not rows or not peers:
        warn("plot: nothing to plot")
        return
    ncpu = meta["machine"]["cpu_count"]
    colors = {"torch": "#ee4c2c", "ort": "#2b7bba", "numpy": "#4d9a4d"}
    # One extra bar per whole-sequence case: ORT (float32) time / grulite
    # int8 time, next to ORT's float32-vs-float32 bar.
    bars_spec = [(p, PEER_LABEL[p] + " time / grulite time", colors[p], None) for p in peers]
    if "ort" in peers and any("ort" in r and "grulite_int8" in r for r in rows):
        bars_spec.append(("int8", "ORT (float32) time / grulite int8 time", "#7b4fa6", "//"))

    def bar_value(r, key):
        if key == "int8":
            return r.get("grulite_int8", {}).get("peer_ratios", {}).get("ort", np.nan)
        return r[key]["ratio"] if key in r else np.nan

    def bar_ok(r, key):
        if key == "int8":
            return r.get("grulite_int8", {}).get("match", True)
        return r[key].get("match", True) if key in r else True
    fig, axes = plt.subplots(len(threads_list), 1, figsize=(12, 4.6 * len(threads_list) + 0.9),
                             squeeze=False)
    for ax, threads in zip(axes[:, 0], threads_list):
        sub = [r for r in rows if r["threads"] == threads]
        xs = np.arange(len(sub))
        # a case without the int8 bar (streaming) centres its peer bars
        nbars = [sum(np.isfinite(bar_value(r, k)) or k != "int8" for k, *_ in bars_spec) for r in sub]
        width = 0.8 / len(bars_spec)
        vals_all = []
        for j, (key, label, color, hatch) in enumerate(bars_spec):
            vals = [bar_value(r, key) for r in sub]
            vals_all += [v for v in vals if np.isfinite(v)]
            pos = np.array([x - width * n / 2 + width * (j + 0.5) for x, n in zip(xs, nbars)])
            bars = ax.bar(pos, vals, width * 0.92, label=label, color=color,
                          **({"hatch": hatch, "edgecolor": "white", "linewidth": 0} if hatch else {}))
            oks = [bar_ok(r, key) for r in sub]
            for b, v, ok in zip(bars, vals, oks):
                if np.isfinite(v):
                    ax.annotate(f"{v:.2f}×" + ("" if ok else " ≠"), (b.get_x() + b.get_width() / 2, v),
                                xytext=(0, 2 if v >= 1 else -2), textcoords="offset points",
                                ha="center", va="bottom" if v >= 1 else "top", fontsize=8)
        ax.set_yscale("log")
        lo = min(vals_all + [1.0]) / 1.8
        hi = max(vals_all + [1.0]) * 1.8
        ax.set_ylim(lo, hi)
        ax.axhline(1.0, color="black", lw=1)
        from matplotlib.transforms import blended_transform_factory
        ax.text(0.998, 1.0, "same speed ", va="bottom", ha="right", fontsize=8,
                transform=blended_transform_factory(ax.transAxes, ax.transData))
        ax.set_xticks(xs)
        ax.set_xticklabels([(case_label(r).replace(": ", "\n").replace(", H=", ",\nH=", 1)
                             if r["kind"] != "stream" else case_label(r).replace(": ", "\n"))
                            + f"\ngrulite {fmt_time(r['grulite']['best_s'], r['unit'])}"
                            + (f"\ngrulite int8 {fmt_time(r['grulite_int8']['best_s'], r['unit'])}"
                               if "grulite_int8" in r and len(bars_spec) > len(peers) else "")
                            for r in sub], fontsize=8.5)
        ax.set_ylabel("speedup of grulite\n(peer time / grulite time)")
        title = "1 thread" if threads == 1 else f"{threads} threads"
        if threads == ncpu:
            title += " (all cores)"
        ax.set_title(title, fontsize=11, loc="left")
        ax.grid(axis="y", which="both", alpha=0.25)
        from matplotlib.ticker import FuncFormatter
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    m, v = meta["machine"], meta["versions"]
    isa = next((r["grulite"].get("isa") for r in rows if r["grulite"].get("isa")), None)
    fig.suptitle(f"grulite {v['grulite']}{' (' + isa + ')' if isa else ''} vs peers — above 1: grulite "
                 f"faster\n{m['cpu']}, {m['cpu_count']} cores; torch {v.get('torch')}, ORT "
                 f"{v.get('onnxruntime')}, numpy {v['numpy']}", fontsize=11)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.948), ncol=len(handles),
               fontsize=9, frameon=False)
    cs = [r for r in results if r["kind"] == "cstep" and r.get("steps")]
    if cs:
        txt = "C stream step, B=1 (tools/bench_step.c): " + ", ".join(
            f"H={s['H']}: {s['step_ns'] / 1e3:.2f} µs ({s['gflops']:.2f} GFLOP/s)" for s in cs[0]["steps"])
        fig.text(0.01, 0.005, txt, fontsize=8.5, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.02, 1, 0.945))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------

def select_cases(spec):
    if not spec:
        return list(CASES)
    chosen = []
    for word in (w.strip() for w in spec.split(",") if w.strip()):
        hits = [c for c in CASES if c["name"] == word or c["name"].startswith(word + "-")
                or (word not in [x["name"] for x in CASES] and c["name"].startswith(word))]
        if not hits:
            raise SystemExit(f"unknown case {word!r}; cases: {', '.join(c['name'] for c in CASES)}")
        chosen += [c for c in hits if c not in chosen]
    return [c for c in CASES if c in chosen]


def parse_dtypes(spec) -> list:
    out = []
    for w in (w.strip().lower() for w in (spec or "").split(",") if w.strip()):
        if w not in DTYPE_TOL:
            raise SystemExit(f"--dtypes: unknown {w!r}; choose from {', '.join(DTYPE_TOL)} "
                             "(float32 grulite is always measured)")
        if w not in out:
            out.append(w)
    return out


def worker(a) -> None:
    """Runs the Python cases for one thread count (in its own process)."""
    threads = a._worker
    peers = [p for p in a.peers.split(",") if p]
    timer = Timer(a.quick, a.max_time, a.rounds)
    blas = BlasThreads()
    dtypes = parse_dtypes(a.dtypes)
    if dtypes and not hasattr(grulite.Model, "astype"):
        warn("this grulite has no Model.astype: the low-precision variants are skipped")
        dtypes = []
    if "numpy" in peers:
        blas.set(threads)
    if "torch" in peers or "ort" in peers:
        import torch
        torch.set_num_threads(threads)
    results = []
    for c in select_cases(a.cases):
        t0 = time.perf_counter()
        if c["kind"] == "stream":
            rs = run_stream(c, [threads], peers, timer, blas)
        else:
            rs = run_sequence(c, [threads], peers, timer, blas, dtypes)
        for r in rs:
            r["elapsed_s"] = time.perf_counter() - t0
            log(f"{c['name']}: {case_label(r)}")
            log(console_line(r, peers))
        results += rs
    with open(a._out, "w") as f:
        json.dump(results, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", help="comma-separated case names or prefixes (default: all)")
    ap.add_argument("--threads", help="comma-separated thread counts (default: 1,os.cpu_count())")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of torch,ort,numpy")
    ap.add_argument("--quick", action="store_true", help="few repeats: a smoke test, not a measurement")
    ap.add_argument("--max-time", type=float, default=4.0,
                    help="seconds after which one measurement stops once it has 5 runs (default 4)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="times every runtime of a case in turn this many times over and keeps "
                         "each one's best, so that a slow spell of the machine does not land on "
                         "one runtime only (default 3; --quick: 1)")
    ap.add_argument("--json", default=os.path.join(OUT_DIR, "results.json"), help="results file")
    ap.add_argument("--plot", default=os.path.join(OUT_DIR, "bench.png"), help="chart file")
    ap.add_argument("--no-plot", action="store_true", help="don't make the chart")
    ap.add_argument("--markdown", help="also write the Markdown tables to this file")
    ap.add_argument("--dtypes", default=DEFAULT_DTYPES,
                    help="low-precision grulite variants timed in the whole-sequence cases, "
                         f"comma-separated subset of {','.join(DTYPE_TOL)} (default {DEFAULT_DTYPES!r}; "
                         "'' disables)")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler for bench_step.c")
    ap.add_argument("--step-cflags", help="compile flags for bench_step.c (default: setup.py's)")
    ap.add_argument("--_worker", type=int, help=argparse.SUPPRESS)   # internal: one thread count
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global grulite
    import grulite
    if a._worker:
        return worker(a)

    t_start = time.perf_counter()
    snap0 = cpu_snapshot()
    ncpu = os.cpu_count() or 1
    if a.threads:
        try:
            threads_list = sorted({int(t) for t in a.threads.split(",") if t.strip()})
        except ValueError:
            raise SystemExit(f"--threads takes comma-separated integers; got {a.threads!r}") from None
        if not threads_list or min(threads_list) < 1:
            raise SystemExit("--threads: thread counts must be >= 1")
    else:
        threads_list = sorted({1, ncpu})
    cases = select_cases(a.cases)
    wanted = {p.strip().lower().replace("onnxruntime", "ort") for p in a.peers.split(",") if p.strip()}
    bad = wanted - set(PEERS)
    if bad:
        raise SystemExit(f"--peers: unknown {sorted(bad)}; choose from {', '.join(PEERS)}")
    peers = available_peers(wanted)
    dtypes = parse_dtypes(a.dtypes)

    timer = Timer(a.quick, a.max_time, a.rounds)
    blas = BlasThreads()
    meta = {"schema": 1, "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable)]
                                + [public_path(x) if os.path.isabs(x) else x for x in sys.argv]),
            "settings": {"quick": a.quick, "threads": threads_list, "peers": peers,
                         "min_runs": timer.min_runs, "min_time_s": timer.min_time,
                         "rounds": timer.rounds,
                         "max_time_s": timer.max_time, "floor_runs": timer.floor, "tolerance": TOL,
                         "dtypes": dtypes, "dtype_tolerance": {dt: DTYPE_TOL[dt] for dt in dtypes},
                         "ratio": "peer best time / grulite best time (> 1: grulite faster)",
                         "flops": "2*3H*(in+H) per step, direction, layer and batch row"},
            "machine": machine_info(blas), "versions": versions()}
    m, v = meta["machine"], meta["versions"]
    try:
        m["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    log(f"grulite {v['grulite']} ({v.get('git')}) from {v['grulite_path']}")
    log(f"{m['cpu']}, {m['cpu_count']} cores, avx2={m['flags']['avx2']} avx512f={m['flags']['avx512f']}; "
        f"torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, numpy {v['numpy']}"
        + (f"; OPENBLAS_CORETYPE={m['env']['OPENBLAS_CORETYPE']}" if m["env"]["OPENBLAS_CORETYPE"] else ""))
    log(f"threads {threads_list}; peers {', '.join(PEER_LABEL[p] for p in peers) or 'none'}"
        + (f"; low-precision grulite {', '.join(dtypes)}" if dtypes else "")
        + ("; QUICK (smoke test, not a measurement)" if a.quick else ""))

    results = []
    py_cases = [c for c in cases if c["kind"] != "cstep"]
    for threads in threads_list if py_cases else []:
        # A fresh process per thread count: no runtime changes its thread
        # count in-process (torch's OpenMP pool and OpenBLAS stall for
        # seconds at a time after going 1 -> 2 threads on some VMs).
        log(f"\n=== {threads} thread{'s' if threads > 1 else ''} ===")
        fd, out = tempfile.mkstemp(prefix="grulite_bench_", suffix=".json")
        os.close(fd)
        cmd = [sys.executable, os.path.abspath(__file__), "--_worker", str(threads), "--_out", out,
               "--cases", ",".join(c["name"] for c in py_cases), "--peers", ",".join(peers),
               "--max-time", str(a.max_time), "--dtypes", ",".join(dtypes),
               "--rounds", str(a.rounds)] + (["--quick"] if a.quick else [])
        try:
            p = subprocess.run(cmd, timeout=3600)
            if p.returncode != 0:
                warn(f"the {threads}-thread run failed (exit {p.returncode}); its results are missing")
            else:
                with open(out) as f:
                    results += json.load(f)
        finally:
            os.unlink(out)
    for c in cases:
        if c["kind"] != "cstep":
            continue
        t0 = time.perf_counter()
        log(f"\n{c['label']}: H={', '.join(map(str, c['hidden']))}, I={c['I']}, B=1")
        rs = run_cstep(c, a.cc, a.step_cflags)
        for s in rs[0].get("steps", []):
            log(f"  H={s['H']}: stream step {s['step_ns'] / 1e3:.2f} µs ({s['gflops']:.2f} GFLOP/s, "
                f"isa={s['isa']})")
        for f in rs[0].get("forward", []):
            log(f"  H={f['H']}: forward B=1 T={f['T']} {f['forward_us'] / 1e3:.3f} ms "
                f"({f['gflops']:.2f} GFLOP/s)")
        rs[0]["elapsed_s"] = time.perf_counter() - t0
        results += rs
    order = {c["name"]: i for i, c in enumerate(CASES)}
    results.sort(key=lambda r: (order[r["case"]], r["threads"]))

    meta["elapsed_s"] = time.perf_counter() - t_start
    load = other_load(snap0, cpu_snapshot(), meta["elapsed_s"])
    meta["machine"]["other_load_during_run"] = load
    try:
        meta["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    if load is not None and load > 0.1:
        warn(f"other processes used {load:.2f} CPUs on average during this run: the numbers, the "
             "multi-thread ones especially, are disturbed; rerun on a quiet machine")
    meta["results"] = results
    md = markdown(results, peers, meta)
    meta["markdown"] = md
    md_low = markdown_low_precision(results, peers, meta)
    if md_low:
        meta["markdown_low_precision"] = md_low
        md += "\n" + md_low
    for path in (a.json, a.markdown, None if a.no_plot else a.plot):
        if path and os.path.dirname(os.path.abspath(path)):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")
    log("\n" + md)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    if not a.no_plot:
        try:
            plot(results, peers, meta, a.plot)
            log(f"chart: {a.plot}")
        except ImportError:
            warn("matplotlib is not installed: no chart (pip install matplotlib, or --no-plot)")
    log(f"results: {a.json}" + (f"; table: {a.markdown}" if a.markdown else ""))
    log(f"total time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
