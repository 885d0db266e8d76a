#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tools/fuzz/README.md).

    PYTHONPATH=<a grulite build> python tools/fuzz/make_seeds.py OUT_DIR

Makes OUT_DIR/<target>/ for every target:

  load, forward   small valid .grl images of many configurations (float32 /
                  float16 / int8 weights, 1-3 layers, bidirectional, reverse,
                  reset before / after, with and without bias, heads of every
                  activation, time-major, head from the final state), made
                  with the Python API and prefixed with the targets' control
                  bytes (fuzz_common.h, fuzz_forward.c)
  npz             np.savez / np.savez_compressed state_dicts
  safetensors     files written here (F32 / F16 / BF16 / F64) and the test
                  fixtures
  pt              the torch.save fixtures of tests/fixtures/torchfile, and
                  more when torch is installed
  onnx, keras     the small test fixtures (tests/fixtures/onnx, variants,
                  keras, keras_variants)

Deterministic: the same files every run.  Nothing here is committed; the
corpora are generated (the whole set is about 1 MB).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")

# (input_size, layers, dense, dtype, batch_first, head_from)
# layer: (hidden, directions, reset_after, bias, reverse); dense: (out, activation, bias)
CONFIGS = [
    (1, [(1, 1, True, True, False)], [], "float32", True, "output"),
    (3, [(4, 1, True, True, False)], [], "float32", True, "output"),
    (3, [(4, 1, False, True, False)], [], "float32", False, "output"),
    (2, [(3, 1, True, False, False)], [], "float32", True, "output"),
    (3, [(5, 2, True, True, False)], [], "float32", True, "output"),
    (2, [(3, 2, False, False, False)], [], "float32", False, "output"),
    (3, [(4, 1, True, True, True)], [], "float32", True, "output"),
    (3, [(17, 1, True, True, False)], [], "float32", True, "output"),
    (2, [(3, 1, True, True, False), (4, 1, True, True, False)], [], "float32", True, "output"),
    (2, [(3, 2, True, True, False), (2, 1, False, True, True)], [], "float32", True, "output"),
    (3, [(4, 1, True, True, False), (3, 1, False, False, False), (2, 1, True, True, False)],
     [], "float32", True, "output"),
    (3, [(4, 1, True, True, False)], [(2, "softmax", True)], "float32", True, "output"),
    (3, [(4, 1, True, True, False)], [(5, "relu", True), (3, "sigmoid", False)], "float32",
     True, "output"),
    (3, [(4, 2, True, True, False)], [(2, "tanh", True)], "float32", True, "state"),
    (2, [(3, 1, True, True, True)], [(2, "none", False)], "float32", False, "state"),
    (3, [(4, 1, True, True, False)], [], "float16", True, "output"),
    (3, [(5, 2, False, True, False)], [(2, "softmax", True)], "float16", True, "output"),
    (2, [(17, 1, True, True, False)], [], "float16", False, "output"),
    (3, [(4, 1, True, True, False)], [], "int8", True, "output"),
    (5, [(3, 2, True, False, False), (2, 1, False, True, False)], [(3, "relu", True)], "int8",
     True, "output"),
    (7, [(17, 1, True, True, True)], [], "int8", True, "output"),
    # Token models: I is the embedding's width; the last entry (vocab size,
    # fold) adds an embedding in front.
    (4, [(6, 1, True, True, False)], [(9, "none", True)], "float32", True, "output", (9, True)),
    (5, [(7, 1, False, True, False), (5, 1, True, True, False)], [(11, "softmax", True)], "int8",
     False, "output", (11, False)),
    (3, [(4, 1, True, False, False)], [(6, "relu", True)], "float16", True, "output", (6, None)),
]

ACTS = ("none", "relu", "tanh", "sigmoid", "softmax")


def rnd(rng, *shape):
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


