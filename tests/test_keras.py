"""grulite.from_keras: Keras 3 .keras archives (GRU layers + Dense head).

Keras is the judge.  Two sources of reference outputs:

* the committed fixtures in tests/fixtures/keras/ (``<case>.keras`` and the
  Keras outputs in ``expected.npz``, made by tools/make_keras_fixtures.py):
  these tests need h5py only;
* live Keras (KERAS_BACKEND=torch) when importable: every case of the tool is
  rebuilt with fresh random weights, saved, imported and compared, plus the
  refusals that need a real Keras-made archive.

Tolerance: 2e-5 max-abs on every output (float32 both sides; ~1e-7 seen).
"""
from __future__ import annotations

import io
import os
import sys
import zipfile

import numpy as np
import pytest

import grulite
from conftest import ROOT, load_tool, record_error
from grulite import from_keras
from grulite.importers._keras import image as image_from_keras
from support.files import rewrite_keras

h5py = pytest.importorskip("h5py")

# Keras (torch backend) under numpy 2 warns on its own __array__ calls.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

TOL = 2e-5
KERAS_DIR = os.path.join(ROOT, "tests", "fixtures", "keras")


tool = load_tool("make_keras_fixtures")
CASES = list(tool.CASES)


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def read_output(model: grulite.Model, x: np.ndarray, how: str) -> np.ndarray:
    """One Keras output, computed by the grulite model (tool's vocabulary)."""
    kind, _, rest = how.partition(":")
    if kind.startswith("predict"):
        out = model.predict(x, all_steps=kind != "predict")
        return out[:, ::-1] if kind.endswith("_rev") else out
    y, h_n = model(x)
    if kind == "y":
        return y
    if kind == "y_rev":
        return y[:, ::-1]
    idx = [int(i) for i in rest.split(":")]
    if kind == "h":
        return h_n[idx[0]] if len(idx) == 1 else h_n[idx[0]][idx[1]]
    if kind == "hcat":
        return np.concatenate([h_n[idx[0]], h_n[idx[1]]], axis=-1)
    raise AssertionError(f"unknown read spec {how!r}")


def check_case(model, x, expected: list, reads: list, where: str) -> None:
    assert len(expected) == len(reads)
    for i, (ref, how) in enumerate(zip(expected, reads)):
        got = read_output(model, x, how)
        assert got.shape == ref.shape, f"{where} output {i} ({how}): {got.shape} vs {ref.shape}"
        err = record_error("keras", np.abs(got - ref).max(), f"{where} {how}")
        assert err < TOL, f"{where} output {i} ({how}): max error {err:.3e}"


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(KERAS_DIR, tool.EXPECTED)) as f:
        return {k: f[k] for k in f.files}


def _fixture(name: str) -> str:
    return os.path.join(KERAS_DIR, f"{name}.keras")


def _outs(expected: dict, name: str) -> list:
    n = len(tool.CASES[name]["read"])
    return [expected[f"{name}/out{i}"] for i in range(n)]


# ---------------------------------------------------------------------------
# committed fixtures (h5py only)


@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_keras(name, expected):
    model = from_keras(_fixture(name))
    check_case(model, expected[f"{name}/x"], _outs(expected, name), tool.CASES[name]["read"],
               name)
    assert model.config.batch_first


@pytest.mark.parametrize("name", CASES)
def test_fixture_summary(name, expected):
    image, summary = image_from_keras(_fixture(name))
    reads = tool.CASES[name]["read"]
    assert summary["parameters"] == int(expected[f"{name}/params"])
    # Keras sequences come out reversed exactly when the top layer runs backwards
    assert summary["time_reversed"] == summary["layers"][-1]["reverse"]
    if any(r in ("y", "predict_all") for r in reads):
        assert not summary["time_reversed"]
    if any(r.endswith("_rev") for r in reads):
        assert summary["time_reversed"]
    assert summary["head_all_steps"] == any(r.startswith("predict_all") for r in reads)
    assert len(summary["outputs"]) == len(reads)
    assert summary["prefix"] == ", ".join(l["name"] for l in summary["layers"])
    m = grulite.from_bytes(image)
    # the outputs' descriptions, evaluated, give Keras' outputs
    x = expected[f"{name}/x"]
    y, h_n = m(x)
    env = dict(x=x, y=y, h_n=h_n, predict=m.predict, concatenate=np.concatenate)
    for o, ref in zip(summary["outputs"], _outs(expected, name)):
        assert np.abs(eval(o["grulite"], env) - ref).max() < TOL, o
    assert m.metadata["format"] == "keras"
    assert m.metadata["keras"]["layers"] == [l["name"] for l in summary["layers"]]
    assert len(m.config.head) == len(summary["dense"])


