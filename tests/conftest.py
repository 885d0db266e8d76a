"""Shared helpers for grulite's Python tests.

* ``FIXTURE_DIR`` and ``fixture_cases()``: the committed parity fixtures
  (made by tools/make_fixtures.py).
* ``load_tool(name)``: tools/<name>.py imported as a module;
  ``make_fixtures`` is that tool, whose ``torch_case`` / ``ort_case``
  generators the live parity tests reuse.
* ``max_err``, ``check_case`` (a model against a committed case, errors
  recorded), ``same_model`` (two models give the same bits).
* The numpy reference GRU, the state_dict builders and the file writers
  live in ``support/`` (shared with tools/).
* ``record_error``: keeps the worst parity error of each kind; printed in the
  terminal summary at the end of the session.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
import threading

import numpy as np

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
FIXTURE_DIR = os.path.join(TESTS_DIR, "fixtures")
TOOLS_DIR = os.path.join(ROOT, "tools")

# The grulite under test: the installed one (pip install . or -e .); in a
# checkout with only an in-place build (python setup.py build_ext --inplace)
# and nothing installed, the one in src/.
if importlib.util.find_spec("grulite") is None:
    sys.path.insert(0, os.path.join(ROOT, "src"))


@functools.cache
def load_tool(name: str):
    """tools/<name>.py imported as a module (the fixture generators: their
    case lists, live generators and torch references)."""
    spec = importlib.util.spec_from_file_location("grulite_tool_" + name,
                                                  os.path.join(TOOLS_DIR, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_fixtures = load_tool("make_fixtures")


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
# comparisons


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_case(m, case: dict, kind: str, where: str, tol: float = 2e-5) -> None:
    """m on a committed case (x, lengths -> y, h_n, optional head_out) within tol."""
    y, h_n = m(case["x"], lengths=case["lengths"])
    for name, got, want in (("y", y, case["y"]), ("h_n", h_n, case["h_n"])):
        assert got.shape == want.shape, f"{where}: {name} has shape {got.shape}, expected {want.shape}"
        e = record_error(kind, max_err(got, want), f"{where} [{name}]")
        assert e <= tol, f"{where}: {name} max abs error {e:.3e}"
    if case.get("head_out") is not None:
        out = m.predict(case["x"], lengths=case["lengths"])
        e = record_error(kind + " head", max_err(out, case["head_out"]), f"{where} [head]")
        assert e <= tol, f"{where}: head max abs error {e:.3e}"


def same_model(m, arrays: dict, head=None, I: int = 3) -> None:
    """m gives the same bits as grulite.from_state_dict(arrays, head=head)."""
    import grulite

    ref = grulite.from_state_dict(arrays, head=head)
    x = np.random.default_rng(7).standard_normal((2, 5, I)).astype(np.float32)
    y1, h1 = m(x)
    y2, h2 = ref(x)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(h1, h2)
    if head:
        np.testing.assert_array_equal(m.predict(x), ref.predict(x))


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
