"""GRU variants: other activations than sigmoid / tanh, ONNX's clip, and
merged directions, judged by ONNX Runtime and a numpy reference.

* Fixtures (tools/make_variant_fixtures.py): every (f, g) pair of ONNX's
  eleven activations once, ONNX Runtime's outputs; run through the engine
  (no onnx package needed) and, with onnx installed, through the ONNX
  importer.
* Live (onnxruntime installed): the full product, every pair x forward /
  reverse / bidirectional x both reset variants x with and without clip.
* from_state_dict / from_arrays with ``activations=`` and ``clip=`` against
  the numpy reference (tests/support/reference.py).
* Merged directions (sum, mul, ave) against the reference.

Errors are relative: |got - want| <= 2e-5 * max(1, |want|) (unbounded
activations grow).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import grulite
from conftest import load_tool
from grulite import GruliteError
from grulite._activations import PARAMS, canonical
from grulite.importers._image import image_from_layers
from support.reference import ref_gru

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(TESTS_DIR, "fixtures", "variants")
RTOL = 2e-5

tool = load_tool("make_variant_fixtures")
onnx_tool = load_tool("make_onnx_fixtures")


def _fixtures():
    with np.load(os.path.join(FIX, tool.EXPECTED)) as f:
        return json.loads(bytes(f["__cases__"]).decode("utf-8")), f["X"], f["Y"], f["Y_h"]


CASES, X, YS, YHS = _fixtures()


def _rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


def _acts(cfg: dict) -> list:
    """Per direction ((f, a, b), (g, a, b)) from the case's ONNX attributes,
    alpha / beta consumed in order (as ONNX Runtime reads them)."""
    alphas = list(cfg["activation_alpha"] or [])
    betas = list(cfg["activation_beta"] or [])
    out = []
    for name in cfg["activations"]:
        n = canonical(name, "test")
        vals = [0.0, 0.0]
        for j in range(len(PARAMS.get(n, ()))):
            vals[j] = (alphas if j == 0 else betas).pop(0)
        out.append((n, vals[0], vals[1]))
    assert not alphas and not betas
    return [(out[2 * d], out[2 * d + 1]) for d in range(len(out) // 2)]


def _onnx_weights(cfg: dict):
    """W, R, B in PyTorch's gate order (r, z, n), per direction."""
    W, R, Bv, _ = onnx_tool._weights(cfg)

    def rzn(a):                                    # ONNX's gate blocks z, r, h
        z, r, h = np.split(a, 3, axis=0)
        return np.concatenate([r, z, h], axis=0)
    D = W.shape[0]
    H = cfg["H"]
    return ([rzn(W[d]) for d in range(D)], [rzn(R[d]) for d in range(D)],
            [rzn(Bv[d, :3 * H]) for d in range(D)], [rzn(Bv[d, 3 * H:]) for d in range(D)])


def _engine_model(cfg: dict) -> grulite.Model:
    """The case's GRU straight from its weights (the engine, not the importer)."""
    w_ih, w_hh, b_ih, b_hh = _onnx_weights(cfg)
    D = len(w_ih)
    lay = dict(input_size=cfg["I"], hidden_size=cfg["H"], num_directions=D,
               reverse=cfg["direction"] == "reverse", reset_after=bool(cfg["lbr"]), bias=True,
               weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh,
               activations=_acts(cfg), clip=cfg["clip"])
    return grulite.from_bytes(image_from_layers(cfg["I"], [lay], [], {}, batch_first=False))


def _check(model: grulite.Model, cfg: dict, x, Y, Y_h) -> float:
    """y (T, B, D*H), h_n (D, B, H) against ONNX's Y (T, D, B, H), Y_h."""
    T, D, B, H = Y.shape
    y, h_n = model(x, batch_first=False)
    err = max(_rel_err(y, Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)), _rel_err(h_n, Y_h))
    assert err <= RTOL, f"{cfg['name']} {cfg['activations']} clip={cfg['clip']}: error {err:.3g}"
    return err


def _case_arrays(i: int):
    cfg = CASES[i]
    D = 2 if cfg["direction"] == "bidirectional" else 1
    return cfg, X[i], YS[i][:, :D], YHS[i][:D]


