#!/usr/bin/env python3
"""Generate the Keras variant fixtures (tests/fixtures/keras_variants/): GRU
activations other than sigmoid / tanh, Keras 2's hard_sigmoid, Masking and
Bidirectional's merge modes.

Re-run from the repository root (needs keras 3 and h5py; any backend, we use
torch==2.13.0):

    KERAS_BACKEND=torch python3 tools/make_keras_variant_fixtures.py          # rewrite
    KERAS_BACKEND=torch python3 tools/make_keras_variant_fixtures.py --check  # compare

As in tools/make_keras_fixtures.py (whose ``repack`` this reuses), each case
of ``CASES`` is built, given seeded random weights, saved as
``<case>.keras`` (members deflated) and run; ``expected.npz`` holds per case

    <case>/x        the input (B, T, I), float32
    <case>/out<i>   Keras' outputs, ``model.predict(x)``
    <case>/params   ``model.count_params()``
    <case>/lengths  for a case with Masking: each row's valid steps (the
                    steps after them hold the mask value)

A case is a dict: ``build(keras, keras.layers) -> model``; ``read`` (how each
Keras output is read from the grulite model, the vocabulary of
make_keras_fixtures: y, y_rev, h:i, h:l:d, predict, predict_all, ...;
last_sum / last_mul / last_ave: a merged Bidirectional's last output);
optionally ``scale`` (std of the random weights; the unbounded activations
need small ones over deep stacks), ``mask`` (the Masking value and the
rows' lengths: the padded steps of x are set to it), ``keras_version``
(metadata.json is rewritten to claim it) and ``prefixes`` (a Sequential
stack whose every layer's output is kept too, as ``<case>/layer<k>``: the
test imports the stack cut after layer k, so that a wrong function deep in
the stack shows at once rather than faded at its top).

A case claiming Keras 2 is run with Keras 2's hard_sigmoid, clip(0.2 x +
0.5, 0, 1), in place of Keras 3's (x / 6 + 0.5): what that archive
computes in the Keras that wrote it.  (grulite reads .keras archives only;
a legacy .h5 file is refused whichever Keras wrote it.)
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import tempfile
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "keras_variants")
EXPECTED = "expected.npz"
I, T, B = 4, 8, 3            # input features, steps, batch of every case

# Every Keras activation grulite maps onto its GRU functions.
ACTS = ["tanh", "sigmoid", "relu", "linear", "hard_sigmoid", "elu", "celu", "softsign",
        "softplus", "leaky_relu", "sparse_sigmoid"]


@functools.cache
def _base_tool():
    spec = importlib.util.spec_from_file_location(
        "grulite_tool_make_keras_fixtures", os.path.join(ROOT, "tools", "make_keras_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _seq(k, *layers):
    return k.Sequential([k.Input((None, I))] + list(layers))


def _fn(k, make):
    inp = k.Input((None, I), name="x")
    return k.Model(inp, make(inp))


def _rotation(L, shift: int, units: int, reset_after: bool, last_seq: bool) -> list:
    """One GRU per activation: layer i has f = ACTS[i], g = ACTS[i + shift],
    so every name is f once and g once."""
    n = len(ACTS)
    return [L.GRU(units, recurrent_activation=ACTS[i], activation=ACTS[(i + shift) % n],
                  reset_after=reset_after, return_sequences=last_seq or i < n - 1)
            for i in range(n)]


def _go_backwards_pair(k, L):
    def make(x):
        h = L.GRU(5, go_backwards=True, return_sequences=True, reset_after=False,
                  recurrent_activation="hard_sigmoid", activation="softplus")(x)
        return L.GRU(4, recurrent_activation="celu", activation="linear", return_sequences=True,
                     return_state=True)(h)
    return _fn(k, make)


CASES = {
    # activations: every name as f and as g, reset_after True and False
    "acts_after": dict(
        build=lambda k, L: _seq(k, *_rotation(L, 1, 4, True, True)),
        read=["y"], scale=0.3, prefixes=True),
    "acts_before": dict(
        build=lambda k, L: _seq(k, *_rotation(L, 6, 3, False, False)),
        read=["h:10"], scale=0.3, prefixes=True),
    # Bidirectional, the backward layer with activations of its own
    "acts_bidir": dict(
        build=lambda k, L: _seq(
            k, L.Bidirectional(L.GRU(4, return_sequences=True, recurrent_activation="hard_sigmoid",
                                     activation="relu")),
            L.Bidirectional(L.GRU(3, return_sequences=True, reset_after=False,
                                  recurrent_activation="softsign", activation="elu"),
                            backward_layer=L.GRU(3, return_sequences=True, go_backwards=True,
                                                 reset_after=False,
                                                 recurrent_activation="sparse_sigmoid",
                                                 activation="leaky_relu"))),
        read=["y"]),
    # go_backwards (the layer after it runs backwards in grulite's terms)
    "acts_go_backwards": dict(build=_go_backwards_pair, read=["y_rev", "h:1:0"], scale=0.4),
    # RNN(GRUCell) and a head
    "acts_cell_head": dict(
        build=lambda k, L: _seq(k, L.RNN(L.GRUCell(5, recurrent_activation="linear",
                                                   activation="softsign")),
                                L.Dense(3, activation="softmax")),
        read=["predict"], scale=0.4),
    # an archive that says Keras 2 wrote it: hard_sigmoid is clip(0.2 x + 0.5, 0, 1)
    "keras2_hard_sigmoid": dict(
        build=lambda k, L: _seq(k, L.GRU(5, return_sequences=True, recurrent_activation="hard_sigmoid"),
                                L.GRU(4, return_sequences=True, reset_after=False,
                                      activation="hard_sigmoid")),
        read=["y"], keras_version="2.15.0"),
    # Masking: trailing padding
    "mask_seq": dict(
        build=lambda k, L: _fn(k, lambda x: L.GRU(6, return_sequences=True, return_state=True)(
            L.Masking(0.0)(x))),
        read=["y", "h:0"], mask=(0.0, (8, 5, 2))),
    "mask_stack_head": dict(
        build=lambda k, L: _seq(k, L.Masking(-1.0), L.GRU(5, return_sequences=True, reset_after=False),
                                L.Dropout(0.1), L.GRU(4), L.Dense(3, activation="softmax")),
        read=["predict"], mask=(-1.0, (3, 8, 6))),
    "mask_bidir": dict(
        build=lambda k, L: _seq(k, L.Masking(0.0),
                                L.Bidirectional(L.GRU(4, return_sequences=True, activation="softsign"))),
        read=["y"], mask=(0.0, (6, 1, 8))),
    "mask_go_backwards_head": dict(
        build=lambda k, L: _seq(k, L.Masking(9.0), L.GRU(5, go_backwards=True), L.Dense(2)),
        read=["predict"], mask=(9.0, (5, 8, 2))),
    "mask_go_backwards_seq": dict(
        build=lambda k, L: _seq(k, L.Masking(0.0), L.GRU(4, go_backwards=True, return_sequences=True,
                                                         recurrent_activation="hard_sigmoid")),
        read=["y_rev"], mask=(0.0, (7, 2, 8))),
    "mask_per_step": dict(
        build=lambda k, L: _seq(k, L.Masking(0.0), L.GRU(5, return_sequences=True),
                                L.TimeDistributed(L.Dense(2))),
        read=["predict_all"], mask=(0.0, (4, 8, 1))),
    # Bidirectional merge modes: summed into the next layer, multiplied before a
    # head (which reads the merged final states), averaged sequences, the
    # merged last output without a head, and with Masking
    "merge_sum_mul_head": dict(
        build=lambda k, L: _seq(k, L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum"),
                                L.Bidirectional(L.GRU(3, reset_after=False, activation="relu"),
                                                merge_mode="mul"),
                                L.Dense(3, activation="softmax")),
        read=["predict"]),
    "merge_ave_seq": dict(
        build=lambda k, L: _seq(k, L.Bidirectional(L.GRU(5, return_sequences=True,
                                                         recurrent_activation="hard_sigmoid"),
                                                   merge_mode="ave")),
        read=["y"]),
    "merge_mul_last": dict(
        build=lambda k, L: _seq(k, L.Bidirectional(L.GRU(4), merge_mode="mul")),
        read=["last_mul"]),
    "mask_merge_sum": dict(
        build=lambda k, L: _seq(k, L.Masking(0.0),
                                L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")),
        read=["y"], mask=(0.0, (6, 2, 8))),
}


def build(keras, name: str, seed: int):
    """The Keras model of case `name` with seeded random weights (biases too)."""
    keras.utils.set_random_seed(seed)
    model = CASES[name]["build"](keras, keras.layers)
    rng = np.random.default_rng(seed)
    scale = CASES[name].get("scale", 0.5)
    for w in model.weights:
        w.assign(rng.normal(0.0, scale, size=tuple(w.shape)).astype("float32"))
    return model


def case_input(name: str, seed: int) -> tuple:
    """(x, lengths or None): x (B, T, I) with the padded steps of a Masking
    case set to its mask value."""
    x = np.random.default_rng(1000 + seed).standard_normal((B, T, I)).astype(np.float32)
    mask = CASES[name].get("mask")
    if mask is None:
        return x, None
    value, lengths = mask
    for b, n in enumerate(lengths):
        x[b, n:] = value
    return x, np.array(lengths, dtype=np.int64)


def keras2_hard_sigmoid(x):
    """Keras 2's hard_sigmoid (tf.keras backend): clip(0.2 x + 0.5, 0, 1)."""
    from keras import ops

    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def _cells(layer) -> list:
    out = []
    for sub in (getattr(layer, "forward_layer", None), getattr(layer, "backward_layer", None)):
        if sub is not None:
            out += _cells(sub)
    cell = getattr(layer, "cell", None)
    if cell is not None:
        out.append(cell)
    return out


