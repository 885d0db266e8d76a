"""Writes the fixtures of the C example's tests (tests/c/fixtures/digits*):
models made by `grulite convert` from the bundled digits classifier, an
input, and the outputs `grulite run` gives for it.  ctest then checks that
examples/grulite_run (plain C, no Python) prints the same numbers.

Run from the repository root, with grulite importable (installed, or
PYTHONPATH=src after an in-place build):

    python3 tools/make_c_example_fixture.py

The outputs are also checked against torch.nn.GRU + nn.Linear + softmax when
torch is installed (max |diff| <= 1e-5).  Deterministic: the same bytes on
every run with the same grulite and numpy.

Files (tests/c/fixtures/):
    digits.grl            grulite convert digits_classifier.npz --head fc:softmax
    digits_f16.grl        the same with --dtype float16
    digits_x.npy          input, float32 (6, 10, 3): draws of 3 digits / 9, as in training
    digits_x.f32          the same floats, raw little-endian (for stdin / --steps)
    digits_x1.npy         one sequence, float32 (10, 3)
    digits_head.npy       grulite run digits.grl digits_x.npy            (6, 10)
    digits_y.npy          grulite run ... --outputs y                     (6, 10, 24)
    digits_x1_head.npy    grulite run digits.grl digits_x1.npy           (10,)
    digits_f16_head.npy   grulite run digits_f16.grl digits_x.npy        (6, 10)
"""
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "c", "fixtures")
NPZ = os.path.join(ROOT, "src", "grulite", "data", "digits_classifier.npz")


def grulite_cli(*args: str) -> None:
    # cwd OUT: file names (not paths) end up in the .grl metadata ("source").
    subprocess.run([sys.executable, "-m", "grulite", *args], cwd=OUT, check=True,
                   stdout=subprocess.DEVNULL)


def torch_reference(x: np.ndarray):
    """(head, y) from torch, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    sd = dict(np.load(NPZ))
    gru = torch.nn.GRU(3, 24, batch_first=True)
    fc = torch.nn.Linear(24, 10)
    gru.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in sd.items() if k.startswith("gru.")})
    fc.load_state_dict({k[3:]: torch.from_numpy(v) for k, v in sd.items() if k.startswith("fc.")})
    with torch.no_grad():
        y, _ = gru(torch.from_numpy(x))
        head = torch.softmax(fc(y[:, -1]), dim=-1)
    return head.numpy(), y.numpy()


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(2024)
    x = (rng.integers(0, 10, size=(6, 10, 3)) / 9.0).astype(np.float32)
    np.save(os.path.join(OUT, "digits_x.npy"), x)
    with open(os.path.join(OUT, "digits_x.f32"), "wb") as f:
        f.write(x.astype("<f4").tobytes())
    np.save(os.path.join(OUT, "digits_x1.npy"), x[2])

    npz = os.path.relpath(NPZ, OUT)
    grulite_cli("convert", npz, "-o", "digits.grl", "--head", "fc:softmax")
    grulite_cli("convert", npz, "-o", "digits_f16.grl", "--head", "fc:softmax",
                "--dtype", "float16")
    grulite_cli("run", "digits.grl", "digits_x.npy", "-o", "digits_head.npy", "-q")
    grulite_cli("run", "digits.grl", "digits_x.npy", "-o", "digits_y.npy", "--outputs", "y", "-q")
    grulite_cli("run", "digits.grl", "digits_x1.npy", "-o", "digits_x1_head.npy", "-q")
    grulite_cli("run", "digits_f16.grl", "digits_x.npy", "-o", "digits_f16_head.npy", "-q")

    head = np.load(os.path.join(OUT, "digits_head.npy"))
    y = np.load(os.path.join(OUT, "digits_y.npy"))
    head1 = np.load(os.path.join(OUT, "digits_x1_head.npy"))
    head16 = np.load(os.path.join(OUT, "digits_f16_head.npy"))
    assert head.shape == (6, 10) and y.shape == (6, 10, 24) and head1.shape == (10,)
    assert np.array_equal(head1, head[2])
    assert np.max(np.abs(head16 - head)) <= 2e-3
    ref = torch_reference(x)
    if ref is None:
        print("torch not installed: outputs not checked against torch")
    else:
        dh, dy = np.max(np.abs(head - ref[0])), np.max(np.abs(y - ref[1]))
        print(f"grulite run vs torch: max |diff| head {dh:.2g}, y {dy:.2g}")
        assert dh <= 1e-5 and dy <= 1e-5
    for name in sorted(os.listdir(OUT)):
        if name.startswith("digits"):
            print(f"wrote tests/c/fixtures/{name} ({os.path.getsize(os.path.join(OUT, name)):,} bytes)")


if __name__ == "__main__":
    main()
