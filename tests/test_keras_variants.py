"""grulite.from_keras on Keras' GRU variants: gate / candidate activations
other than sigmoid / tanh, Keras 2's hard_sigmoid, Masking, and
Bidirectional's merge modes sum / mul / ave.

Keras is the judge.  Reference outputs come from the committed fixtures in
tests/fixtures/keras_variants/ (``<case>.keras`` and ``expected.npz``, made
by tools/make_keras_variant_fixtures.py; these tests need h5py only) and,
when keras imports (KERAS_BACKEND=torch), from live Keras: every case
rebuilt with fresh weights, plus refusals of real Keras-made archives.

Tolerance: max |grulite - keras| / max(1, |keras|) <= 2e-5.  A masked row's
outputs past its last valid step are 0 in grulite where Keras repeats the
last output (a Bidirectional layer gives 0 there too): for sequences only
the valid steps are compared; final states and head outputs in full.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile

import numpy as np
import pytest

import grulite
from conftest import ROOT, load_tool, record_error
from grulite import from_keras
from grulite.importers import _keras
from grulite.importers._keras import image as image_from_keras
from support.files import rewrite_keras

h5py = pytest.importorskip("h5py")

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

TOL = 2e-5
DIR = os.path.join(ROOT, "tests", "fixtures", "keras_variants")
BASE_DIR = os.path.join(ROOT, "tests", "fixtures", "keras")

tool = load_tool("make_keras_variant_fixtures")
CASES = list(tool.CASES)
MASK_CASES = [n for n in CASES if tool.CASES[n].get("mask")]

# grulite's function for each Keras activation (Keras 3)
MAPPED = {"tanh": ("tanh", 0.0, 0.0), "sigmoid": ("sigmoid", 0.0, 0.0), "relu": ("relu", 0.0, 0.0),
          "linear": ("affine", 1.0, 0.0), "hard_sigmoid": ("hard_sigmoid", 1 / 6, 0.5),
          "elu": ("elu", 1.0, 0.0), "celu": ("elu", 1.0, 0.0), "softsign": ("softsign", 0.0, 0.0),
          "softplus": ("softplus", 0.0, 0.0), "leaky_relu": ("leaky_relu", 0.2, 0.0),
          "sparse_sigmoid": ("hard_sigmoid", 0.5, 0.5)}
REFUSED = ["gelu", "swish", "silu", "selu", "relu6", "exponential", "mish", "hard_silu",
           "hard_tanh", "softmax", "log_sigmoid", "tanh_shrink"]


def _fixture(name: str) -> str:
    return os.path.join(DIR, f"{name}.keras")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(DIR, tool.EXPECTED)) as f:
        return {k: f[k] for k in f.files}


def _outs(expected: dict, name: str) -> list:
    return [expected[f"{name}/out{i}"] for i in range(len(tool.CASES[name]["read"]))]


def read_output(model: grulite.Model, x: np.ndarray, how: str) -> np.ndarray:
    """One Keras output, computed by the grulite model (the tools' vocabulary)."""
    kind, _, rest = how.partition(":")
    if kind.startswith("predict"):
        out = model.predict(x, all_steps=kind != "predict")
        return out[:, ::-1] if kind.endswith("_rev") else out
    y, h_n = model(x)
    if kind in ("y", "y_rev"):
        return y if kind == "y" else y[:, ::-1]
    if kind.startswith("last_"):               # a merged Bidirectional's last output
        f, b = h_n[-2], h_n[-1]
        op = kind[5:]
        return f + b if op == "sum" else f * b if op == "mul" else (f + b) / 2
    idx = [int(i) for i in rest.split(":")]
    if kind == "h":
        return h_n[idx[0]] if len(idx) == 1 else h_n[idx[0]][idx[1]]
    raise AssertionError(f"unknown read spec {how!r}")


def valid_steps(how: str, lengths, T: int) -> np.ndarray:
    """(B, T) True at the steps of a Keras sequence output that belong to a
    row's valid steps (a reversed output keeps them at its end)."""
    t = np.arange(T)[None]
    n = np.asarray(lengths)[:, None]
    return t >= T - n if how.endswith("_rev") else t < n


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float((np.abs(got - ref) / np.maximum(1.0, np.abs(ref))).max()) if ref.size else 0.0


def check_case(model, x, expected: list, reads: list, lengths, where: str) -> None:
    assert len(expected) == len(reads)
    for i, (ref, how) in enumerate(zip(expected, reads)):
        got = read_output(model, x, how)
        assert got.shape == ref.shape, f"{where} output {i} ({how}): {got.shape} vs {ref.shape}"
        if lengths is not None and ref.ndim == 3:
            keep = valid_steps(how, lengths, ref.shape[1])
            got, ref = got[keep], ref[keep]
        err = record_error("keras variants (relative)", rel_err(got, ref), f"{where} {how}")
        assert err <= TOL, f"{where} output {i} ({how}): max relative error {err:.3e}"


_rewrite = rewrite_keras


def _layers(cfg: dict) -> list:
    return cfg["config"]["layers"]


def _claim(src: str, dst, version) -> str:
    with zipfile.ZipFile(src) as z:
        meta = json.loads(z.read("metadata.json"))
    meta["keras_version"] = version
    return _rewrite(src, dst, members={"metadata.json": json.dumps(meta).encode()})


# ---------------------------------------------------------------------------
# committed fixtures (h5py only)


@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_keras(name, expected):
    model = from_keras(_fixture(name))
    check_case(model, expected[f"{name}/x"], _outs(expected, name), tool.CASES[name]["read"],
               expected.get(f"{name}/lengths"), name)


@pytest.mark.parametrize("name", CASES)
def test_fixture_summary(name, expected):
    image, summary = image_from_keras(_fixture(name))
    assert summary["parameters"] == int(expected[f"{name}/params"])
    m = grulite.from_bytes(image)
    mask = tool.CASES[name].get("mask")
    if mask is None:
        assert summary["mask_value"] is None and m.mask_value is None
        assert "mask_value" not in m.metadata
        assert m.mask_lengths(expected[f"{name}/x"]) is None
    else:
        assert summary["mask_value"] == m.mask_value == m.metadata["mask_value"] == mask[0]
        np.testing.assert_array_equal(m.mask_lengths(expected[f"{name}/x"]), mask[1])
    assert all(l.clip is None for l in m.config.layers)


def check_every_layer(path: str, x, refs: list, tmp_path, where: str) -> None:
    """Each layer of a Sequential stack against Keras' output of that layer
    (refs[k]): the stack cut after layer k, imported."""
    for k, ref in enumerate(refs):
        p = _rewrite(path, tmp_path / f"cut{k}.keras",
                     lambda cfg, k=k: cfg["config"].__setitem__("layers", _layers(cfg)[:k + 2]))
        y, h_n = from_keras(p)(x)
        got = y if ref.ndim == 3 else h_n[k]
        err = record_error("keras variants (relative)", rel_err(got, ref), f"{where} layer {k}")
        assert err <= TOL, f"{where} layer {k} (f={tool.ACTS[k]}): max relative error {err:.3e}"


@pytest.mark.parametrize("name", [n for n in CASES if tool.CASES[n].get("prefixes")])
def test_fixture_every_layer(name, expected, tmp_path):
    """Each layer of a rotation stack (every activation as f and as g): a
    wrong function deep in the stack hardly shows at its top."""
    refs = [expected[f"{name}/layer{k}"] for k in range(len(tool.ACTS))]
    check_every_layer(_fixture(name), expected[f"{name}/x"], refs, tmp_path, name)


def _close(got, want) -> bool:
    return got[0] == want[0] and math.isclose(got[1], want[1], rel_tol=1e-6) and \
        math.isclose(got[2], want[2], rel_tol=1e-6)


def test_activations_in_config():
    """Each layer reports the functions its Keras activations map onto."""
    n = len(tool.ACTS)
    for name, shift in (("acts_after", 1), ("acts_before", 6)):
        m = from_keras(_fixture(name))
        assert [l.reset_after for l in m.config.layers] == [name == "acts_after"] * n
        for i, lay in enumerate(m.config.layers):
            want = (MAPPED[tool.ACTS[i]], MAPPED[tool.ACTS[(i + shift) % n]])
            if want == (MAPPED["sigmoid"], MAPPED["tanh"]):
                assert lay.activations is None
                continue
            (f, g), = lay.activations
            assert _close(f, want[0]) and _close(g, want[1]), (name, i, lay.activations)
    # every name is f once and g once in each rotation
    assert sorted(tool.ACTS) == sorted(MAPPED)
    m = from_keras(_fixture("acts_bidir"))
    fwd, bwd = m.config.layers[1].activations        # the backward layer has its own
    assert _close(fwd[0], MAPPED["softsign"]) and _close(fwd[1], MAPPED["elu"])
    assert _close(bwd[0], MAPPED["sparse_sigmoid"]) and _close(bwd[1], MAPPED["leaky_relu"])
    assert m.config.layers[0].activations[0] == m.config.layers[0].activations[1]
    m = from_keras(_fixture("acts_go_backwards"))
    assert [l.reverse for l in m.config.layers] == [True, True]
    assert m.metadata["keras"]["time_reversed"] is True
    default = from_keras(os.path.join(BASE_DIR, "gru_reset_after.keras"))
    assert default.config.layers[0].activations is None


def test_keras2_hard_sigmoid(tmp_path, expected):
    """An archive that says Keras 2 wrote it: hard_sigmoid is clip(0.2 x + 0.5,
    0, 1), what Keras 2 computes; the same archive claiming Keras 3 maps to
    x / 6 + 0.5 (and does not match Keras 2's outputs)."""
    name = "keras2_hard_sigmoid"
    m = from_keras(_fixture(name))
    assert m.metadata["keras"]["version"].startswith("2.")
    (f0, _), = m.config.layers[0].activations
    (_, g1), = m.config.layers[1].activations
    assert _close(f0, ("hard_sigmoid", 0.2, 0.5)) and _close(g1, ("hard_sigmoid", 0.2, 0.5))
    m3 = from_keras(_claim(_fixture(name), tmp_path / "k3.keras", "3.15.1"))
    (f0, _), = m3.config.layers[0].activations
    assert _close(f0, ("hard_sigmoid", 1 / 6, 0.5))
    x = expected[f"{name}/x"]
    assert rel_err(m3(x)[0], expected[f"{name}/out0"]) > 1e-3
    for version in ("1.2.2", "2.13.1"):
        mv = from_keras(_claim(_fixture(name), tmp_path / "kv.keras", version))
        (f0, _), = mv.config.layers[0].activations
        assert _close(f0, ("hard_sigmoid", 0.2, 0.5)), version


def test_activation_mapping_unit():
    assert _keras.keras2("2.15.0") and _keras.keras2("1.2.2") and _keras.keras2(" 2.4")
    assert not any(_keras.keras2(v) for v in ("3.0.0", "3.15.1", "10.0", None, "", "dev"))
    for name, want in MAPPED.items():
        assert _close(_keras.gru_activation(name), want), name
    assert _keras.gru_activation("hard_sigmoid", True) == ("hard_sigmoid", 0.2, 0.5)
    assert _keras.gru_activation("elu", True) == ("elu", 1.0, 0.0)
    for name in REFUSED + ["threshold", "Tanh", "custom tanh"]:
        assert _keras.gru_activation(name) is None, name
    # every mapped function is one the C core knows, given the parameters it takes
    from grulite._activations import PARAMS, parse
    for act in list(_keras._GRU_ACTIVATIONS.values()) + list(_keras._GRU_ACTIVATIONS_KERAS2.values()):
        assert parse(act[:1 + len(PARAMS.get(act[0], ()))], "test") == act


@pytest.mark.parametrize("attr", ["recurrent_activation", "activation"])
@pytest.mark.parametrize("act", REFUSED)
def test_refuses_activation(tmp_path, attr, act):
    src = _fixture("keras2_hard_sigmoid")

    def edit(cfg):
        _layers(cfg)[2]["config"][attr] = act
    with zipfile.ZipFile(src) as z:
        layer = _layers(json.loads(z.read("config.json")))[2]["config"]["name"]
    p = _rewrite(src, tmp_path / "m.keras", edit)
    with pytest.raises(grulite.GruliteError) as e:
        from_keras(p)
    msg = str(e.value)
    assert f"layer {layer!r} (GRU)" in msg and f"{attr}={act!r} is not supported" in msg, msg
    assert "tanh, sigmoid, relu, linear, hard_sigmoid, sparse_sigmoid, elu, celu" in msg, msg


@pytest.mark.parametrize("value,match", [
    ({"module": "builtins", "class_name": "function", "config": "Custom>my_act",
      "registered_name": "function"}, "activation='Custom>my_act' is a custom function"),
    # a custom function that calls itself tanh is not Keras' tanh
    ({"module": "mypkg.acts", "class_name": "function", "config": "tanh",
      "registered_name": "mypkg>tanh"}, "activation='tanh (module mypkg.acts)' is a custom function"),
    ({"module": "keras.layers", "class_name": "ReLU", "config": {"name": "re_lu"},
      "registered_name": None}, "activation='re_lu' is a custom function"),
])
def test_refuses_custom_activation(tmp_path, value, match):
    p = _rewrite(_fixture("keras2_hard_sigmoid"), tmp_path / "m.keras",
                 lambda cfg: _layers(cfg)[1]["config"].__setitem__("activation", value))
    with pytest.raises(grulite.GruliteError, match=re.escape(match)):
        from_keras(p)


def test_builtin_activation_as_dict(tmp_path, expected):
    """Keras' own activation written in the dict form is the activation."""
    name = "keras2_hard_sigmoid"

    def edit(cfg):
        _layers(cfg)[1]["config"]["activation"] = {
            "module": "keras.activations", "class_name": "function", "config": "tanh",
            "registered_name": "tanh"}
    p = _rewrite(_fixture(name), tmp_path / "m.keras", edit)
    check_case(from_keras(p), expected[f"{name}/x"], _outs(expected, name), ["y"], None,
               "dict activation")


def test_refuses_bidirectional_backward_activation(tmp_path):
    def edit(cfg):
        _layers(cfg)[2]["config"]["backward_layer"]["config"]["recurrent_activation"] = "gelu"
    p = _rewrite(_fixture("acts_bidir"), tmp_path / "m.keras", edit)
    with pytest.raises(grulite.GruliteError,
                       match=r"\(Bidirectional\) backward layer: recurrent_activation='gelu' is "
                             "not supported"):
        from_keras(p)


# ---------------------------------------------------------------------------
# Masking


def _mask(name: str) -> tuple:
    return tool.CASES[name]["mask"]


def test_mask_padding_is_zero(expected):
    """grulite gives 0 past a row's length; Keras repeats the last output,
    except in a Bidirectional layer and a go_backwards one (its padded steps
    come first), whose padded outputs are 0 too: compared in full."""
    for name in ("mask_seq", "mask_bidir", "mask_go_backwards_seq"):
        m = from_keras(_fixture(name))
        x, lengths = expected[f"{name}/x"], expected[f"{name}/lengths"]
        y, _ = m(x)
        pad = ~valid_steps("y", lengths, x.shape[1])
        assert pad.any() and not y[pad].any()
        ref = expected[f"{name}/out0"]
        how = tool.CASES[name]["read"][0]
        if name == "mask_seq":
            assert np.abs(ref[~valid_steps(how, lengths, x.shape[1])]).min() > 0
        else:
            assert rel_err(read_output(m, x, how), ref) <= TOL


@pytest.mark.parametrize("name", MASK_CASES)
def test_mask_refuses_gap(name, expected):
    """A masked step before an unmasked one: grulite takes trailing padding
    only, and names the row and the step."""
    m = from_keras(_fixture(name))
    value, lengths = _mask(name)
    x = expected[f"{name}/x"].copy()
    b = int(np.argmax(lengths))
    x[b, 1] = value
    run = m.predict if m.config.head else m
    with pytest.raises(grulite.GruliteError,
                       match=rf"x row {b}: step 1 is masked \(each feature equals the mask value "
                             rf"{value:g}\) but step 2 after it is not; grulite takes trailing "
                             "padding only"):
        run(x)
    x = expected[f"{name}/x"].copy()
    x[b, 0] = value                       # leading padding is a gap too
    with pytest.raises(grulite.GruliteError, match=rf"x row {b}: step 0 is masked"):
        run(x)
    x = expected[f"{name}/x"].copy()
    x[b, :] = value
    with pytest.raises(grulite.GruliteError, match=rf"x row {b} is masked at every step"):
        run(x)
    # a step where only some features equal the mask value is not masked
    x = expected[f"{name}/x"].copy()
    x[b, 1, 0] = value
    run(x)


def _without_masking(src: str, dst) -> str:
    return _rewrite(src, dst, lambda cfg: cfg["config"].__setitem__(
        "layers", [l for l in _layers(cfg) if l["class_name"] != "Masking"]))


def test_mask_explicit_lengths_override(tmp_path, expected):
    name = "mask_stack_head"
    m = from_keras(_fixture(name))
    plain = from_keras(_without_masking(_fixture(name), tmp_path / "plain.keras"))
    assert plain.mask_value is None
    x, lengths = expected[f"{name}/x"], expected[f"{name}/lengths"]
    np.testing.assert_array_equal(m.predict(x), m.predict(x, lengths))
    np.testing.assert_array_equal(m.predict(x), plain.predict(x, lengths))
    full = np.full(len(lengths), x.shape[1])
    np.testing.assert_array_equal(m.predict(x, full), plain.predict(x))
    np.testing.assert_array_equal(m(x, lengths=[2, 2, 2])[0], plain(x, lengths=[2, 2, 2])[0])
    x2 = x.copy()
    x2[1, 3] = _mask(name)[0]            # a gap: refused without lengths, runs with them
    with pytest.raises(grulite.GruliteError, match="trailing padding only"):
        m.predict(x2)
    np.testing.assert_array_equal(m.predict(x2, full), plain.predict(x2))


def test_mask_layouts_and_dtypes(expected):
    name = "mask_seq"
    m = from_keras(_fixture(name))
    x, lengths = expected[f"{name}/x"], expected[f"{name}/lengths"]
    y, h = m(x)
    for b in range(len(lengths)):                        # unbatched rows
        yb, hb = m(x[b])
        assert m.mask_lengths(x[b]) == lengths[b]
        np.testing.assert_array_equal(yb, y[b])
        np.testing.assert_array_equal(hb, h[:, b])
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))      # time-major
    np.testing.assert_array_equal(m.mask_lengths(xt, batch_first=False), lengths)
    yt, ht = m(xt, batch_first=False)
    np.testing.assert_array_equal(yt.transpose(1, 0, 2), y)
    np.testing.assert_array_equal(ht, h)
    y64, _ = m(x.astype(np.float64))                     # compared in float32, as Keras does
    np.testing.assert_array_equal(y64, y)
    x1 = x.copy()
    x1[2, 2:] = np.float32(1e-8)                         # near the mask value is not masked
    assert m.mask_lengths(x1)[2] == x.shape[1]