def test_layer_flags():
    """go_backwards parity: a layer after a go_backwards layer runs backwards."""
    m = from_keras(_fixture("stack_backwards_odd"))
    assert [l.reverse for l in m.config.layers] == [False, True, True]
    assert [l.reset_after for l in m.config.layers] == [True, True, False]
    m = from_keras(_fixture("stack_backwards_even"))
    assert [l.reverse for l in m.config.layers] == [True, False]
    m = from_keras(_fixture("stack_units_head"))
    c = m.config
    assert [l.hidden_size for l in c.layers] == [16, 7, 11]
    assert [l.bidirectional for l in c.layers] == [False, True, False]
    assert [l.bias for l in c.layers] == [True, True, False]
    assert [(d.out_features, d.activation) for d in c.head] == [(9, "relu"), (4, "softmax")]
    m = from_keras(_fixture("head_activation_layers"))
    assert [d.activation for d in m.config.head] == ["relu", "softmax"]


def test_mixed_sizes_state_tuple(expected):
    """Layers of different sizes: h0 / h_n are per-layer tuples."""
    m = from_keras(_fixture("stack_units_head"), head=False)
    x = expected["stack_units_head/x"]
    y, h_n = m(x)
    assert isinstance(h_n, tuple) and [h.shape for h in h_n] == [(1, 3, 16), (2, 3, 7), (1, 3, 11)]
    y2, _ = m(x, h0=tuple(np.zeros_like(h) for h in h_n))
    np.testing.assert_array_equal(y, y2)


def test_head_false_drops_dense(expected):
    m = from_keras(_fixture("head_activations"), head=False)
    assert not m.config.head
    _, summary = image_from_keras(_fixture("head_activations"), head=False)
    assert summary["dense"] == [] and summary["outputs"][0]["kind"] == "last"
    assert summary["parameters"] == sum(a.size for l in summary["layers"]
                                        for f in ("weight_ih", "weight_hh") for a in l[f]) + \
        sum(a.size for l in summary["layers"] for a in l["bias_ih"]) * 2


def test_weights_found_without_name_attributes(tmp_path, expected):
    """Archives whose weight groups carry no layer name (older Keras 3) are
    mapped by Keras' own group naming: snake_case class name, _1, _2, ...
    in layer order."""
    src = _fixture("stack_units_head")
    with zipfile.ZipFile(src) as z:
        buf = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(buf, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if "name" in o.attrs else None)
        for n in names:
            del f[n].attrs["name"]
    p = _rewrite(src, tmp_path / "m.keras", members={"model.weights.h5": buf.getvalue()})
    check_case(from_keras(p), expected["stack_units_head/x"], _outs(expected, "stack_units_head"),
               ["predict"], "no name attrs")


def test_legacy_inbound_nodes(tmp_path, expected):
    """Functional configs with inbound nodes in the older nested-list form."""
    def edit(cfg):
        for layer in _layers(cfg):
            nodes = layer.get("inbound_nodes") or []
            layer["inbound_nodes"] = [
                [[*arg["config"]["keras_history"], {}] for arg in node["args"]] for node in nodes]
    name = "functional_chain_head"
    p = _rewrite(_fixture(name), tmp_path / "m.keras", edit)
    check_case(from_keras(p), expected[f"{name}/x"], _outs(expected, name), ["predict"], "legacy")


def test_unzipped_directory(tmp_path, expected):
    d = tmp_path / "model.keras"
    with zipfile.ZipFile(_fixture("bidir_seq")) as z:
        z.extractall(d)
    check_case(from_keras(d), expected["bidir_seq/x"], _outs(expected, "bidir_seq"),
               ["y"], "unzipped")


@pytest.mark.parametrize("dtype,tol", [("float16", 5e-3), ("int8", 5e-2)])
def test_dtypes(dtype, tol, expected):
    m = from_keras(_fixture("stack_units_head"), dtype=dtype)
    assert m.config.dtype == dtype
    ref = expected["stack_units_head/out0"]
    err = np.abs(m.predict(expected["stack_units_head/x"]) - ref).max()
    assert err < tol


