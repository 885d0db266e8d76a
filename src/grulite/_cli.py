"""The grulite command line: convert, info, run, bench, demo."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Optional, TextIO

import numpy as np

from grulite._errors import GruliteError

__all__ = ["main", "convert_file"]

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _err(msg: str) -> None:
    print(f"grulite: error: {msg}", file=sys.stderr)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _describe_layers(layers: Sequence[Any]) -> list:
    """One line per layer of a model's config (LayerConfig)."""
    lines = []
    for k, lay in enumerate(layers):
        way = "bidirectional" if lay.bidirectional else "backward" if lay.reverse else "forward"
        lines.append(f"  layer {k}: input {lay.input_size:>5} -> hidden {lay.hidden_size:>5}"
                     f"  {way}"
                     f"  reset_{'after' if lay.reset_after else 'before'}"
                     f"  {'bias' if lay.bias else 'no bias'}")
    return lines


def convert_file(src: str, dst: str, prefix: Optional[str] = None, head: Optional[str] = None,
                 reset_after: bool = True, dtype: str = "float32", batch_first: bool = True,
                 out: Optional[TextIO] = None, head_from: str = "output") -> dict:
    """Converts a weights file to .grl and prints what was found (to `out`,
    default stdout; tensors of the file the model does not use, to stderr).

    The one conversion path: ``grulite convert`` and ``grulite demo`` use it.
    """
    out = out or sys.stdout
    from grulite import from_bytes
    from grulite.importers import for_path

    importer = for_path(src)
    if importer.state_dict:
        image, summary = importer.image(src, prefix=prefix, reset_after=reset_after, head=head,
                                        batch_first=batch_first, dtype=dtype, head_from=head_from)
    elif prefix or head or not reset_after or not batch_first or head_from != "output":
        raise GruliteError(f"--prefix, --head, --head-from, --reset-before and --time-major "
                           f"apply to state_dicts; a {os.path.splitext(src)[1]} file "
                           f"({importer.what}) carries its own structure")
    else:
        image, summary = importer.image(src, dtype=dtype)
    model = from_bytes(image)       # validate with the C loader before writing
    model.save(dst)
    print(f"found a GRU under prefix {summary['prefix']!r} in {os.path.basename(src)}:", file=out)
    for line in _describe_layers(model.config.layers):
        print(line, file=out)
    for d in summary["dense"]:
        print(f"  head {d['name']}: {d['in_features']} -> {d['out_features']}, {d['activation']}"
              f"{'' if d['bias'] is not None else ', no bias'}", file=out)
    bf = model.config.batch_first
    print(f"  {summary['parameters']:,} parameters, dtype {dtype}, layout "
          f"{'batch-first' if bf else 'time-major'}", file=out)
    print(f"wrote {dst} ({_human(os.path.getsize(dst))}, checksum {model.checksum:08x})", file=out)
    unused = summary.get("unused") or []
    if unused:
        shown = ", ".join(unused[:20]) + (f" and {len(unused) - 20} more" if len(unused) > 20 else "")
        print(f"grulite: note: {len(unused)} tensor(s) of {os.path.basename(src)} are not in the "
              f"model: {shown} (a Linear layer is added with --head NAME:ACTIVATION)",
              file=sys.stderr)
    return summary


# ---- subcommands -----------------------------------------------------------

