"""What importing costs: ``import grulite`` loads what running a .grl model
needs and nothing more (the importers, zip / json / hashing / temporary
files load where they are used), and ``tools/bench.py --help`` needs no
grulite at all."""
from __future__ import annotations

import os
import subprocess
import sys

from helpers_format import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules a program that only loads and runs a .grl model never needs.
HEAVY = ["zipfile", "lzma", "bz2", "zlib", "tempfile", "shutil", "urllib", "json", "hashlib",
         "random", "pickle", "argparse", "struct", "platform", "grulite.importers",
         "grulite._cli", "grulite.dask"]


def _modules(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print(sorted(sys.modules))"],
                         capture_output=True, text=True, env=child_env(), timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(eval(out.stdout))          # a list of str, printed by this very test


def test_import_grulite_loads_no_importer_and_no_heavy_module():
    numpy_only = _modules("import numpy")
    loaded = _modules("import grulite") - numpy_only
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"import grulite loads {heavy} (beyond numpy)"
    assert "grulite._core" in loaded


def test_a_model_runs_without_loading_an_importer(tmp_path):
    import numpy as np

    import grulite
    from support.models import gru_state

    path = tmp_path / "m.grl"
    grulite.from_state_dict(gru_state(np.random.default_rng(0), 3, 4)).save(path)
    loaded = _modules(f"import grulite, numpy as np; m = grulite.load({str(path)!r}); "
                      "m(np.zeros((1, 2, 3), np.float32))")
    assert not any(m.startswith("grulite.importers") for m in loaded)


def test_bench_help_needs_no_grulite(tmp_path):
    """python tools/bench.py --help works where grulite cannot be imported
    (not installed, or not built)."""
    fake = tmp_path / "grulite"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('grulite is not built here')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "--help"],
                       capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout and "--cases" in p.stdout
