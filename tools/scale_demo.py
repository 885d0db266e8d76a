"""Scaling out with Dask: millions of short sequences through grulite.dask.

    python tools/scale_demo.py                  # 2 M sequences, T=20, I=8, H=32 + head
    python tools/scale_demo.py --n 500000 --workers 1 2 4

Builds a small model (one GRU layer, H=32, a softmax head over 4 classes),
saves it as a .grl file and runs the same N sequences through it:

* in one process: ``Model.predict`` over the array, ``--batch-size`` rows
  per call, with every core (the baseline);
* with ``grulite.dask.predict`` on the threaded scheduler (in-process);
* with ``grulite.dask.predict`` on a ``dask.distributed.LocalCluster`` of
  1, 2, ... worker processes (one task thread each, grulite threads =
  cores / workers so the machine is filled but not oversubscribed).

The input is generated chunk by chunk from seeded generators (on the
workers for the cluster, persisted there before timing), so every run
sees the same numbers: the results are checked equal, bit for bit, to the
single-process call.  Times cover inference and gathering the (N, 4)
result to the client; the cluster's start and the input generation are
not timed (they are printed).  The last column of the table is the model
transfer: how many times each worker unpickled (and mapped) the model.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import logging
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Prefer the in-place build of this checkout (python setup.py build_ext
# --inplace) over an installed grulite, unless PYTHONPATH says otherwise
# (as tools/bench.py does; worker processes inherit sys.path).
# Only a compiled extension counts: `pip install .` leaves the generated
# _core.c in the tree, and that alone is not an importable build.
if not os.environ.get("PYTHONPATH") and any(
        os.path.exists(os.path.join(ROOT, "src", "grulite", "_core" + suffix))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES):
    sys.path.insert(0, os.path.join(ROOT, "src"))

import grulite  # noqa: E402

T, I, H, CLASSES = 20, 8, 32, 4


def make_model() -> grulite.Model:
    r = np.random.default_rng(0)
    b = 1 / np.sqrt(H)
    sd = {"gru.weight_ih_l0": r.uniform(-b, b, (3 * H, I)), "gru.weight_hh_l0": r.uniform(-b, b, (3 * H, H)),
          "gru.bias_ih_l0": r.uniform(-b, b, 3 * H), "gru.bias_hh_l0": r.uniform(-b, b, 3 * H),
          "fc.weight": r.standard_normal((CLASSES, H)), "fc.bias": r.standard_normal(CLASSES) * 0.1}
    return grulite.from_state_dict({k: v.astype(np.float32) for k, v in sd.items()},
                                   head="fc:softmax")


def gen_block(rows: int, index: int) -> np.ndarray:
    """Block `index` of the input: (rows, T, I) float32, seeded by its index."""
    x = np.random.default_rng(1000 + index).random((rows, T, I), dtype=np.float32)
    x -= np.float32(0.5)
    return x


def _gen_block_dask(block_info=None):
    info = block_info[None]
    rows = info["chunk-shape"][0]
    return gen_block(rows, info["chunk-location"][0])


def row_chunks(n: int, chunk: int) -> tuple:
    return (chunk,) * (n // chunk) + ((n % chunk,) if n % chunk else ())


def fmt_rate(n: int, seconds: float) -> str:
    return f"{n / seconds / 1e6:.2f} M/s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2_000_000, help="sequences (default 2,000,000)")
    ap.add_argument("--chunk", type=int, default=50_000, help="rows per dask block")
    ap.add_argument("--batch-size", type=int, default=256,
                    help="rows per model call (small batches stay in cache: fastest)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per setup (best kept)")
    args = ap.parse_args(argv)

    try:
        import dask
        import dask.array as da
        import distributed

        import grulite.dask as gd
    except ImportError as e:
        print(f"needs dask and distributed: pip install \"grulite[dask]\" ({e})", file=sys.stderr)
        return 2

    cores = os.cpu_count() or 1
    n, chunk = args.n, args.chunk
    chunks = row_chunks(n, chunk)
    tmp = tempfile.mkdtemp(prefix="grulite_scale_")
    path = os.path.join(tmp, "model.grl")
    make_model().save(path)
    model = grulite.load(path)

    print(f"# grulite scale demo: {n:,} sequences x T={T} x I={I}, GRU H={H} + softmax head "
          f"({CLASSES}), {model.nbytes:,}-byte .grl")
    print(f"# {platform.processor() or platform.machine()}, {cores} cores, kernel set {model.isa}; "
          f"grulite {grulite.__version__}, dask {dask.__version__}, distributed "
          f"{distributed.__version__}, numpy {np.__version__}")
    print(f"# blocks of {chunk:,} rows ({len(chunks)} tasks), {args.batch_size} rows per model "
          f"call; best of {args.repeat} runs")

    t0 = time.perf_counter()
    x = np.concatenate([gen_block(c, i) for i, c in enumerate(chunks)])
    print(f"# input generated in-process in {time.perf_counter() - t0:.1f} s "
          f"({x.nbytes / 2**30:.2f} GiB)")

    def best(fn):
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    rows = []

    # -- the single-process call
    single = grulite.load(path, num_threads=cores)

    def run_single():
        bs = args.batch_size
        return np.concatenate([single.predict(x[s:s + bs]) for s in range(0, n, bs)])

    single(x[:8])
    t_single, ref = best(run_single)
    rows.append(("single process: Model.predict", f"1 x {cores} threads", t_single, "-"))
    single1 = grulite.load(path, num_threads=1)
    t1, out1 = best(lambda: np.concatenate([single1.predict(x[s:s + args.batch_size])
                                            for s in range(0, n, args.batch_size)]))
    assert np.array_equal(out1, ref)
    rows.append(("single process: Model.predict", "1 x 1 thread", t1, "-"))

    # -- dask, threaded scheduler, in-process
    local = grulite.load(path, num_threads=1)
    xd = da.from_array(x, chunks=(chunks, T, I))
    t_thr, out = best(lambda: gd.predict(local, xd, batch_size=args.batch_size)
                      .compute(scheduler="threads", num_workers=cores))
    assert np.array_equal(out, ref), "threaded scheduler: results differ"
    rows.append(("grulite.dask, threaded scheduler", f"{cores} tasks x 1 thread", t_thr, "-"))

    # -- dask.distributed LocalCluster
    for w in args.workers:
        threads = max(1, cores // w)
        t0 = time.perf_counter()
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                      dashboard_address=None,
                                      silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster) as client:
            client.wait_for_workers(w)
            started = time.perf_counter() - t0
            t0 = time.perf_counter()
            xs = da.map_blocks(_gen_block_dask, chunks=(chunks, (T,), (I,)), dtype=np.float32,
                               meta=np.empty((0, 0, 0), np.float32))
            xs = client.persist(xs)
            distributed.wait(xs)
            generated = time.perf_counter() - t0
            client.run(gd.cache_clear)
            m = grulite.load(path, num_threads=threads)
            t_c, out = best(lambda m=m, xs=xs: gd.predict(m, xs, batch_size=args.batch_size).compute())
            assert np.array_equal(out, ref), f"{w} workers: results differ"
            infos = client.run(gd.cache_info)
            sent = ", ".join(f"{i['unpickles']}/{i['loads']}" for i in infos.values())
            print(f"# {w} worker(s): cluster up in {started:.1f} s, input generated and "
                  f"persisted on the workers in {generated:.1f} s; per worker, model unpickled / "
                  f"mapped over {args.repeat} run(s): {sent}")
            rows.append(("grulite.dask, LocalCluster", f"{w} worker{'s' if w > 1 else ''} x "
                         f"{threads} thread{'s' if threads > 1 else ''}", t_c,
                         f"{sent} (per worker, {args.repeat} run(s))"))

    print()
    print("| setup | processes x grulite threads | time | sequences/s | vs single process | "
          "model unpickled / mapped |")
    print("|---|---|---:|---:|---:|---|")
    for name, how, t, sent in rows:
        print(f"| {name} | {how} | {t:.2f} s | {fmt_rate(n, t)} | {t_single / t:.2f}x | {sent} |")
    print()
    print("All results equal the single-process call bit for bit.")
    os.remove(path)
    os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