def test_save_load_roundtrip(tmp_path, expected):
    m = from_keras(_fixture("gru_go_backwards"), num_threads=1)
    m.save(tmp_path / "m.grl")
    m2 = grulite.load(tmp_path / "m.grl")
    assert m2.metadata["keras"]["time_reversed"] is True
    check_case(m2, expected["gru_go_backwards/x"], _outs(expected, "gru_go_backwards"),
               tool.CASES["gru_go_backwards"]["read"], "roundtrip")


# ---------------------------------------------------------------------------
# clear errors, from committed fixtures and hand-made archives (no keras)


_rewrite = rewrite_keras


def _layers(cfg: dict) -> list:
    return cfg["config"]["layers"]


def _gru_cfg(cfg: dict, i: int = 1) -> dict:
    return _layers(cfg)[i]["config"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        from_keras(tmp_path / "nope.keras")
    with pytest.raises(FileNotFoundError):
        image_from_keras(str(tmp_path / "nope.keras"))


def test_needs_h5py(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(grulite.GruliteError, match=r"needs h5py: pip install grulite\[keras\]"):
        from_keras(_fixture("gru_reset_after"))


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "no_config", "no_weights",
                                 "bad_json", "bad_h5", "legacy_h5", "sharded"])
def test_corrupt_archive(tmp_path, how):
    src = _fixture("gru_reset_after")
    raw = open(src, "rb").read()
    p = tmp_path / "bad.keras"
    if how == "truncated":
        p.write_bytes(raw[:len(raw) // 2])
    elif how == "garbage":
        p.write_bytes(bytes(range(256)) * 8)
    elif how == "empty":
        p.write_bytes(b"")
    elif how == "no_config":
        _rewrite(src, p, members={"config.json": None})
    elif how == "no_weights":
        _rewrite(src, p, members={"model.weights.h5": None})
    elif how == "bad_json":
        _rewrite(src, p, members={"config.json": b"{not json"})
    elif how == "bad_h5":
        _rewrite(src, p, members={"model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 100})
    elif how == "legacy_h5":
        p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    elif how == "sharded":
        _rewrite(src, p, members={"model.weights.h5": None, "model.weights.json": b"{}"})
    match = {"no_config": "no config.json", "no_weights": "no model.weights.h5",
             "bad_json": "not valid JSON", "bad_h5": "not a readable HDF5",
             "legacy_h5": "legacy Keras HDF5", "sharded": "sharded"}.get(how, "not a .keras archive")
    with pytest.raises(grulite.GruliteError, match=match):
        from_keras(p)


def test_merge_modes_and_refusals(tmp_path):
    """sum / mul / ave import as a merge after the bidirectional layer (their
    numbers: tests/test_keras_variants.py); None (two outputs) and unknown
    modes are refused."""
    for mode in ("sum", "ave", "mul"):
        def edit(cfg, mode=mode):
            _gru_cfg(cfg)["merge_mode"] = mode
        m = from_keras(_rewrite(_fixture("bidir_seq"), tmp_path / "m.keras", edit))
        assert m.config.layers[-1].merge == mode
        assert m.config.output_size == m.config.layers[-1].hidden_size
    for mode in (None, "max"):
        def edit(cfg, mode=mode):
            _gru_cfg(cfg)["merge_mode"] = mode
        p = _rewrite(_fixture("bidir_seq"), tmp_path / "m.keras", edit)
        with pytest.raises(grulite.GruliteError, match=f"merge_mode={mode!r}.*concat, sum, mul or ave"):
            from_keras(p)


@pytest.mark.parametrize("key,value,match", [
    ("activation", "gelu", "activation='gelu' is not supported; grulite maps the Keras "
                           "activations that are one of its GRU functions"),
    ("recurrent_activation", "swish", "recurrent_activation='swish' is not supported"),
    ("units", 8, r"kernel has shape \(5, 39\); expected \(input, 3\*units\) = \(5, 24\)"),
    ("dtype", {"class_name": "QuantizedDTypePolicy", "config": {"name": "int8_from_float32"}},
     "quantized"),
])
def test_refuses_gru_config(tmp_path, key, value, match):
    p = _rewrite(_fixture("gru_reset_before"), tmp_path / "m.keras",
                 lambda cfg: _gru_cfg(cfg).__setitem__(key, value))
    with pytest.raises(grulite.GruliteError, match=match):
        from_keras(p)


def test_refuses_dense_activation(tmp_path):
    p = _rewrite(_fixture("head_activations"), tmp_path / "m.keras",
                 lambda cfg: _layers(cfg)[3]["config"].__setitem__("activation", "gelu"))
    with pytest.raises(grulite.GruliteError, match="activation 'gelu' is not supported"):
        from_keras(p)


def test_refuses_masking_after_gru(tmp_path):
    """Masking is imported on the model's input only (tests/test_keras_variants.py)."""
    def edit(cfg):
        _layers(cfg).insert(2, {"class_name": "Masking", "config": {"name": "masking",
                                                                    "mask_value": 0.0}})
    p = _rewrite(_fixture("rnn_gru_cell"), tmp_path / "m.keras", edit)
    with pytest.raises(grulite.GruliteError, match="Masking after a GRU or Dense layer is not "
                                                   "imported"):
        from_keras(p)


def test_refuses_no_gru(tmp_path):
    def edit(cfg):
        cfg["config"]["layers"] = [l for l in _layers(cfg) if l["class_name"] != "GRU"]
    p = _rewrite(_fixture("head_activations"), tmp_path / "m.keras", edit)
    with pytest.raises(grulite.GruliteError, match="no GRU layer in this model; its layers are"):
        from_keras(p)


def test_refuses_unsupported_layer(tmp_path):
    def edit(cfg):
        _layers(cfg)[1]["class_name"] = "LSTM"
    p = _rewrite(_fixture("gru_go_backwards_last"), tmp_path / "m.keras", edit)
    with pytest.raises(grulite.GruliteError, match="no GRU layer"):
        from_keras(p)
    p = _rewrite(_fixture("head_per_step"), tmp_path / "m.keras",
                 lambda cfg: _layers(cfg).insert(1, {"class_name": "Conv1D",
                                                     "config": {"name": "c"}}))
    with pytest.raises(grulite.GruliteError, match="layer type 'Conv1D' is not supported"):
        from_keras(p)


def test_refuses_branching_functional(tmp_path):
    def edit(cfg):
        cfg["config"]["output_layers"] = [["gru", 0, 0], ["gru_1", 0, 0]]
    p = _rewrite(_fixture("functional_chain_head"), tmp_path / "m.keras", edit)
    with pytest.raises(grulite.GruliteError, match="outputs come from"):
        from_keras(p)


@pytest.mark.parametrize("edit", [
    lambda cfg: cfg["config"].__setitem__("layers", [1, 2]),
    lambda cfg: _gru_cfg(cfg).__setitem__("units", "seven"),
    lambda cfg: _layers(cfg)[1].__setitem__("config", ["not", "a", "dict"]),
    lambda cfg: cfg["config"].__setitem__("layers", "GRU"),
])
def test_malformed_config(tmp_path, edit):
    p = _rewrite(_fixture("gru_reset_before"), tmp_path / "m.keras", edit)
    with pytest.raises(grulite.GruliteError):
        from_keras(p)


def test_refuses_subclassed_model(tmp_path):
    p = _rewrite(_fixture("gru_reset_after"), tmp_path / "m.keras",
                 lambda cfg: cfg.__setitem__("class_name", "MyModel"))
    with pytest.raises(grulite.GruliteError, match="not a Sequential or functional model"):
        from_keras(p)


# ---------------------------------------------------------------------------
# live Keras


@pytest.fixture(scope="module")
def keras():
    return _keras()


@pytest.mark.parametrize("name", CASES)
def test_live_keras(name, keras, tmp_path):
    seed = 100 + CASES.index(name)
    model = tool.build(keras, name, seed)
    x = np.random.default_rng(seed).standard_normal((4, 11, tool.I)).astype(np.float32)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    g = from_keras(path)
    check_case(g, x, tool.keras_outputs(model, x), tool.CASES[name]["read"], f"live {name}")
    _, summary = image_from_keras(path)
    assert summary["parameters"] == model.count_params()


def _save(model, tmp_path, name="m.keras") -> str:
    p = str(tmp_path / name)
    model.save(p)
    return p


def test_live_refusals(keras, tmp_path):
    L = keras.layers

    def seq(*layers):
        return keras.Sequential([keras.Input((6, 4))] + list(layers))

    cases = [
        (seq(L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode=None)),
         "merge_mode=None"),
        (seq(L.GRU(3, activation="gelu")), "activation='gelu'"),
        (seq(L.GRU(3, recurrent_activation="selu")), "recurrent_activation='selu'"),
        (seq(L.GRU(3, return_sequences=True), L.Masking(), L.GRU(3)), "Masking after a GRU"),
        (seq(L.LSTM(3)), "no GRU layer"),
        (seq(L.Dense(3)), "no GRU layer"),
        (seq(L.GRU(3, return_sequences=True), L.Flatten(), L.Dense(2)), "'Flatten' is not"),
        (seq(L.GRU(3), L.Dense(2, activation="gelu")), "'gelu'"),
        (seq(L.GRU(3), L.Dense(2, activation="relu"), L.Activation("softmax")),
         "only right after a Dense layer with a linear"),
        (seq(L.GRU(3, return_sequences=True, go_backwards=True),
             L.Bidirectional(L.GRU(3))), "Bidirectional after a go_backwards"),
    ]
    for i, (model, match) in enumerate(cases):
        with pytest.raises(grulite.GruliteError, match=match):
            from_keras(_save(model, tmp_path, f"m{i}.keras"))


@pytest.mark.parametrize("top", ["bidirectional", "go_backwards"])
def test_live_head_on_final_states(keras, tmp_path, top):
    """A Dense head after a Bidirectional / go_backwards top GRU with
    return_sequences=False reads the final states (head_from="state")."""
    L = keras.layers
    keras.utils.set_random_seed(8)
    gru = L.Bidirectional(L.GRU(5)) if top == "bidirectional" else L.GRU(5, go_backwards=True)
    model = keras.Sequential([keras.Input((None, 4)), L.GRU(6, return_sequences=True), gru,
                              L.Dense(3, activation="softmax")])
    rng = np.random.default_rng(8)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, size=tuple(w.shape)).astype("float32"))
    x = rng.standard_normal((3, 7, 4)).astype(np.float32)
    m = from_keras(_save(model, tmp_path))
    assert m.config.head_from == "state"
    np.testing.assert_allclose(m.predict(x), tool.keras_outputs(model, x)[0], atol=2e-5)


def test_live_bidirectional_head_workaround(keras, tmp_path):
    """head=False and the Dense on h_n also gives Keras' output."""
    L = keras.layers
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((None, 4)), L.Bidirectional(L.GRU(5)),
                              L.Dense(3, activation="softmax")])
    rng = np.random.default_rng(7)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, size=tuple(w.shape)).astype("float32"))
    x = rng.standard_normal((2, 6, 4)).astype(np.float32)
    m = from_keras(_save(model, tmp_path), head=False)
    _, h_n = m(x)
    last = np.concatenate([h_n[0], h_n[1]], axis=-1)
    k, b = (np.asarray(v) for v in model.layers[-1].get_weights())
    z = last @ k + b
    ref = np.exp(z - z.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(ref, tool.keras_outputs(model, x)[0], atol=1e-6)


def test_live_functional_states(keras, tmp_path):
    """A functional chain returning sequences and the state of a stack with
    different sizes; state indices for per-layer tuples."""
    L = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, 4))
    h = L.GRU(6, return_sequences=True, reset_after=False)(inp)
    y, s = L.GRU(9, return_sequences=True, return_state=True, go_backwards=True)(h)
    model = keras.Model(inp, [y, s])
    rng = np.random.default_rng(3)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, size=tuple(w.shape)).astype("float32"))
    x = rng.standard_normal((3, 8, 4)).astype(np.float32)
    p = _save(model, tmp_path)
    check_case(from_keras(p), x, tool.keras_outputs(model, x), ["y_rev", "h:1:0"], "functional")
    _, summary = image_from_keras(p)
    assert [o["grulite"] for o in summary["outputs"]] == ["y[:, ::-1]", "h_n[1][0]"]


def test_live_unused_state_into_head(keras, tmp_path):
    """A GRU with return_state whose state is left unused, its output into Dense."""
    L = keras.layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((None, 4))
    out, _ = L.GRU(6, return_state=True)(inp)
    model = keras.Model(inp, L.Dense(2, activation="tanh")(out))
    rng = np.random.default_rng(5)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, size=tuple(w.shape)).astype("float32"))
    x = rng.standard_normal((3, 8, 4)).astype(np.float32)
    check_case(from_keras(_save(model, tmp_path)), x, tool.keras_outputs(model, x), ["predict"],
               "unused state")