def test_mask_kept_by_save_and_convert(tmp_path, expected):
    name = "mask_go_backwards_head"
    m = from_keras(_fixture(name))
    x = expected[f"{name}/x"]
    m.save(tmp_path / "m.grl")
    for other in (grulite.load(tmp_path / "m.grl"), m.astype("float16"),
                  grulite.from_bytes(m.to_bytes()), pickle.loads(pickle.dumps(m))):
        assert other.mask_value == 9.0
        np.testing.assert_array_equal(other.mask_lengths(x), _mask(name)[1])
    np.testing.assert_array_equal(grulite.load(tmp_path / "m.grl").predict(x), m.predict(x))


def test_mask_cli_run(tmp_path, expected, capsys):
    """grulite run computes the lengths from the mask value; an error names
    the row in the whole input."""
    from grulite._cli import main

    name = "mask_stack_head"
    m = from_keras(_fixture(name))
    m.save(tmp_path / "m.grl")
    x = expected[f"{name}/x"]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npy"
    assert main(["run", str(tmp_path / "m.grl"), str(tmp_path / "x.npy"), "-o", str(out), "-q",
                 "--batch-size", "2"]) == 0
    np.testing.assert_array_equal(np.load(out), m.predict(x))
    x2 = x.copy()
    x2[2, 0] = -1.0
    np.save(tmp_path / "x2.npy", x2)
    assert main(["run", str(tmp_path / "m.grl"), str(tmp_path / "x2.npy"), "-o", str(out), "-q",
                 "--batch-size", "1"]) == 1
    assert "x row 2: step 0 is masked" in capsys.readouterr().err
    np.save(tmp_path / "len.npy", np.full(3, x.shape[1]))
    assert main(["run", str(tmp_path / "m.grl"), str(tmp_path / "x2.npy"), "-o", str(out), "-q",
                 "--lengths", str(tmp_path / "len.npy")]) == 0


