"""Shared helpers for grulite's Python tests.

* ``FIXTURE_DIR`` and ``fixture_cases()``: the committed parity fixtures
  (made by tools/make_fixtures.py).
* ``make_fixtures``: that tool imported as a module, whose ``torch_case`` /
  ``ort_case`` generators the live parity tests reuse.
* The numpy reference GRU, the state_dict builders and the file writers
  live in ``support/`` (shared with tools/).
* ``record_error``: keeps the worst parity error of each kind; printed in the
  terminal summary at the end of the session.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
FIXTURE_DIR = os.path.join(TESTS_DIR, "fixtures")
TOOLS_DIR = os.path.join(ROOT, "tools")

# The grulite under test: the installed one (pip install . or -e .); in a
# checkout with only an in-place build (python setup.py build_ext --inplace)
# and nothing installed, the one in src/.
if importlib.util.find_spec("grulite") is None:
    sys.path.insert(0, os.path.join(ROOT, "src"))


def _load_make_fixtures():
    path = os.path.join(TOOLS_DIR, "make_fixtures.py")
    spec = importlib.util.spec_from_file_location("grulite_make_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_fixtures = _load_make_fixtures()


def fixture_cases(fname: str) -> list:
    """The cases stored in tests/fixtures/<fname> (list of dicts)."""
    return make_fixtures.load_cases(os.path.join(FIXTURE_DIR, fname))


# ---------------------------------------------------------------------------
# layout helpers


def batch_major(case: dict, a):
    """A case's x / y (as stored: batch-first, time-major or unbatched) as
    (B, T, F)."""
    c = case["config"]
    if a is None:
        return None
    if c["unbatched"]:
        return a[None]
    return a if c["batch_first"] else a.transpose(1, 0, 2)


# ---------------------------------------------------------------------------
# worst-error bookkeeping


_WORST: dict = {}
_WORST_LOCK = threading.Lock()


def record_error(kind: str, err: float, where: str = "") -> float:
    """Remembers the worst error of each kind ("torch", "ort", ...)."""
    err = float(err)
    with _WORST_LOCK:
        if kind not in _WORST or err > _WORST[kind][0]:
            _WORST[kind] = (err, where)
    return err


def pytest_terminal_summary(terminalreporter):
    if not _WORST:
        return
    terminalreporter.section("grulite parity: worst max-abs error per reference")
    for kind in sorted(_WORST):
        err, where = _WORST[kind]
        terminalreporter.write_line(f"{kind:>22}: {err:.3e}  ({where})")
