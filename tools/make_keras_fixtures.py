#!/usr/bin/env python3
"""Generate the Keras import fixtures (tests/fixtures/keras/).

Re-run from the repository root (needs keras 3 and h5py; any backend, we use
torch==2.13.0):

    KERAS_BACKEND=torch python3 tools/make_keras_fixtures.py          # rewrite
    KERAS_BACKEND=torch python3 tools/make_keras_fixtures.py --check  # compare

For each case in ``CASES`` a Keras model is built, its weights (biases
included: Keras initializes those to zero) are set to seeded random values,
and it is saved with ``model.save("<case>.keras")``.  The archive is then
re-packed with deflate compression (same members, byte-identical contents;
Keras writes them uncompressed, ~10x larger) and reloaded with
``keras.saving.load_model`` to check that it still gives the same outputs.
``expected.npz`` holds, per case:

    <case>/x        the input (B, T, I), float32 (Keras is batch-first)
    <case>/out<i>   Keras' outputs, ``model.predict(x)`` (one per model output)
    <case>/params   ``model.count_params()``

``CASES`` (also imported by tests/test_keras.py for the live tests) gives for
each case a builder ``build(keras, keras.layers) -> model`` and ``read``: how each Keras
output is read from the grulite model, in a small vocabulary that the test
interprets:

    y                 y of ``model(x)``
    y_rev             y[:, ::-1]  (Keras returns go_backwards sequences in
                      processing order, i.e. reversed in time)
    h:i / h:l:d       h_n[i] (one array) / h_n[l][d] (per-layer tuple)
    hcat:i:j          concatenate([h_n[i], h_n[j]], -1)  (Bidirectional last)
    predict           model.predict(x)
    predict_all       model.predict(x, all_steps=True)  (Dense on sequences)
    predict_all_rev   the same, reversed in time
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "keras")
EXPECTED = "expected.npz"
I, T, B = 5, 9, 3            # input features, steps, batch of every case


def _seq(k, *layers):
    return k.Sequential([k.Input((None, I))] + list(layers))


def _fn(k, make):
    """A functional model: make(input tensor) -> output tensor(s)."""
    inp = k.Input((None, I), name="x")
    return k.Model(inp, make(inp))


CASES = {
    # GRU alone, outputs and state
    "gru_reset_after": dict(
        build=lambda k, L: _fn(k, lambda x: L.GRU(7, return_sequences=True, return_state=True)(x)),
        read=["y", "h:0"]),
    "gru_reset_before": dict(
        build=lambda k, L: _fn(k, lambda x: L.GRU(13, return_sequences=True, return_state=True,
                                               reset_after=False)(x)),
        read=["y", "h:0"]),
    "gru_go_backwards": dict(
        build=lambda k, L: _fn(k, lambda x: L.GRU(6, return_sequences=True, return_state=True,
                                               go_backwards=True)(x)),
        read=["y_rev", "h:0"]),
    "gru_go_backwards_last": dict(
        build=lambda k, L: _seq(k, L.GRU(5, go_backwards=True, reset_after=False)),
        read=["h:0"]),
    "gru_no_bias": dict(
        build=lambda k, L: _fn(k, lambda x: L.GRU(8, use_bias=False, return_sequences=True,
                                               reset_after=False, return_state=True)(
            L.GRU(8, use_bias=False, return_sequences=True)(x))),
        read=["y", "h:1"]),
    "rnn_gru_cell": dict(
        build=lambda k, L: _seq(k, L.RNN(L.GRUCell(9, reset_after=False), return_sequences=True,
                                      go_backwards=True)),
        read=["y_rev"]),
    # stacks and time order
    "stack_backwards_even": dict(
        build=lambda k, L: _seq(k, L.GRU(6, return_sequences=True, go_backwards=True),
                             L.GRU(6, return_sequences=True, go_backwards=True)),
        read=["y"]),
    "stack_backwards_odd": dict(
        build=lambda k, L: _seq(k, L.GRU(6, return_sequences=True),
                             L.GRU(4, return_sequences=True, go_backwards=True),
                             L.GRU(5, return_sequences=True, reset_after=False)),
        read=["y_rev"]),
    # Bidirectional (merge_mode="concat")
    "bidir_seq": dict(
        build=lambda k, L: _seq(k, L.Bidirectional(L.GRU(7, return_sequences=True))),
        read=["y"]),
    "bidir_last": dict(
        build=lambda k, L: _seq(k, L.Bidirectional(L.GRU(6, reset_after=False))),
        read=["hcat:0:1"]),
    "bidir_state": dict(
        build=lambda k, L: _fn(k, lambda x: L.Bidirectional(
            L.GRU(5, return_sequences=True, return_state=True))(x)),
        read=["y", "h:0", "h:1"]),
    # Dense heads
    "stack_units_head": dict(
        build=lambda k, L: _seq(k, L.GRU(16, return_sequences=True, reset_after=False),
                             L.Bidirectional(L.GRU(7, return_sequences=True)),
                             L.GRU(11, use_bias=False),
                             L.Dense(9, activation="relu"), L.Dense(4, activation="softmax")),
        read=["predict"]),
    "head_activations": dict(
        build=lambda k, L: _seq(k, L.GRU(8, return_sequences=True), L.GRU(8),
                             L.Dense(6, activation="tanh"), L.Dense(5, activation="sigmoid"),
                             L.Dense(3, activation="linear", use_bias=False)),
        read=["predict"]),
    "head_activation_layers": dict(
        build=lambda k, L: _seq(k, L.GRU(10), L.Dropout(0.3), L.Dense(6), L.ReLU(),
                             L.Dense(3), L.Softmax()),
        read=["predict"]),
    "head_backwards_even": dict(
        build=lambda k, L: _seq(k, L.GRU(6, return_sequences=True, go_backwards=True),
                             L.GRU(5, go_backwards=True), L.Dense(2)),
        read=["predict"]),
    "head_per_step": dict(
        build=lambda k, L: _seq(k, L.GRU(8, return_sequences=True),
                             L.Dense(4, activation="softmax")),
        read=["predict_all"]),
    "head_per_step_backwards": dict(
        build=lambda k, L: _seq(k, L.GRU(8, return_sequences=True, go_backwards=True),
                             L.TimeDistributed(L.Dense(3)), L.Activation("sigmoid")),
        read=["predict_all_rev"]),
    "functional_chain_head": dict(
        build=lambda k, L: _fn(k, lambda x: L.Dense(1, activation="sigmoid")(
            L.GRU(6, reset_after=False)(L.Dropout(0.2)(L.GRU(6, return_sequences=True)(x))))),
        read=["predict"]),
}


def build(keras, name: str, seed: int):
    """The Keras model of case `name` with seeded random weights (biases too)."""
    keras.utils.set_random_seed(seed)
    model = CASES[name]["build"](keras, keras.layers)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.5, size=tuple(w.shape)).astype("float32"))
    return model


def case_input(seed: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).standard_normal((B, T, I)).astype(np.float32)


def keras_outputs(model, x) -> list:
    out = model.predict(x, verbose=0)
    return [np.asarray(o, dtype=np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]


def repack(src: str, dst: str) -> None:
    """The archive at `src`, members deflated, written to `dst` (fixed dates)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED,
                                                      compresslevel=9) as zout:
        for info in zin.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, zin.read(info.filename), compresslevel=9)


