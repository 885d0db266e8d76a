"""Makes the ONNX activation fixtures in tests/fixtures/variants/ (judged by ONNX Runtime).

Re-run from the repository root (needs onnx and onnxruntime)::

    python tools/make_variant_fixtures.py

Every pair (f, g) of ONNX's eleven GRU activations once, as a single ONNX
``GRU`` node (tools/make_onnx_fixtures.py builds it), its direction, its
``linear_before_reset`` and its ``clip`` cycling over the pairs so that every
value of each meets many pairs; a bidirectional node's reverse direction
gets another pair.  Parameters: :data:`PARAMS`, passed in
``activation_alpha`` / ``activation_beta`` in the order ONNX Runtime reads
them.  Writes ``onnx_pairs.npz``::

    X (cases, T, B, I)          the inputs, one per case
    Y (cases, T, 2, B, H)       ONNX Runtime's Y (one-direction cases: direction 1 zero)
    Y_h (cases, 2, B, H)        and its Y_h
    __cases__                   JSON: the case configurations (weights from their
                                seed, as make_onnx_fixtures makes them)

and ``<case>.onnx`` for two of them (a fuzzing seed for the ONNX importer,
and the file the tests read without rebuilding the graph).

:func:`all_pair_configs` is the full product (121 pairs x 3 directions x
both variants x clip or not) that tests/test_variants.py runs live when
ONNX Runtime is installed.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "variants")
EXPECTED = "onnx_pairs.npz"
FILES = ("pair_011_bid_lbr1_clip", "pair_043_rev_lbr0_clip")

#: ONNX's GRU activations, as its GRU operator spells them.
FUNCS = ("Sigmoid", "Tanh", "Relu", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
         "HardSigmoid", "Elu", "Softsign", "Softplus")
#: The parameters each function gets here (alpha[, beta]).
PARAMS = {"Affine": (0.6, 0.1), "LeakyRelu": (0.1,), "ThresholdedRelu": (0.2,),
          "ScaledTanh": (1.2, 0.7), "HardSigmoid": (0.25, 0.45), "Elu": (0.8,)}
DIRECTIONS = ("forward", "reverse", "bidirectional")
CLIP = 1.5
W_SCALE = 0.6       # unbounded activations grow; keep the states moderate


def _onnx_tool():
    spec = importlib.util.spec_from_file_location(
        "grulite_tool_make_onnx_fixtures", os.path.join(ROOT, "tools", "make_onnx_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pair_config(fi: int, gi: int, direction: str, lbr: int, clip: bool, seed: int = 0,
                name: str | None = None) -> dict:
    """One single-node case: f = FUNCS[fi], g = FUNCS[gi] (a bidirectional
    node's reverse direction: f = FUNCS[fi + 3], g = FUNCS[gi + 5])."""
    names = [FUNCS[fi], FUNCS[gi]]
    if direction == "bidirectional":
        names += [FUNCS[(fi + 3) % len(FUNCS)], FUNCS[(gi + 5) % len(FUNCS)]]
    alphas = [PARAMS[n][0] for n in names if n in PARAMS]
    betas = [PARAMS[n][1] for n in names if len(PARAMS.get(n, ())) > 1]
    if name is None:
        name = (f"pair_{fi * len(FUNCS) + gi:03d}_{direction[:3]}_lbr{lbr}"
                f"{'_clip' if clip else ''}")
    return dict(name=name, family="node", direction=direction, lbr=lbr, layout=0, bias=True,
                lens=False, h0=False, seed=seed, I=3, H=5, B=2, T=6, w_scale=W_SCALE,
                activations=names, activation_alpha=alphas or None,
                activation_beta=betas or None, clip=CLIP if clip else None)


def fixture_configs() -> list:
    """Each pair once; direction, variant and clip cycle over the pairs."""
    out = []
    for i, (fi, gi) in enumerate(itertools.product(range(len(FUNCS)), repeat=2)):
        out.append(pair_config(fi, gi, DIRECTIONS[i % 3], (i // 3) % 2, (i // 6) % 2 == 1,
                               seed=i))
    return out


def all_pair_configs(seed: int = 1000) -> list:
    """The full product: pairs x directions x variants x clip."""
    out = []
    for n, (fi, gi, direction, lbr, clip) in enumerate(itertools.product(
            range(len(FUNCS)), range(len(FUNCS)), DIRECTIONS, (0, 1), (False, True))):
        out.append(pair_config(fi, gi, direction, lbr, clip, seed=seed + n))
    return out


def main() -> int:
    tool = _onnx_tool()
    os.makedirs(OUT_DIR, exist_ok=True)
    cases = fixture_configs()
    c0 = cases[0]
    T, B, I, H = c0["T"], c0["B"], c0["I"], c0["H"]
    X = np.zeros((len(cases), T, B, I), np.float32)
    Ys = np.zeros((len(cases), T, 2, B, H), np.float32)
    Yhs = np.zeros((len(cases), 2, B, H), np.float32)
    for i, cfg in enumerate(cases):
        feeds = tool.node_inputs(cfg)
        Y, Y_h = tool.run_node_ort(cfg, feeds)
        D = Y.shape[1]
        X[i], Ys[i, :, :D], Yhs[i, :D] = feeds["X"], Y, Y_h
        if cfg["name"] in FILES:
            import onnx
            onnx.save(tool.build_node_model(cfg), os.path.join(OUT_DIR, cfg["name"] + ".onnx"))
    missing = set(FILES) - {c["name"] for c in cases}
    if missing:
        print(f"no cases named {sorted(missing)}", file=sys.stderr)
        return 1
    np.savez_compressed(os.path.join(OUT_DIR, EXPECTED), X=X, Y=Ys, Y_h=Yhs,
                        __cases__=np.frombuffer(json.dumps(cases).encode("utf-8"), np.uint8))
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT_DIR, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
