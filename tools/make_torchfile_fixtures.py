#!/usr/bin/env python3
"""Generate the torch.save / safetensors fixtures (tests/fixtures/torchfile/).

Re-run from the repository root (needs torch==2.13.0; the safetensors
package is used when installed, else the small writer below):

    python3 tools/make_torchfile_fixtures.py           # rewrites the fixtures
    python3 tools/make_torchfile_fixtures.py --check   # regenerates in a temp dir and compares

Each case is a real torch model (an nn.GRU inside a wrapper module, with
nn.Linear heads) saved the way users save them, plus the outputs torch
computes for a seeded input:

* ``*.pt``           torch.save of a state_dict or of a checkpoint dict
                     (model + epoch + optimizer state + numpy scalars),
                     float32 / float16 / bfloat16, one with tensors that are
                     offset and transposed views of one shared storage
* ``*.safetensors``  safetensors files (float32, bfloat16)
* ``expected.npz``   per case ``<case>/config`` (JSON: file, prefix, head,
                     batch_first), ``<case>/x``, ``<case>/lengths``,
                     ``<case>/y``, ``<case>/h_n``, ``<case>/head_out``

Reduced-precision cases are judged against torch running in float32 on the
rounded weights (what grulite computes: it widens them to float32).

The functions ``build_net`` and ``reference`` are also imported by
tests/test_torchfile.py and tests/test_safetensors.py for their live checks;
the file writers are tests/support/files.py's.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile

import numpy as np

# The numpy reference GRU and the file writers the tests use too (tests/support/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.files import write_npz, write_safetensors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "torchfile")
EXPECTED = "expected.npz"
BUDGET = 200_000            # bytes, all fixtures together


# ---------------------------------------------------------------------------
# models and torch's reference outputs


def build_net(seed: int, input_size: int, hidden_size: int, num_layers: int = 1,
              bidirectional: bool = False, bias: bool = True, gru_path: str = "gru",
              head=None):
    """A wrapper nn.Module holding an nn.GRU at ``gru_path`` (dotted, e.g.
    "encoder.gru") and nn.Linear head layers.

    head: list of (name, out_features, activation); a name may be dotted
    ("head.0").  Returns (net, gru, [(name, linear, activation), ...]).
    """
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    net = nn.Module()
    gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, bias=bias,
                 bidirectional=bidirectional, batch_first=True)

    def attach(path, mod):
        parts = path.split(".")
        parent = net
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(parts[-1], mod)

    attach(gru_path, gru)
    heads = []
    in_f = (2 if bidirectional else 1) * hidden_size
    for name, out_f, act in head or []:
        lin = nn.Linear(in_f, out_f)
        attach(name, lin)
        heads.append((name, lin, act))
        in_f = out_f
    net.eval()
    return net, gru, heads


def reference(gru, heads, x: np.ndarray, lengths=None, batch_first: bool = True) -> dict:
    """torch's y, h_n (and head output at each sequence's last valid step)
    for x laid out as ``batch_first`` says.  The GRU runs in float32."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(1)
    with torch.no_grad():
        g = torch.nn.GRU(gru.input_size, gru.hidden_size, num_layers=gru.num_layers,
                         bias=gru.bias, bidirectional=gru.bidirectional, batch_first=batch_first)
        g.load_state_dict({k: v.float() for k, v in gru.state_dict().items()})
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        T = x.shape[1] if batch_first else x.shape[0]
        B = x.shape[0] if batch_first else x.shape[1]
        if lengths is not None:
            packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=batch_first,
                                          enforce_sorted=False)
            yp, hn = g(packed)
            y, _ = pad_packed_sequence(yp, batch_first=batch_first, total_length=T)
        else:
            y, hn = g(xt)
        out = dict(y=y.numpy().astype(np.float32), h_n=hn.numpy().astype(np.float32))
        if heads:
            yb = y if batch_first else y.transpose(0, 1)
            idx = torch.as_tensor(np.asarray(lengths) - 1) if lengths is not None else \
                torch.full((B,), T - 1, dtype=torch.int64)
            v = yb[torch.arange(B), idx]
            acts = {"none": lambda t: t, "relu": torch.relu, "tanh": torch.tanh,
                    "sigmoid": torch.sigmoid, "softmax": lambda t: torch.softmax(t, -1)}
            for _, lin, act in heads:
                v = acts[act](torch.nn.functional.linear(v, lin.weight.float(), lin.bias.float()))
            out["head_out"] = v.numpy().astype(np.float32)
    return out