def make_case(keras, name: str, seed: int, out_dir: str) -> dict:
    """Builds, saves (repacked to out_dir/<name>.keras) and runs one case;
    returns its expected arrays."""
    model = build(keras, name, seed)
    x = case_input(seed)
    outs = keras_outputs(model, x)
    if len(outs) != len(CASES[name]["read"]):
        raise SystemExit(f"{name}: {len(outs)} Keras outputs but read lists "
                         f"{len(CASES[name]['read'])}")
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.keras")
        model.save(raw)
        dst = os.path.join(out_dir, f"{name}.keras")
        repack(raw, dst)
    again = keras_outputs(keras.saving.load_model(dst), x)
    for a, b in zip(outs, again):
        if not np.array_equal(a, b):
            raise SystemExit(f"{name}: the repacked archive gives different outputs")
    arrays = {f"{name}/x": x, f"{name}/params": np.array(model.count_params())}
    for i, o in enumerate(outs):
        arrays[f"{name}/out{i}"] = o
    return arrays


def fixture_main(argv, doc: str, cases: dict, make_case, fixture_dir: str, expected: str) -> int:
    """The command line of a Keras fixture tool (this one and
    make_keras_variant_fixtures.py): write every case of `cases` with
    ``make_case(keras, name, seed, out_dir) -> arrays`` and the arrays to
    ``expected``, or (--check) regenerate in a temporary directory and
    compare."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate in a temporary directory and compare the outputs")
    ap.add_argument("--out", default=fixture_dir)
    a = ap.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            arrays = {}
            for seed, name in enumerate(cases):
                arrays.update(make_case(keras, name, seed, tmp))
        with np.load(os.path.join(fixture_dir, expected)) as ref:
            bad = [k for k in arrays if k not in ref.files or not np.allclose(ref[k], arrays[k],
                                                                               atol=1e-6)]
        print("fixtures match" if not bad else f"differ: {', '.join(bad)}")
        return 1 if bad else 0
    out_dir = a.out
    os.makedirs(out_dir, exist_ok=True)
    arrays = {}
    for seed, name in enumerate(cases):
        arrays.update(make_case(keras, name, seed, out_dir))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with open(os.path.join(out_dir, expected), "wb") as f:
        f.write(buf.getvalue())
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"wrote {len(cases)} cases to {os.path.relpath(out_dir, ROOT)} ({total:,} bytes, "
          f"keras {keras.__version__}, backend {keras.backend.backend()})")
    return 0


def main(argv=None) -> int:
    return fixture_main(argv, __doc__, CASES, make_case, FIXTURE_DIR, EXPECTED)


if __name__ == "__main__":
    sys.exit(main())