def cmd_convert(a: argparse.Namespace) -> int:
    dst = a.output or os.path.splitext(a.input)[0] + ".grl"
    convert_file(a.input, dst, prefix=a.prefix, head=a.head, reset_after=a.reset_after,
                 dtype=a.dtype, batch_first=not a.time_major, head_from=a.head_from)
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    import grulite

    m = grulite.load(a.model)       # validates everything, checksum included
    c = m.config
    if a.json:
        print(json.dumps(dict(config=c.to_dict(), checksum=f"{m.checksum:08x}", bytes=m.nbytes,
                              metadata=m.metadata), indent=2))
        return 0
    print(f"{a.model}: grulite model, {_human(m.nbytes)}")
    print(f"  checksum: ok (CRC-32 {m.checksum:08x}, verified on load)")
    print(f"  input_size {c.input_size}, {c.num_layers} layer(s), dtype {c.dtype}, "
          f"default layout {'batch-first' if c.batch_first else 'time-major'}")
    for line in _describe_layers(c.layers):
        print(line)
    for k, d in enumerate(c.head):
        print(f"  head {k}: {d.in_features} -> {d.out_features}, {d.activation}"
              f"{'' if d.bias else ', no bias'}")
    print(f"  outputs: y width {c.output_size}" + (f", head {c.head_size}" if c.head else ""))
    meta = m.metadata
    if meta:
        print("  metadata:")
        for k in sorted(meta):
            v = meta[k]
            text = json.dumps(v) if not isinstance(v, str) else v
            if len(text) > 200:
                text = text[:197] + "..."
            print(f"    {k}: {text}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    import grulite

    m = grulite.load(a.model)
    try:
        x = np.load(a.input, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise GruliteError(f"{a.input!r} is not a readable .npy array: {e}") from None
    if not isinstance(x, np.ndarray):
        raise GruliteError(f"{a.input!r} must be a .npy array, not an archive")
    if x.dtype.kind != "f":
        raise GruliteError(f"{a.input!r} has dtype {x.dtype}; expected float32 or float64")
    single = x.ndim == 2
    if single:
        x = x[None] if not a.time_major else x[:, None]
    if x.ndim != 3:
        raise GruliteError(f"{a.input!r} has shape {x.shape}; expected (N, steps, input_size) "
                           "or (steps, input_size)")
    if a.time_major:
        x = x.transpose(1, 0, 2)          # view: (N, T, I)
    N, T, I = x.shape
    if I != m.config.input_size:
        raise GruliteError(f"{a.input!r} has {I} features; the model expects {m.config.input_size}")
    lengths = None
    if a.lengths:
        lengths = np.load(a.lengths, allow_pickle=False)
        if lengths.shape != (N,):
            raise GruliteError(f"{a.lengths!r} has shape {lengths.shape}; expected ({N},)")
    what = a.outputs or ("head" if m.config.head else "y")
    if what == "head" and not m.config.head:
        raise GruliteError("--outputs head: the model has no head")
    if what == "head":
        shape = (N, m.config.head_size)
    elif what == "y":
        shape = (N, T, m.config.output_size)
    else:
        raise GruliteError(f"--outputs {what}: expected head or y")
    if single:
        shape = shape[1:]
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(a.output) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(a.output)))
    os.close(fd)                       # a fresh regular file of ours, not a planted link
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
    view = out[None] if single else out
    bs = max(1, a.batch_size)
    t0 = last = time.perf_counter()
    show = not a.quiet
    try:
        for i in range(0, N, bs):
            xb = np.asarray(x[i:i + bs])
            lb = None if lengths is None else lengths[i:i + bs]
            if what == "head":
                view[i:i + bs] = m.predict(xb, lb, batch_first=True)
            else:
                view[i:i + bs] = m(xb, lengths=lb, batch_first=True)[0]
            now = time.perf_counter()
            if show and now - last > 1.0:
                done = min(N, i + bs)
                print(f"\r  {done:,}/{N:,} sequences ({100 * done / N:.0f}%), "
                      f"{done / (now - t0):,.0f} seq/s", end="", file=sys.stderr, flush=True)
                last = now
        out.flush()
        del view, out
        os.replace(tmp, a.output)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    dt = time.perf_counter() - t0
    if show:
        print(f"\r  {N:,} sequences of {T} steps in {dt:.2f} s ({N / max(dt, 1e-9):,.0f} seq/s); "
              f"wrote {what} {shape} to {a.output}", file=sys.stderr)
    return 0


def _time(fn, repeat: int, min_time: float = 0.2) -> list:
    fn()                                     # warm-up
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeat or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 100 * repeat:
            break
    return times