def head_spec(heads) -> str | None:
    return ",".join(f"{n}:{a}" for n, _, a in heads) or None


# ---------------------------------------------------------------------------
# safetensors: the package's writer, or tests/support/files.py's when it is not installed

def save_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> str:
    """With the safetensors package when installed; returns which writer."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        write_safetensors(path, tensors, metadata)
        return "grulite writer"
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    return "safetensors"


# ---------------------------------------------------------------------------
# the cases


def _inputs(seed: int, B: int, T: int, I: int, batch_first: bool = True, lengths=None):
    rng = np.random.default_rng(seed + 1000)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    if not batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    return x, (None if lengths is None else np.asarray(lengths, np.int64))


def _shared_views(sd: dict, transpose: str) -> dict:
    """The same tensors as views into one flat storage (offsets), with
    ``transpose`` stored transposed (a non-contiguous view)."""
    import torch

    parts, shapes = [], {}
    for k, v in sd.items():
        v = v.t().contiguous() if k == transpose else v
        shapes[k] = v.shape
        parts.append(v.reshape(-1))
    flat = torch.cat(parts)
    out, pos = {}, 0
    for k, v in sd.items():
        n = v.numel()
        view = flat[pos:pos + n].view(shapes[k])
        out[k] = view.t() if k == transpose else view
        pos += n
    assert all(torch.equal(out[k], sd[k]) for k in sd)
    return out


def case_list() -> list:
    """(name, builder) pairs; a builder(outdir) writes its file and returns
    the case's config and arrays."""
    import torch

    def bidir_state_dict(out):
        net, gru, heads = build_net(1, 5, 8, num_layers=2, bidirectional=True,
                                    gru_path="encoder", head=[("fc", 3, "softmax")])
        fname = "gru_bidir_state_dict.pt"
        torch.save(net.state_dict(), os.path.join(out, fname))   # archive dir = file stem
        x, lens = _inputs(1, 3, 6, 5, lengths=[6, 3, 1])
        return dict(file=fname, prefix=None, head=head_spec(heads), batch_first=True), \
            dict(x=x, lengths=lens, **reference(gru, heads, x, lens))

    def checkpoint(out):
        net, gru, heads = build_net(2, 4, 6, gru_path="encoder.gru",
                                    head=[("head.0", 5, "relu"), ("head.1", 2, "sigmoid")])
        # one real step on a copy so the optimizer has tensor state; the saved
        # model is the un-stepped one the reference outputs come from
        import copy
        net2 = copy.deepcopy(net)
        opt = torch.optim.Adam(net2.parameters(), lr=1e-3)
        net2.encoder.gru(torch.ones(1, 2, 4))[0].sum().backward()
        opt.step()
        ck = {"model": net.state_dict(), "epoch": 3, "optimizer": opt.state_dict(),
              "metrics": {"loss": np.float64(0.25), "history": [1.0, 0.5], "best": np.int64(2)},
              "config": {"hidden": 6, "name": "demo", "shape": torch.Size([2, 3])}}
        buf = io.BytesIO()
        torch.save(ck, buf)                                       # archive dir = "archive"
        fname = "gru_checkpoint.pt"
        with open(os.path.join(out, fname), "wb") as f:
            f.write(buf.getvalue())
        x, lens = _inputs(2, 2, 5, 4)
        return dict(file=fname, prefix=None, head=head_spec(heads), batch_first=True), \
            dict(x=x, **reference(gru, heads, x))

    def half_time_major(out):
        net, gru, heads = build_net(3, 3, 5, bias=False, gru_path="rnn")
        net.half()
        fname = "gru_half_nobias.pt"
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(buf.getvalue())
        x, lens = _inputs(3, 2, 4, 3, batch_first=False, lengths=[4, 2])
        return dict(file=fname, prefix="rnn", head=None, batch_first=False), \
            dict(x=x, lengths=lens, **reference(gru, heads, x, lens, batch_first=False))

    def bf16_views(out):
        net, gru, heads = build_net(4, 4, 3, num_layers=2, gru_path="gru",
                                    head=[("out", 2, "tanh")])
        net.to(torch.bfloat16)
        sd = _shared_views(dict(net.state_dict()), transpose="gru.weight_hh_l1")
        fname = "gru_bf16_views.pt"
        buf = io.BytesIO()
        torch.save(sd, buf)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(buf.getvalue())
        x, lens = _inputs(4, 2, 5, 4)
        return dict(file=fname, prefix=None, head=head_spec(heads), batch_first=True), \
            dict(x=x, **reference(gru, heads, x))

    def st_f32(out):
        net, gru, heads = build_net(5, 4, 7, num_layers=2, gru_path="model.gru",
                                    head=[("model.fc", 3, "softmax")])
        fname = "gru.safetensors"
        save_safetensors(os.path.join(out, fname), dict(net.state_dict()), {"format": "pt"})
        x, lens = _inputs(5, 3, 6, 4, lengths=[2, 6, 5])
        return dict(file=fname, prefix=None, head=head_spec(heads), batch_first=True), \
            dict(x=x, lengths=lens, **reference(gru, heads, x, lens))

    def st_bf16(out):
        net, gru, heads = build_net(6, 3, 4, bidirectional=True, gru_path="rnn")
        net.to(torch.bfloat16)
        fname = "gru_bf16.safetensors"
        save_safetensors(os.path.join(out, fname), dict(net.state_dict()))
        x, lens = _inputs(6, 2, 4, 3)
        return dict(file=fname, prefix="rnn", head=None, batch_first=True), \
            dict(x=x, **reference(gru, heads, x))

    return [("bidir_state_dict", bidir_state_dict), ("checkpoint", checkpoint),
            ("half_time_major", half_time_major), ("bf16_views", bf16_views),
            ("st_f32", st_f32), ("st_bf16", st_bf16)]