def keras_outputs(keras, model, x, keras_version=None) -> list:
    """model.predict(x), with Keras 2's hard_sigmoid for a case claiming Keras 2."""
    swapped = []
    if keras_version is not None and int(str(keras_version).split(".")[0]) < 3:
        for layer in model.layers:
            for cell in _cells(layer):
                for attr in ("activation", "recurrent_activation"):
                    if getattr(cell, attr) is keras.activations.hard_sigmoid:
                        swapped.append((cell, attr))
                        setattr(cell, attr, keras2_hard_sigmoid)
        if not swapped:
            raise SystemExit(f"a case claiming keras {keras_version} has no hard_sigmoid to swap")
    try:
        out = model.predict(x, verbose=0)
    finally:
        for cell, attr in swapped:
            setattr(cell, attr, keras.activations.hard_sigmoid)
    return [np.asarray(o, dtype=np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]


def layer_outputs(keras, model, x) -> list:
    """The output of every layer of a Sequential stack, in order."""
    sub = keras.Model(model.inputs, [layer.output for layer in model.layers])
    return [np.asarray(o, dtype=np.float32) for o in sub.predict(x, verbose=0)]


def claim_version(path: str, version: str) -> None:
    """Rewrites metadata.json of the archive at `path` to say `version` wrote it."""
    with zipfile.ZipFile(path) as z:
        files = [(info, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for info, data in files:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta["keras_version"] = version
                data = json.dumps(meta).encode("utf-8")
            z.writestr(info, data, compresslevel=9)


def save_case(keras, model, name: str, dst: str) -> None:
    """Saves `model` as case `name` at dst (deflated; metadata as the case says)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.keras")
        model.save(raw)
        _base_tool().repack(raw, dst)
    if CASES[name].get("keras_version"):
        claim_version(dst, CASES[name]["keras_version"])


def make_case(keras, name: str, seed: int, out_dir: str) -> dict:
    """Builds, saves (out_dir/<name>.keras) and runs one case; returns its
    expected arrays."""
    case = CASES[name]
    model = build(keras, name, seed)
    x, lengths = case_input(name, seed)
    outs = keras_outputs(keras, model, x, case.get("keras_version"))
    if len(outs) != len(case["read"]):
        raise SystemExit(f"{name}: {len(outs)} Keras outputs but read lists {len(case['read'])}")
    dst = os.path.join(out_dir, f"{name}.keras")
    save_case(keras, model, name, dst)
    again = keras_outputs(keras, keras.saving.load_model(dst), x)
    for a, b in zip(keras_outputs(keras, model, x), again):
        if not np.array_equal(a, b):
            raise SystemExit(f"{name}: the saved archive gives different outputs")
    arrays = {f"{name}/x": x, f"{name}/params": np.array(model.count_params())}
    if case.get("prefixes"):
        for k, out in enumerate(layer_outputs(keras, model, x)):
            arrays[f"{name}/layer{k}"] = out
    if lengths is not None:
        arrays[f"{name}/lengths"] = lengths
    for i, o in enumerate(outs):
        arrays[f"{name}/out{i}"] = o
    return arrays


def main(argv=None) -> int:
    return _base_tool().fixture_main(argv, __doc__, CASES, make_case, FIXTURE_DIR, EXPECTED)


if __name__ == "__main__":
    sys.exit(main())