def _insert_masking(index: int, value=0.0, name="masking_x"):
    def edit(cfg):
        _layers(cfg).insert(index, {"class_name": "Masking",
                                    "config": {"name": name, "mask_value": value}})
    return edit


@pytest.mark.parametrize("src,edit,match", [
    ("stack_backwards_odd", _insert_masking(2),
     "Masking after a GRU or Dense layer is not imported"),
    ("stack_backwards_odd", lambda cfg: (_insert_masking(1)(cfg), _insert_masking(1, 1.0, "m2")(cfg)),
     "a second Masking layer"),
    ("stack_backwards_odd", _insert_masking(1, "zero"), "mask_value='zero'; grulite imports a single"),
    ("stack_backwards_odd", _insert_masking(1, [0.0, 1.0]), r"mask_value=\[0.0, 1.0\]"),
    ("stack_backwards_odd", _insert_masking(1, True), "mask_value=True"),
    # Keras hands the layer after a go_backwards GRU the input's mask unreversed
    ("stack_backwards_odd", _insert_masking(1), "a GRU after a go_backwards GRU, with Masking"),
    ("gru_go_backwards_last", _insert_masking(1, -1.0), None),
])
def test_masking_config(tmp_path, src, edit, match):
    p = _rewrite(os.path.join(BASE_DIR, f"{src}.keras"), tmp_path / "m.keras", edit)
    if match is None:
        assert from_keras(p).mask_value == -1.0
        return
    with pytest.raises(grulite.GruliteError, match=match):
        from_keras(p)