def generate(out: str) -> list:
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(out, exist_ok=True)
    arrays: dict = {}
    files = []
    for name, build in case_list():
        config, data = build(out)
        files.append(config["file"])
        arrays[f"{name}/config"] = np.array(json.dumps(config, sort_keys=True))
        for k, v in data.items():
            if v is not None:
                arrays[f"{name}/{k}"] = v
    write_npz(os.path.join(out, EXPECTED), arrays)
    return files + [EXPECTED]


def load_expected(path: str) -> list:
    """The cases of an expected.npz: list of dicts with config and arrays."""
    cases: dict = {}
    with np.load(path, allow_pickle=False) as f:
        for key in f.files:
            name, _, field = key.partition("/")
            c = cases.setdefault(name, dict(name=name, lengths=None, head_out=None))
            c[field] = json.loads(str(f[key])) if field == "config" else f[key]
    return [cases[k] for k in sorted(cases)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=FIXTURE_DIR, help="output directory (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate in a temporary directory and compare with --out")
    args = ap.parse_args(argv)
    if not args.check:
        files = generate(args.out)
        total = sum(os.path.getsize(os.path.join(args.out, f)) for f in files)
        for f in files:
            print(f"{os.path.getsize(os.path.join(args.out, f)):>8}  {f}")
        print(f"{total:>8}  total (budget {BUDGET})")
        return 0 if total <= BUDGET else 1
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(tmp)
        bad = 0
        for f in files:
            a = open(os.path.join(tmp, f), "rb").read()
            try:
                b = open(os.path.join(args.out, f), "rb").read()
            except FileNotFoundError:
                print(f"MISSING  {f}")
                bad += 1
                continue
            same = a == b
            print(f"{'same' if same else 'DIFFERS':8} {f}")
            bad += not same
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