# GRU activations with parameters, for the seeds' other-activation layers.
FNS = (("relu", 0.0, 0.0), ("hard_sigmoid", 0.2, 0.5), ("affine", 0.5, 0.1),
       ("leaky_relu", 0.1, 0.0), ("elu", 1.0, 0.0), ("softsign", 0.0, 0.0),
       ("thresholded_relu", 0.3, 0.0), ("scaled_tanh", 1.2, 0.6), ("softplus", 0.0, 0.0),
       ("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0))


def grl_images():
    """(name, image bytes) for every configuration."""
    from grulite.importers._image import image_from_layers

    out = []
    for k, (I, layers, dense, dtype, bf, head_from, *emb) in enumerate(CONFIGS):
        rng = np.random.default_rng(k)
        lay, inp = [], I
        for (H, D, ra, bias, rev) in layers:
            d = dict(input_size=inp, hidden_size=H, num_directions=D, reverse=rev,
                     reset_after=ra, bias=bias,
                     weight_ih=[rnd(rng, 3 * H, inp) for _ in range(D)],
                     weight_hh=[rnd(rng, 3 * H, H) for _ in range(D)])
            if bias:
                d["bias_ih"] = [rnd(rng, 3 * H) for _ in range(D)]
                d["bias_hh"] = [rnd(rng, 3 * H) for _ in range(D)]
            j = len(lay)
            if (k + j) % 3 == 2:          # other activations, with parameters, and a clip
                d["activations"] = [(FNS[(k + j + d_) % len(FNS)], FNS[(k + 2 * j + d_ + 3) % len(FNS)])
                                    for d_ in range(D)]
                d["clip"] = 2.5 if k % 2 else None
            if D == 2 and k % 2 == 0:     # merged directions (Keras' merge_mode)
                d["merge"] = ("sum", "mul", "ave")[(k // 2) % 3]
            lay.append(d)
            inp = H if d.get("merge") else D * H
        if k % 4 == 1:                    # a learned initial state on layer 0
            lay[0]["h0"] = [rnd(rng, lay[0]["hidden_size"]) for _ in range(lay[0]["num_directions"])]
        den = []
        for j, (o, act, bias) in enumerate(dense):
            den.append(dict(name=f"fc{j}", in_features=inp, out_features=o, activation=act,
                            weight=rnd(rng, o, inp), bias=rnd(rng, o) if bias else None))
            inp = o
        meta = {"seed": k}
        embedding = dict(weight=rnd(rng, emb[0][0], I), fold=emb[0][1]) if emb else None
        try:
            img = image_from_layers(I, lay, den, meta, batch_first=bf, dtype=dtype,
                                    head_from=head_from, **({"embedding": embedding} if emb else {}))
        except TypeError:       # a grulite without head_from
            if head_from != "output":
                continue
            img = image_from_layers(I, lay, den, meta, batch_first=bf, dtype=dtype)
        name = f"c{k:02d}_{dtype}_L{len(layers)}_N{len(dense)}" + ("_emb" if emb else "")
        out.append((name, bytes(img)))
    return out


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def seeds_grl(out):
    rng = np.random.default_rng(1234)
    n = 0
    for name, img in grl_images():
        # load: mode 3 (reseal CRC + fix the size field), plus a raw one.
        write(os.path.join(out, "load", name), bytes([3]) + img)
        write(os.path.join(out, "load", name + "_raw"), bytes([0]) + img)
        # forward: mode, then 8 argument bytes (fuzz_forward.c), a few per image.
        for v in range(3):
            hdr = bytes([3]) + bytes(rng.integers(0, 256, 8, dtype=np.uint8).tolist())
            if v == 0:
                hdr = bytes([3, 0b01110101, 0xFF, 0b00111000, 1, 2, 3, 4, 0])
            write(os.path.join(out, "forward", f"{name}_{v}"), hdr + img)
            n += 1
    return n


def state_dict(rng, I, H, L, bidir, bias, prefix="gru.", head=None):
    sd = {}
    inp = I
    for l in range(L):
        for sfx in (("", "_reverse") if bidir else ("",)):
            sd[f"{prefix}weight_ih_l{l}{sfx}"] = rnd(rng, 3 * H, inp)
            sd[f"{prefix}weight_hh_l{l}{sfx}"] = rnd(rng, 3 * H, H)
            if bias:
                sd[f"{prefix}bias_ih_l{l}{sfx}"] = rnd(rng, 3 * H)
                sd[f"{prefix}bias_hh_l{l}{sfx}"] = rnd(rng, 3 * H)
        inp = H * (2 if bidir else 1)
    if head:
        sd["fc.weight"] = rnd(rng, head, inp)
        sd["fc.bias"] = rnd(rng, head)
    return sd


SD_CONFIGS = [  # I, H, L, bidir, bias, prefix, head
    (3, 4, 1, False, True, "gru.", None),
    (2, 3, 2, True, True, "rnn.", 2),
    (1, 2, 1, False, False, "", None),
    (3, 5, 1, True, False, "encoder.gru.", 3),
    (2, 17, 1, False, True, "gru.", None),
]


def seeds_npz(out):
    n = 0
    for k, (I, H, L, bd, bias, prefix, head) in enumerate(SD_CONFIGS):
        sd = state_dict(np.random.default_rng(100 + k), I, H, L, bd, bias, prefix, head)
        for comp in (False, True):
            p = os.path.join(out, "npz", f"sd{k}{'_z' if comp else ''}.npz")
            os.makedirs(os.path.dirname(p), exist_ok=True)
            (np.savez_compressed if comp else np.savez)(p, **sd)
            n += 1
    # Sequence models: an embedding feeding the GRU, and a GRUCell.
    rng = np.random.default_rng(99)
    lm = state_dict(rng, 4, 5, 1, False, True, "gru.", 7)
    lm["emb.weight"] = rnd(rng, 7, 4)
    cell = {"cell.weight_ih": rnd(rng, 9, 2), "cell.weight_hh": rnd(rng, 9, 3),
            "cell.bias_ih": rnd(rng, 9), "cell.bias_hh": rnd(rng, 9)}
    for name, sd in (("lm", lm), ("cell", cell)):
        np.savez(os.path.join(out, "npz", f"{name}.npz"), **sd)
        n += 1
    return n


def seeds_vocab(out):
    """Vocabulary files: characters with every escape, words, and the demo's."""
    d = os.path.join(out, "vocab")
    os.makedirs(d, exist_ok=True)
    files = {"chars.txt": "a\nb\n\\n\\s\n\\t\n\\\\\nz\n",
             "words.txt": "hello\nworld\n<eos>\nit\\ss\n"}
    for name, text in files.items():
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write(text)
    shutil.copy(os.path.join(ROOT, "src", "grulite", "data", "zen_vocab.txt"), d)
    return len(files) + 1


def safetensors_bytes(sd, kind="F32", meta=None):
    header, blobs, pos = {}, [], 0
    for name, a in sd.items():
        if kind == "F16":
            raw = a.astype("<f2").tobytes()
        elif kind == "BF16":
            raw = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        elif kind == "F64":
            raw = a.astype("<f8").tobytes()
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": kind, "shape": list(a.shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def seeds_safetensors(out):
    n = 0
    for k, (I, H, L, bd, bias, prefix, head) in enumerate(SD_CONFIGS):
        sd = state_dict(np.random.default_rng(200 + k), I, H, L, bd, bias, prefix, head)
        for kind in ("F32", "F16", "BF16", "F64")[: 4 if k < 2 else 1]:
            write(os.path.join(out, "safetensors", f"sd{k}_{kind}.safetensors"),
                  safetensors_bytes(sd, kind, {"format": "pt"} if k == 0 else None))
            n += 1
    for p in glob.glob(os.path.join(FIX, "torchfile", "*.safetensors")):
        shutil.copy(p, os.path.join(out, "safetensors", os.path.basename(p)))
        n += 1
    return n


def seeds_pt(out):
    os.makedirs(os.path.join(out, "pt"), exist_ok=True)
    n = 0
    for p in glob.glob(os.path.join(FIX, "torchfile", "*.pt")):
        if os.path.getsize(p) <= 64 * 1024:
            shutil.copy(p, os.path.join(out, "pt", os.path.basename(p)))
            n += 1
    try:
        import torch
    except ImportError:
        return n
    for k, (I, H, L, bd, bias, prefix, head) in enumerate(SD_CONFIGS[:3]):
        sd = state_dict(np.random.default_rng(300 + k), I, H, L, bd, bias, prefix, head)
        tsd = {key: torch.from_numpy(v) for key, v in sd.items()}
        torch.save(tsd, os.path.join(out, "pt", f"sd{k}.pt"))
        torch.save({"model": tsd, "epoch": 3, "lr": 0.1}, os.path.join(out, "pt", f"ckpt{k}.pt"))
        torch.save({key: v.half() for key, v in tsd.items()}, os.path.join(out, "pt", f"half{k}.pt"))
        n += 3
    return n


def seeds_copy(out, target, pattern, limit=16 * 1024):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    n = 0
    for p in sorted(glob.glob(os.path.join(FIX, *pattern))):
        if os.path.getsize(p) <= limit:
            shutil.copy(p, os.path.join(out, target, os.path.basename(p)))
            n += 1
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="directory to fill (one subdirectory per target)")
    args = ap.parse_args(argv)
    counts = {
        "load/forward": seeds_grl(args.out),
        "npz": seeds_npz(args.out),
        "safetensors": seeds_safetensors(args.out),
        "pt": seeds_pt(args.out),
        "onnx": seeds_copy(args.out, "onnx", ("onnx", "*.onnx"))
        + seeds_copy(args.out, "onnx", ("variants", "*.onnx")),     # activations, clip
        "keras": seeds_copy(args.out, "keras", ("keras", "*.keras"))
        + seeds_copy(args.out, "keras", ("keras_variants", "*.keras")),  # activations, Masking
        "vocab": seeds_vocab(args.out),
    }
    print("seeds: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