def test_masking_zero_output_for_mask(tmp_path):
    """Keras' zero_output_for_mask=True makes the last output of a padded row
    zeros: refused for a GRU that returns its last output, fine (grulite's
    zeros) for one that returns sequences."""
    def edit(i):
        return lambda cfg: _layers(cfg)[i]["config"].__setitem__("zero_output_for_mask", True)
    p = _rewrite(_fixture("mask_stack_head"), tmp_path / "m.keras", edit(4))
    with pytest.raises(grulite.GruliteError, match="zero_output_for_mask=True with "
                                                   "return_sequences=False after Masking"):
        from_keras(p)
    assert from_keras(_rewrite(_fixture("mask_stack_head"), tmp_path / "m2.keras", edit(2))).mask_value == -1.0
    # without Masking, Keras' flag changes nothing
    p = _rewrite(os.path.join(BASE_DIR, "gru_go_backwards_last.keras"), tmp_path / "m3.keras", edit(1))
    from_keras(p)


def test_masking_nan_masks_nothing(tmp_path, expected):
    """Masking(mask_value=nan) masks no step (NaN equals nothing), in Keras
    and in grulite: no mask value is recorded."""
    name = "mask_stack_head"

    def edit(cfg):
        _layers(cfg)[1]["config"]["mask_value"] = float("nan")
    m = from_keras(_rewrite(_fixture(name), tmp_path / "m.keras", edit))
    assert m.mask_value is None and "mask_value" not in m.metadata
    x = expected[f"{name}/x"]
    np.testing.assert_array_equal(m.predict(x), m.predict(x, np.full(3, x.shape[1])))