def cmd_bench(a: argparse.Namespace) -> int:
    import grulite

    m = grulite.load(a.model)
    c = m.config
    rng = np.random.default_rng(0)
    B, T = a.batch, a.steps
    x = rng.standard_normal((B, T, c.input_size)).astype(np.float32)
    times = _time(lambda: m(x, batch_first=True), a.repeat)
    best, med = min(times), float(np.median(times))
    print(f"{a.model}: input {c.input_size}, hidden {c.hidden_size}, {c.num_layers} layer(s)"
          f"{', bidirectional' if c.bidirectional else ''}")
    print(f"  whole sequence B={B} T={T}: best {best * 1e3:.3f} ms, median {med * 1e3:.3f} ms "
          f"({len(times)} runs)")
    print(f"  throughput: {B / best:,.0f} sequences/s, {B * T / best:,.0f} steps/s, "
          f"{2.0 * m._core.macs * B * T / best / 1e9:.2f} GFLOP/s")   # the C core's count
    if not c.bidirectional:
        s = m.stream(1)
        xt = x[:1, 0]
        st = _time(lambda: s.step(xt), a.repeat * 10)
        print(f"  streaming step B=1: best {min(st) * 1e6:.1f} us, median "
              f"{float(np.median(st)) * 1e6:.1f} us")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    import grulite

    src = os.path.join(DATA_DIR, "sunspots_gru.npz")
    ev = np.load(os.path.join(DATA_DIR, "sunspots_eval.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "sunspots.grl")
        print("Converting the bundled model (a PyTorch state_dict saved with np.savez), "
              "as `grulite convert sunspots_gru.npz --head fc:none` would:")
        convert_file(src, dst, head="fc:none")
        m = grulite.load(dst)
        x = ev["x"]
        t0 = time.perf_counter()
        pred_std = m.predict(x)[:, 0]
        dt = time.perf_counter() - t0
        del m
    mean, std = float(ev["mean"]), float(ev["std"])
    pred = pred_std * std + mean
    truth, last, years = ev["y_true"], ev["last"], ev["years"]
    print()
    print(f"Yearly sunspot numbers, predicted from the previous {x.shape[1]} years. "
          f"The years {years[0]}-{years[-1]}")
    print("were held out of training (statsmodels' sunspots data set, 1700-2008).")
    print()
    rows = range(len(years)) if a.all else range(max(0, len(years) - 12), len(years))
    print(f"  {'year':>4}  {'truth':>7}  {'grulite':>8}  {'naive':>7}")
    for i in rows:
        print(f"  {years[i]:>4}  {truth[i]:7.1f}  {pred[i]:8.1f}  {last[i]:7.1f}")
    if not a.all:
        print(f"  ... (last 12 of {len(years)} years; --all shows every year)")
    mae = float(np.mean(np.abs(pred - truth)))
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    mae0 = float(np.mean(np.abs(last - truth)))
    rmse0 = float(np.sqrt(np.mean((last - truth) ** 2)))
    print()
    print(f"  held-out MAE   grulite {mae:6.2f}   naive (next year = this year) {mae0:6.2f}")
    print(f"  held-out RMSE  grulite {rmse:6.2f}   naive                         {rmse0:6.2f}")
    diff = float(np.max(np.abs(pred - ev["torch_pred"])))
    print(f"  largest difference from the original PyTorch model's predictions: {diff:.2g}")
    print(f"  {len(years)} sequences in {dt * 1e3:.2f} ms")
    return 0


# ---- parser ---------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from grulite import __version__, _core
    from grulite.importers import describe_formats

    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="grulite", formatter_class=fmt,
        description="grulite: fast GRU inference. Convert PyTorch weights to a .grl file, "
                    "inspect it, run it, time it.",
        epilog="examples:\n  grulite demo\n  grulite convert model.npz -o model.grl --head fc:softmax\n"
               "  grulite info model.grl\n  grulite run model.grl input.npy -o output.npy\n"
               "  grulite bench model.grl")
    p.add_argument("--version", action="version", version=f"grulite {__version__}")
    sub = p.add_subparsers(dest="command", metavar="command")

    c = sub.add_parser(
        "convert", formatter_class=fmt,
        help="convert GRU weights (PyTorch, ONNX, Keras) to a .grl model",
        description="Convert GRU weights into a .grl model file: a PyTorch state_dict saved with "
                    "np.savez, torch.save (read without torch) or safetensors (the GRU tensors "
                    "are found under any prefix: gru., rnn., encoder.gru., ...), an ONNX graph or "
                    "a Keras .keras archive.",
        epilog="example:\n"
               "  python -c 'import numpy as np, torch; ...; np.savez(\"model.npz\", "
               "**{k: v.numpy() for k, v in model.state_dict().items()})'\n"
               "  grulite convert model.npz -o model.grl --head fc:softmax")
    c.add_argument("input", help="weights file, by extension: " + describe_formats())
    c.add_argument("-o", "--output", help="output .grl file (default: input with .grl)")
    c.add_argument("--prefix", help="module path of the GRU when the file holds several "
                                    "(e.g. encoder.gru)")
    c.add_argument("--head", help="Linear layers applied to the last step, with activations: "
                                  "fc:softmax or fc1:relu,fc2:none")
    c.add_argument("--head-from", choices=["output", "state"], default="output",
                   help="what the head reads: the top layer's output at the last step (default, "
                        "fc(y[:, -1])) or its final states, directions concatenated "
                        "(fc(cat(h_n[-2], h_n[-1])))")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--reset-after", dest="reset_after", action="store_true", default=True,
                   help="PyTorch's GRU variant (default)")
    g.add_argument("--reset-before", dest="reset_after", action="store_false",
                   help="the original GRU variant (Keras reset_after=False, ONNX "
                        "linear_before_reset=0)")
    c.add_argument("--dtype", default="float32", choices=list(_core.DTYPES),
                   help="GRU weight storage: float32 (default, exact), float16 (half the "
                        "size), int8 (a quarter, per-row scales); activations stay float32")
    c.add_argument("--time-major", action="store_true",
                   help="record (steps, batch, features) as the default input layout "
                        "(nn.GRU batch_first=False)")
    c.set_defaults(fn=cmd_convert)

    i = sub.add_parser("info", formatter_class=fmt, help="show a model's configuration",
                       description="Validate a .grl file (checksum included) and show its "
                                   "configuration, sizes and metadata.",
                       epilog="example:\n  grulite info model.grl")
    i.add_argument("model")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(fn=cmd_info)

    r = sub.add_parser(
        "run", formatter_class=fmt, help="run a model over a .npy file of sequences",
        description="Run a model over an input of any size, in batches, without loading it "
                    "all (the input is memory-mapped). Writes the head output (N, head_size) "
                    "for models with a head, else the GRU outputs y (N, steps, D*H).",
        epilog="example:\n  grulite run model.grl input.npy -o output.npy --batch-size 256\n"
               "  (input.npy: float32 (N, steps, input_size) or (steps, input_size))")
    r.add_argument("model")
    r.add_argument("input", help=".npy of shape (N, steps, input_size)")
    r.add_argument("-o", "--output", required=True, help="output .npy")
    r.add_argument("--batch-size", type=int, default=256, help="sequences per call (default 256)")
    r.add_argument("--lengths", help=".npy of N integer lengths for padded sequences")
    r.add_argument("--outputs", choices=["head", "y"],
                   help="what to write (default: head if the model has one, else y)")
    r.add_argument("--time-major", action="store_true",
                   help="input is (steps, N, input_size)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    r.set_defaults(fn=cmd_run)

    b = sub.add_parser("bench", formatter_class=fmt, help="time a model on random input",
                       description="Time whole-sequence calls and streaming steps on random "
                                   "input: latency, throughput and GFLOP/s.",
                       epilog="example:\n  grulite bench model.grl --batch 1 --steps 100")
    b.add_argument("model")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--steps", type=int, default=100)
    b.add_argument("--repeat", type=int, default=20, help="minimum timed runs")
    b.set_defaults(fn=cmd_bench)

    d = sub.add_parser("demo", formatter_class=fmt,
                       help="run the bundled sunspot model end to end",
                       description="Convert the bundled GRU (trained with PyTorch on the yearly "
                                   "sunspot numbers, tools/train_demo.py), then predict the "
                                   "held-out years and compare with the truth.",
                       epilog="example:\n  grulite demo --all")
    d.add_argument("--all", action="store_true", help="print every held-out year")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "fn", None):
        parser.print_help()
        return 0
    try:
        return a.fn(a)
    except (GruliteError, OSError) as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
