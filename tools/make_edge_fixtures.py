"""Writes the fixtures of the builds with no operating system (docs/edge.md):
models emitted as C source by grulite's own emitter (`Model.save_c`, what
`grulite convert --emit-c` writes), an input, and the outputs they must give.

Run from the repository root with grulite importable (installed, or
PYTHONPATH=src after an in-place build) and torch 2.13.0:

    python3 tools/make_edge_fixtures.py

Files:
    tests/c/noos/edge_f32.c, edge_f16.c, edge_i8.c
        a torch.nn.GRU(5, 12) + nn.Linear(12, 3) (seeded), in each weight dtype
    tests/c/noos/expected.c
        x (2, 12, 5); torch's y (2, 12, 12) and per-step head (2, 12, 3), the
        independent reference; and what grulite's generic kernels give for each
        dtype (float16 and int8 round their weights, so torch is only a loose
        reference for them: tests/c/noos/test_noos.c says how loose; the
        generic set, so that int8's numbers do not depend on this host's
        kernels, some of which round the activations of int8 products too).
    examples/cortex-m4/model.c
        the bare-metal example's model: torch.nn.GRU(8, 64) + nn.Linear(64, 4),
        int8 (what a microcontroller keeps in flash).
    examples/cortex-m4/expected.txt
        that model's per-step head on the example's input, from grulite's
        generic kernels on this host, in millionths (the example prints the same on the Cortex-M4 and
        ctest compares the two: tools/cortex-m4/compare.cmake).

Deterministic: the same bytes on every run with the same torch and grulite.
"""
import os

import numpy as np
import torch

import grulite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOOS = os.path.join(ROOT, "tests", "c", "noos")
EXAMPLE = os.path.join(ROOT, "examples", "cortex-m4")


def torch_model(seed: int, inputs: int, hidden: int, outputs: int):
    torch.manual_seed(seed)
    gru = torch.nn.GRU(inputs, hidden, batch_first=True)
    fc = torch.nn.Linear(hidden, outputs)
    sd = {f"gru.{k}": v.detach().numpy() for k, v in gru.state_dict().items()}
    sd.update({f"fc.{k}": v.detach().numpy() for k, v in fc.state_dict().items()})
    return gru, fc, sd


def example_input(steps: int, inputs: int) -> np.ndarray:
    """The example's input, computed the same way in examples/cortex-m4/main.c
    (integer arithmetic, then one exact division)."""
    t = np.arange(steps)[:, None]
    i = np.arange(inputs)[None, :]
    return (((t * 7 + i * 3) % 11 - 5) / np.float32(5.0)).astype(np.float32)


def c_floats(name: str, a: np.ndarray) -> str:
    flat = np.asarray(a, dtype=np.float32).ravel()
    rows = [", ".join(f"{float(v):.9g}f" for v in flat[i:i + 6]) for i in range(0, flat.size, 6)]
    body = ",\n    ".join(rows)
    return f"const float {name}[{flat.size}] = {{\n    {body},\n}};\n"


def steps_of(model: grulite.Model, x: np.ndarray):
    """y and the head on every step, generic kernels (a stream gives the same
    numbers, bit for bit: what the no-OS test runs)."""
    model.isa = "generic"
    y, _ = model(x)
    return y, model.predict(x, all_steps=True)


def main() -> None:
    os.makedirs(NOOS, exist_ok=True)
    os.makedirs(EXAMPLE, exist_ok=True)

    # The no-OS test's model, in every dtype.
    gru, fc, sd = torch_model(17, 5, 12, 3)
    rng = np.random.default_rng(17)
    x = rng.uniform(-1.0, 1.0, size=(2, 12, 5)).astype(np.float32)
    with torch.no_grad():
        y_t, _ = gru(torch.from_numpy(x))
        head_t = fc(y_t)
    parts = [
        "/* expected.c - the no-OS test's input and outputs (tools/make_edge_fixtures.py;",
        " * do not edit): torch's, and grulite's on the host that wrote them. */",
        '#include "noos_fixtures.h"',
        "",
        c_floats("edge_x", x),
        c_floats("edge_torch_y", y_t.numpy()),
        c_floats("edge_torch_head", head_t.numpy()),
    ]
    for dtype, short in (("float32", "f32"), ("float16", "f16"), ("int8", "i8")):
        m = grulite.from_state_dict(sd, prefix="gru", head="fc", dtype=dtype)
        m.save_c(os.path.join(NOOS, f"edge_{short}.c"), name=f"edge_{short}")
        y_g, head_g = steps_of(m, x)
        err = float(np.max(np.abs(head_g - head_t.numpy())))
        print(f"edge {dtype}: max |head - torch| {err:.2e}")
        parts.append(c_floats(f"edge_{short}_y", y_g))
        parts.append(c_floats(f"edge_{short}_head", head_g))
    with open(os.path.join(NOOS, "expected.c"), "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(parts))

    # The bare-metal example's model: int8, H = 64.
    gru, fc, sd = torch_model(64, 8, 64, 4)
    m = grulite.from_state_dict(sd, prefix="gru", head="fc", dtype="int8")
    m.save_c(os.path.join(EXAMPLE, "model.c"), name="example_model")
    xe = example_input(20, 8)[None]
    _, head_g = steps_of(m, xe)
    with torch.no_grad():
        y_t, _ = gru(torch.from_numpy(xe))
        head_t = fc(y_t).numpy()
    print(f"example int8: max |head - torch float32| {float(np.max(np.abs(head_g - head_t))):.2e}")
    with open(os.path.join(EXAMPLE, "expected.txt"), "w", encoding="ascii", newline="\n") as f:
        for t in range(head_g.shape[1]):
            vals = " ".join(str(int(round(float(v) * 1e6))) for v in head_g[0, t])
            f.write(f"step {t}: {vals}\n")


if __name__ == "__main__":
    main()