def test_functional_mask_ops_checked(tmp_path):
    """A functional model saves Masking's mask as NotEqual / Any ops handed to
    the GRU; grulite checks they are Masking's rule."""
    src = _fixture("mask_seq")

    def set_value(v):
        def edit(cfg):
            for l in _layers(cfg):
                if l["class_name"] == "NotEqual":
                    l["inbound_nodes"][0]["args"][1] = v
        return edit

    def set_axis(cfg):
        for l in _layers(cfg):
            if l["class_name"] == "Any":
                l["config"]["axis"] = 1
    with pytest.raises(grulite.GruliteError, match="not what a Masking layer of the model does"):
        from_keras(_rewrite(src, tmp_path / "a.keras", set_value(1.0)))
    with pytest.raises(grulite.GruliteError, match="mask of a Masking layer only"):
        from_keras(_rewrite(src, tmp_path / "b.keras", set_axis))
    with pytest.raises(grulite.GruliteError, match="not on the chain"):
        from_keras(_rewrite(src, tmp_path / "c.keras", lambda cfg: cfg["config"].__setitem__(
            "layers", [l for l in _layers(cfg) if l["class_name"] != "Masking"])))
    assert from_keras(_rewrite(src, tmp_path / "d.keras", set_value(0))).mask_value == 0.0


