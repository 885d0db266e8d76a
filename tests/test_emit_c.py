"""`grulite convert --emit-c` / Model.save_c: the model as C source.  A
plain C program linking the core and the emitted file loads it with
grulite_model_load_buffer (borrowed, no copy) and must give the Python
outputs; compiled with the system C compiler (skipped without one)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import grulite
from grulite import GruliteError
from helpers_format import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")

# Reads the input (B*T*I floats, or B*T token ids) from stdin, writes the
# head's outputs (or y) to stdout as text, one value per line.
MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "grulite.h"

extern const unsigned char NAME[];
extern const size_t NAME_size;

int main(void)
{
    char msg[256];
    grulite_model *m = NULL;
    if (((size_t)NAME) % 64) { fprintf(stderr, "not aligned\n"); return 3; }
    int rc = grulite_model_load_buffer(NAME, NAME_size, 0, &m, msg, sizeof msg);
    if (rc) { fprintf(stderr, "load: %s\n", msg); return 1; }
    grulite_info info;
    grulite_model_info(m, &info);
    int B, T;
    if (scanf("%d %d", &B, &T) != 2) return 2;
    size_t n = (size_t)B * T * (info.vocab_size ? 1 : (size_t)info.input_size);
    float *x = malloc(n * sizeof(float));
    int32_t *tok = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        if (info.vocab_size) { if (scanf("%d", &tok[i]) != 1) return 2; }
        else if (scanf("%f", &x[i]) != 1) return 2;
    }
    size_t out_n = (size_t)B * (info.num_dense ? (size_t)info.head_size
                                               : (size_t)T * info.output_size);
    float *out = malloc(out_n * sizeof(float));
    grulite_workspace *ws = grulite_workspace_new();
    grulite_run run = {0};
    run.batch = B; run.steps = T; run.batch_first = 1;
    if (info.vocab_size) run.tokens = tok; else run.x = x;
    if (info.num_dense) run.head = out; else run.y = out;
    rc = grulite_forward(m, ws, &run);
    if (rc) { fprintf(stderr, "forward: %s\n", grulite_strerror(rc)); return 1; }
    for (size_t i = 0; i < out_n; i++) printf("%.9g\n", out[i]);
    grulite_workspace_free(ws);
    grulite_model_free(m);
    free(x); free(tok); free(out);
    return 0;
}
"""


@pytest.fixture(scope="module")
def core_lib(tmp_path_factory):
    """The C core compiled once into a static library (-O0: fast to build;
    these programs run tiny models)."""
    if CC is None:
        pytest.skip("no C compiler")
    if not os.path.isdir(os.path.join(ROOT, "src", "core")):
        pytest.skip("needs the source tree (src/core)")
    d = tmp_path_factory.mktemp("core")
    objs = []
    for dp, _, fs in os.walk(os.path.join(ROOT, "src", "core")):
        for f in sorted(fs):
            if f.endswith(".c"):
                o = d / (os.path.relpath(os.path.join(dp, f), ROOT).replace(os.sep, "_") + ".o")
                subprocess.run([CC, "-std=c99", "-O0", "-c", "-I", os.path.join(ROOT, "include"),
                                os.path.join(dp, f), "-o", str(o)], check=True, timeout=300)
                objs.append(str(o))
    lib = d / "libgrulite.a"
    subprocess.run(["ar", "rcs", str(lib), *objs], check=True, timeout=60)
    return lib


def build_and_run(core_lib, tmp_path, c_file, name, text_in):
    main = tmp_path / "main.c"
    main.write_text(MAIN.replace("NAME", name))
    exe = tmp_path / "prog"
    subprocess.run([CC, "-std=c99", "-O0", "-I", os.path.join(ROOT, "include"), str(main),
                    str(c_file), str(core_lib), "-lm", "-lpthread", "-o", str(exe)], check=True,
                   timeout=300)
    p = subprocess.run([str(exe)], input=text_in, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return np.array([float(v) for v in p.stdout.split()], dtype=np.float32)


def test_emitted_model_gives_the_python_outputs_in_c(core_lib, tmp_path):
    rng = np.random.default_rng(0)
    H, I = 12, 5
    sd = {"gru.weight_ih_l0": rng.standard_normal((3 * H, I)).astype(np.float32) * 0.4,
          "gru.weight_hh_l0": rng.standard_normal((3 * H, H)).astype(np.float32) * 0.4,
          "fc.weight": rng.standard_normal((3, H)).astype(np.float32),
          "fc.bias": rng.standard_normal(3).astype(np.float32)}
    m = grulite.from_state_dict(sd, head=[("fc", "softmax")])
    x = rng.standard_normal((2, 7, I)).astype(np.float32)
    for dtype in ("float32", "int8"):
        c_file = tmp_path / f"model_{dtype}.c"
        m.save_c(c_file, f"model_{dtype}", dtype=dtype)
        text = c_file.read_text()
        assert re.search(rf"const unsigned char model_{dtype}\[\d+\] GRULITE_MODEL_ALIGN", text)
        got = build_and_run(core_lib, tmp_path, c_file, f"model_{dtype}",
                            "2 7\n" + " ".join(f"{v:.9g}" for v in x.ravel()))
        want = (m if dtype == "float32" else m.astype(dtype)).predict(x)
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-6)


def test_emit_c_command_line_token_model(core_lib, tmp_path):
    rng = np.random.default_rng(1)
    sd = {"emb.weight": rng.standard_normal((9, 4)).astype(np.float32),
          "gru.weight_ih_l0": rng.standard_normal((18, 4)).astype(np.float32),
          "gru.weight_hh_l0": rng.standard_normal((18, 6)).astype(np.float32),
          "fc.weight": rng.standard_normal((9, 6)).astype(np.float32)}
    np.savez(tmp_path / "lm.npz", **sd)
    p = subprocess.run([sys.executable, "-m", "grulite", "convert", "lm.npz", "--head", "fc:none",
                        "--emit-c", "lm.c", "--name", "lm_model", "--dtype", "float16"],
                       cwd=tmp_path, capture_output=True, text=True, env=child_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "wrote lm.c" in p.stdout and not (tmp_path / "lm.grl").exists()
    tok = np.array([[1, 8, 0, 3], [2, 2, 5, 7]])
    got = build_and_run(core_lib, tmp_path, tmp_path / "lm.c", "lm_model",
                        "2 4\n" + " ".join(map(str, tok.ravel())))
    m = grulite.from_state_dict(sd, head=[("fc", "none")], dtype="float16")
    np.testing.assert_allclose(got.reshape(2, 9), m.predict(tok), atol=1e-5)


@pytest.mark.parametrize("name", ["1abc", "int", "a-b", "", "_x", "x" * 64])
def test_emit_c_refuses_bad_names(tmp_path, name):
    m = grulite.from_state_dict({"gru.weight_ih_l0": np.ones((3, 1), np.float32),
                                 "gru.weight_hh_l0": np.ones((3, 1), np.float32)})
    with pytest.raises(GruliteError, match="not a usable C identifier"):
        m.save_c(tmp_path / "m.c", name)
    assert not (tmp_path / "m.c").exists()