def test_fixture_every_pair_engine():
    """The 121 pairs against ONNX Runtime's committed outputs."""
    worst = 0.0
    seen = set()
    for i in range(len(CASES)):
        cfg, x, Y, Y_h = _case_arrays(i)
        m = _engine_model(cfg)
        acts = m.config.layers[0].activations
        assert acts is not None or cfg["activations"][:2] == ["Sigmoid", "Tanh"]
        worst = max(worst, _check(m, cfg, x, Y, Y_h))
        seen.add(tuple(cfg["activations"][:2]))
    assert len(seen) == len(tool.FUNCS) ** 2
    assert worst <= RTOL


def test_fixture_every_pair_onnx_importer():
    """The same cases through the ONNX importer (the graphs rebuilt from
    their configurations)."""
    pytest.importorskip("onnx")
    import tempfile

    import onnx

    from grulite.importers._onnx import image as image_from_onnx

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(len(CASES)):
            cfg, x, Y, Y_h = _case_arrays(i)
            path = os.path.join(tmp, "m.onnx")
            onnx.save(onnx_tool.build_node_model(cfg), path)
            img, _ = image_from_onnx(path)
            m = grulite.from_bytes(img)
            lay = m.config.layers[0]
            assert lay.clip == cfg["clip"]
            if cfg["activations"][:2] != ["Sigmoid", "Tanh"] or len(cfg["activations"]) == 4:
                want = _acts(cfg)
                got = lay.activations or ((("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0)),) * 2
                for d, (f, g) in enumerate(want):
                    assert got[d][0][0] == f[0] and got[d][1][0] == g[0]
                    np.testing.assert_allclose([got[d][0][1:], got[d][1][1:]], [f[1:], g[1:]],
                                               rtol=1e-6)
            _check(m, cfg, x, Y, Y_h)


@pytest.mark.parametrize("name", tool.FILES)
def test_committed_onnx_files(name):
    pytest.importorskip("onnx")
    i = next(k for k, c in enumerate(CASES) if c["name"] == name)
    cfg, x, Y, Y_h = _case_arrays(i)
    m = grulite.from_onnx(os.path.join(FIX, name + ".onnx"))
    _check(m, cfg, x, Y, Y_h)
    # save / load keeps the activations and clip
    again = grulite.from_bytes(m.to_bytes())
    assert again.config.layers[0].activations == m.config.layers[0].activations
    _check(again, cfg, x, Y, Y_h)


def test_live_onnx_runtime_full_product(tmp_path):
    """Every pair x forward / reverse / bidirectional x both reset variants x
    with and without clip, fresh weights, against ONNX Runtime."""
    if os.environ.get("GRULITE_SANITIZE"):
        pytest.skip("1452 ONNX Runtime sessions; under the sanitizers the fixtures run the "
                    "same kernels")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import onnx

    from grulite.importers._onnx import image as image_from_onnx

    worst = 0.0
    configs = tool.all_pair_configs()
    assert len(configs) == 11 * 11 * 3 * 2 * 2
    path = str(tmp_path / "m.onnx")
    for cfg in configs:
        feeds = onnx_tool.node_inputs(cfg)
        Y, Y_h = onnx_tool.run_node_ort(cfg, feeds)
        onnx.save(onnx_tool.build_node_model(cfg), path)
        img, _ = image_from_onnx(path)
        worst = max(worst, _check(grulite.from_bytes(img), cfg, feeds["X"], Y, Y_h))
    print(f"ONNX Runtime, {len(configs)} GRUs: max error / max(1, |y|) {worst:.3g}")


# ---------------------------------------------------------------------------
# from_state_dict / from_arrays against the numpy reference


def _state_dict(rng, I=3, H=6, L=2, bidirectional=False, k=0.5):
    sd = {}
    for layer in range(L):
        for sfx in (["", "_reverse"] if bidirectional else [""]):
            n_in = I if layer == 0 else H * (2 if bidirectional else 1)
            sd[f"gru.weight_ih_l{layer}{sfx}"] = rng.uniform(-k, k, (3 * H, n_in)).astype(np.float32)
            sd[f"gru.weight_hh_l{layer}{sfx}"] = rng.uniform(-k, k, (3 * H, H)).astype(np.float32)
            sd[f"gru.bias_ih_l{layer}{sfx}"] = rng.uniform(-k, k, 3 * H).astype(np.float32)
            sd[f"gru.bias_hh_l{layer}{sfx}"] = rng.uniform(-k, k, 3 * H).astype(np.float32)
    return sd


def _ref_layers(sd, L, D, f, g, clip):
    out = []
    for layer in range(L):
        dirs = []
        for sfx in ["", "_reverse"][:D]:
            dirs.append(dict(w_ih=sd[f"gru.weight_ih_l{layer}{sfx}"],
                             w_hh=sd[f"gru.weight_hh_l{layer}{sfx}"],
                             b_ih=sd[f"gru.bias_ih_l{layer}{sfx}"],
                             b_hh=sd[f"gru.bias_hh_l{layer}{sfx}"], f=f, g=g, clip=clip))
        out.append(dirs)
    return out


@pytest.mark.parametrize("f, g, clip, reset_after, bidirectional", [
    ("sigmoid", "relu", None, True, False),                      # RNNoise's candidate
    (("hard_sigmoid", 0.2, 0.5), "tanh", None, False, True),     # Keras 2's gates
    (("hard_sigmoid", 1 / 6, 0.5), "softsign", 3.0, True, False),
    ("sigmoid", "tanh", 0.5, False, False),                      # clip alone
    (("leaky_relu", 0.05), ("elu", 0.7), 2.0, True, True),
    ("softplus", ("scaled_tanh", 1.5, 0.5), None, False, False),
    ({"name": "Affine", "alpha": 0.3, "beta": 0.2}, ("thresholded_relu", 0.1), 1.0, True, False),
])
def test_state_dict_activations_against_reference(f, g, clip, reset_after, bidirectional):
    rng = np.random.default_rng(7)
    D = 2 if bidirectional else 1
    sd = _state_dict(rng, bidirectional=bidirectional)
    m = grulite.from_state_dict(sd, reset_after=reset_after, activations=(f, g), clip=clip)
    from grulite._activations import parse
    fa, ga = parse(f, "f"), parse(g, "g")
    lay = m.config.layers[0]
    assert lay.clip == clip
    if (fa[0], ga[0]) != ("sigmoid", "tanh"):
        assert [(a[0][0], a[1][0]) for a in lay.activations] == [(fa[0], ga[0])] * D
    x = rng.standard_normal((3, 7, 3)).astype(np.float32)
    lengths = np.array([7, 4, 1], np.int32)
    y, h_n = m(x, lengths=lengths)
    want_y, want_h = ref_gru(_ref_layers(sd, 2, D, fa, ga, clip), x, lengths=lengths,
                             reset_after=reset_after)
    assert _rel_err(y, want_y) <= RTOL
    assert _rel_err(h_n, np.concatenate(want_h)) <= RTOL
    # the stream gives the whole sequence's bits (one direction only)
    if not bidirectional:
        s = m.stream(batch_size=3)
        steps = [s.step(x[:, t]) for t in range(7)]
        y_full, _ = m(x)
        np.testing.assert_array_equal(np.stack([st[0] if isinstance(st, tuple) else st
                                                for st in steps], 1), y_full)


def test_from_arrays_activations_per_layer_and_dtypes():
    rng = np.random.default_rng(3)
    H, I = 8, 4
    layers = [dict(weight_ih=rng.uniform(-.5, .5, (3 * H, I)).astype(np.float32),
                   weight_hh=rng.uniform(-.5, .5, (3 * H, H)).astype(np.float32)),
              dict(weight_ih=rng.uniform(-.5, .5, (3 * H, H)).astype(np.float32),
                   weight_hh=rng.uniform(-.5, .5, (3 * H, H)).astype(np.float32))]
    acts = [("sigmoid", "relu"), None]
    x = rng.standard_normal((2, 6, I)).astype(np.float32)
    ref = [[dict(w_ih=layers[0]["weight_ih"], w_hh=layers[0]["weight_hh"], g=("relu", 0., 0.))],
           [dict(w_ih=layers[1]["weight_ih"], w_hh=layers[1]["weight_hh"])]]
    want, _ = ref_gru(ref, x)
    for dtype, tol in (("float32", RTOL), ("float16", 5e-3), ("int8", 5e-2)):
        m = grulite.from_arrays(layers, activations=acts, dtype=dtype)
        assert m.config.layers[0].activations[0][1][0] == "relu"
        assert m.config.layers[1].activations is None
        y, _ = m(x)
        assert _rel_err(y, want) <= tol, dtype


@pytest.mark.parametrize("activations, clip, words", [
    (("sigmoid", "gelu"), None, ["gelu", "hard_sigmoid"]),
    (("relu", 1.0), None, ["an activation is a name"]),
    ((("relu", 0.5), "tanh"), None, ["relu", "no parameters"]),
    ((("leaky_relu", float("nan")), "tanh"), None, ["finite"]),
    ((("affine", 1.0, float("inf")), "tanh"), None, ["finite"]),
    ((("elu", 1.0, 2.0), "tanh"), None, ["elu", "1 parameter"]),
    ((("leaky_relu", "x"), "tanh"), None, ["number"]),
    ((({"name": "elu", "gamma": 1},), "tanh"), None, []),
    (None, -1.0, ["clip", "> 0"]),
    (None, float("inf"), ["clip", "finite"]),
    (None, float("nan"), ["clip", "finite"]),
    ([("sigmoid", "relu")] * 3, None, ["one pair per layer (1)"]),
])
def test_bad_activations(activations, clip, words):
    sd = _state_dict(np.random.default_rng(0), L=1)
    with pytest.raises(GruliteError) as e:
        grulite.from_state_dict(sd, activations=activations, clip=clip)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


# ---------------------------------------------------------------------------
# merged directions


@pytest.mark.parametrize("merge", ["sum", "mul", "ave"])
def test_merged_directions_against_reference(merge):
    rng = np.random.default_rng(11)
    H, I, B, T = 5, 3, 3, 6
    sd = _state_dict(rng, I=I, H=H, L=1, bidirectional=True)
    dirs = []
    for sfx in ("", "_reverse"):
        dirs.append([sd[f"gru.{k}_l0{sfx}"] for k in ("weight_ih", "weight_hh", "bias_ih",
                                                     "bias_hh")])
    lay = dict(input_size=I, hidden_size=H, num_directions=2, reverse=False, reset_after=True,
               bias=True, weight_ih=[d[0] for d in dirs], weight_hh=[d[1] for d in dirs],
               bias_ih=[d[2] for d in dirs], bias_hh=[d[3] for d in dirs], merge=merge,
               activations=[(("sigmoid", 0.0, 0.0), ("relu", 0.0, 0.0))] * 2)
    m = grulite.from_bytes(image_from_layers(I, [lay], [], {}))
    assert m.config.layers[0].merge == merge and m.config.output_size == H
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([6, 2, 4], np.int32)
    y, h_n = m(x, lengths=lengths)
    ref = [[dict(w_ih=d[0], w_hh=d[1], b_ih=d[2], b_hh=d[3], g=("relu", 0.0, 0.0))
            for d in dirs]]
    want, want_h = ref_gru(ref, x, lengths=lengths)
    a, b = want[..., :H], want[..., H:]
    merged = a + b if merge == "sum" else a * b if merge == "mul" else (a + b) / 2
    assert y.shape == (B, T, H)
    assert _rel_err(y, merged) <= RTOL
    assert _rel_err(h_n, want_h[0]) <= RTOL


def test_merge_needs_two_directions():
    rng = np.random.default_rng(0)
    lay = dict(input_size=3, hidden_size=4, num_directions=1, reverse=False, reset_after=True,
               bias=False, weight_ih=[rng.standard_normal((12, 3)).astype(np.float32)],
               weight_hh=[rng.standard_normal((12, 4)).astype(np.float32)], merge="sum")
    with pytest.raises(GruliteError, match="two-direction"):
        image_from_layers(3, [lay], [], {})


# ---------------------------------------------------------------------------
# the command line


def test_cli_convert_activations_and_info(tmp_path, capsys):
    from grulite._cli import main

    rng = np.random.default_rng(5)
    sd = _state_dict(rng, L=1)
    src = tmp_path / "m.npz"
    np.savez(src, **sd)
    dst = tmp_path / "m.grl"
    assert main(["convert", str(src), "-o", str(dst), "--activations",
                 "hard_sigmoid:0.2:0.5,relu", "--clip", "3"]) == 0
    m = grulite.load(dst)
    lay = m.config.layers[0]
    assert lay.activations == ((("hard_sigmoid", 0.2, 0.5), ("relu", 0.0, 0.0)),)
    assert lay.clip == 3.0
    want = grulite.from_state_dict(sd, activations=(("hard_sigmoid", 0.2, 0.5), "relu"), clip=3)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(m(x)[0], want(x)[0])
    capsys.readouterr()
    assert main(["info", str(dst)]) == 0
    assert "f hard_sigmoid(alpha=0.2, beta=0.5), g relu  clip 3" in capsys.readouterr().out
    for bad, words in ((["--activations", "relu"], "F,G"), (["--activations", "relu:x,tanh"], "numbers"),
                       (["--activations", "gelu,tanh"], "gelu"), (["--clip", "-2"], "clip")):
        assert main(["convert", str(src), "-o", str(tmp_path / "bad.grl"), *bad]) == 1
        assert words in capsys.readouterr().err
        assert not (tmp_path / "bad.grl").exists()