# ---------------------------------------------------------------------------
# live Keras


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("name", CASES)
def test_live_keras(name, keras, tmp_path):
    if os.environ.get("GRULITE_SANITIZE"):
        pytest.skip("Keras rebuilds every case; under the sanitizers the fixtures run the same "
                    "importer and kernels")
    seed = 100 + CASES.index(name)
    model = tool.build(keras, name, seed)
    x, lengths = tool.case_input(name, seed)
    path = str(tmp_path / f"{name}.keras")
    tool.save_case(keras, model, name, path)
    ref = tool.keras_outputs(keras, model, x, tool.CASES[name].get("keras_version"))
    g = from_keras(path)
    check_case(g, x, ref, tool.CASES[name]["read"], lengths, f"live {name}")
    if lengths is not None:
        np.testing.assert_array_equal(g.mask_lengths(x), lengths)
    if tool.CASES[name].get("prefixes"):
        check_every_layer(path, x, tool.layer_outputs(keras, model, x), tmp_path, f"live {name}")
    _, summary = image_from_keras(path)
    assert summary["parameters"] == model.count_params()


def test_live_refusals(keras, tmp_path):
    L = keras.layers

    def seq(*layers):
        return keras.Sequential([keras.Input((6, 4))] + list(layers))

    @keras.saving.register_keras_serializable(package="grulite_test")
    def my_tanh(x):
        return keras.ops.tanh(x)

    cases = [(seq(L.GRU(3, activation=act)), f"activation={saved!r} is not supported")
             for act, saved in (("gelu", "gelu"), ("swish", "silu"), ("selu", "selu"),
                                ("mish", "mish"))]
    cases += [(seq(L.GRU(3, recurrent_activation=act)),
               f"recurrent_activation={act!r} is not supported")
              for act in ("relu6", "exponential", "hard_silu")]
    cases += [
        (seq(L.GRU(3, activation=my_tanh)), "activation='grulite_test>my_tanh' is a custom function"),
        (seq(L.Bidirectional(L.GRU(3, activation="silu"))), r"\(Bidirectional\): activation='silu'"),
        (seq(L.GRU(3, return_sequences=True), L.Masking(), L.GRU(3)), "Masking after a GRU"),
        (seq(L.Masking(), L.GRU(3, return_sequences=True, go_backwards=True), L.GRU(3)),
         "a GRU after a go_backwards GRU, with Masking"),
        (seq(L.Masking(), L.GRU(3, zero_output_for_mask=True)), "zero_output_for_mask"),
    ]
    for i, (model, match) in enumerate(cases):
        p = str(tmp_path / f"m{i}.keras")
        model.save(p)
        with pytest.raises(grulite.GruliteError, match=match):
            from_keras(p)


