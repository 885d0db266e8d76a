"""Side-by-side timing of grulite, torch.nn.GRU and ONNX Runtime.

    python tools/bench.py                 # default case B=1 T=100 I=64 H=128
    python tools/bench.py --case 32,100,64,128,1 --json out.json

Each case is B,T,I,H,layers[,bidir].  Every runtime gets the same weights
and input, is warmed up, then timed best-of-N on one thread and on all
threads (torch.set_num_threads, ORT intra_op_num_threads).  Ratios are peer
time / grulite time (> 1: grulite is faster).  torch and onnxruntime are
tools-only dependencies; missing ones are skipped.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time

import numpy as np

import grulite


def best_of(fn, n: int = 30, min_time: float = 0.3) -> float:
    for _ in range(3):
        fn()
    times = []
    end = time.perf_counter() + min_time
    while len(times) < n or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) > 50 * n:
            break
    return min(times)


def run_case(B, T, I, H, L, bidir, threads):
    import torch

    torch.manual_seed(0)
    gru = torch.nn.GRU(I, H, L, batch_first=True, bidirectional=bool(bidir)).eval()
    x = torch.randn(B, T, I)
    xn = x.numpy()
    m = grulite.from_state_dict(gru.state_dict())
    res = {"case": dict(B=B, T=T, I=I, H=H, layers=L, bidirectional=bool(bidir)), "threads": threads}

    torch.set_num_threads(threads)
    with torch.inference_mode():
        res["torch_s"] = best_of(lambda: gru(x))
    res["grulite_s"] = best_of(lambda: m(xn))
    try:
        import onnxruntime as ort

        buf = io.BytesIO()
        torch.onnx.export(gru, (x,), buf, input_names=["x"], output_names=["y", "h"],
                          dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
        res["ort_s"] = best_of(lambda: sess.run(None, {"x": xn}))
    except ImportError:
        res["ort_s"] = None
    flops = sum((2 if bidir else 1) * B * T * 2.0 * 3 * H * ((I if l == 0 else H * (2 if bidir else 1)) + H)
                for l in range(L))
    res["grulite_gflops"] = flops / res["grulite_s"] / 1e9
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", help="B,T,I,H,layers[,bidir]")
    ap.add_argument("--json", help="write results here")
    a = ap.parse_args()
    cases = a.case or ["1,100,64,128,1"]
    ncpu = os.cpu_count() or 1
    out = {"machine": f"{platform.processor() or platform.machine()}, {ncpu} cores, "
                      f"{platform.system()}", "grulite": grulite.__version__, "results": []}
    for spec in cases:
        v = [int(s) for s in spec.split(",")]
        B, T, I, H, L = v[:5]
        bidir = v[5] if len(v) > 5 else 0
        for threads in sorted({1, ncpu}):
            r = run_case(B, T, I, H, L, bidir, threads)
            out["results"].append(r)
            ort_txt = (f"ORT {r['ort_s'] * 1e3:8.3f} ms ({r['ort_s'] / r['grulite_s']:.2f}x)"
                       if r["ort_s"] else "ORT n/a")
            print(f"B={B} T={T} I={I} H={H} L={L}{' bidir' if bidir else ''} threads={threads}: "
                  f"grulite {r['grulite_s'] * 1e3:8.3f} ms ({r['grulite_gflops']:.1f} GFLOP/s) | "
                  f"torch {r['torch_s'] * 1e3:8.3f} ms ({r['torch_s'] / r['grulite_s']:.2f}x) | {ort_txt}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