def test_live_functional_masking(keras, tmp_path):
    """Functional Masking -> Dropout -> GRU -> GRU -> Dense (the mask saved as
    ops, handed to each GRU)."""
    L = keras.layers
    keras.utils.set_random_seed(11)
    inp = keras.Input((None, 3))
    h = L.GRU(4, return_sequences=True, recurrent_activation="hard_sigmoid")(
        L.Dropout(0.2)(L.Masking(-2.0)(inp)))
    model = keras.Model(inp, L.Dense(2, activation="tanh")(L.GRU(5, activation="elu")(h)))
    rng = np.random.default_rng(11)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, size=tuple(w.shape)).astype("float32"))
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    lengths = [6, 1, 3, 5]
    for b, n in enumerate(lengths):
        x[b, n:] = -2.0
    p = str(tmp_path / "f.keras")
    model.save(p)
    g = from_keras(p)
    np.testing.assert_array_equal(g.mask_lengths(x), lengths)
    check_case(g, x, tool.keras_outputs(keras, model, x), ["predict"], lengths, "functional mask")
    # a padded row gives what the row alone gives, in Keras and in grulite
    alone = tool.keras_outputs(keras, model, x[1:2, :1])[0]
    assert rel_err(g.predict(x)[1:2], alone) <= TOL


def test_live_keras_loads_fixture_claiming_keras2(keras):
    """The Keras 2 fixture is a Keras 3 archive whose metadata says 2.15.0;
    Keras 3 still loads it (with its own hard_sigmoid)."""
    m = keras.saving.load_model(_fixture("keras2_hard_sigmoid"))
    assert len(m.layers) == 2
    with zipfile.ZipFile(_fixture("keras2_hard_sigmoid")) as z:
        assert json.loads(z.read("metadata.json"))["keras_version"] == "2.15.0"
