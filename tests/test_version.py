"""One version: the header's GRULITE_VERSION_* macros (C, CMake), the
Python package's _version.py (which pyproject.toml reads), the compiled
library and the installed distribution all say the same."""
from __future__ import annotations

import importlib.metadata
import os
import re

import pytest

import grulite
from conftest import ROOT
from grulite import _core, _version


def header_version() -> str:
    with open(os.path.join(ROOT, "include", "grulite.h")) as f:
        text = f.read()
    parts = [re.search(rf"^#define GRULITE_VERSION_{k} (\d+)$", text, re.M) for k in
             ("MAJOR", "MINOR", "PATCH")]
    string = re.search(r'^#define GRULITE_VERSION_STRING "([^"]*)"$', text, re.M)
    assert all(parts) and string, "include/grulite.h lacks a GRULITE_VERSION_* macro"
    assert string.group(1) == ".".join(p.group(1) for p in parts)
    return string.group(1)


def test_one_version():
    v = header_version()
    assert _version.__version__ == v, "src/grulite/_version.py differs from include/grulite.h"
    assert grulite.__version__ == v
    assert _core.version() == v, "the compiled library is of another version"


def test_distribution_version():
    try:
        dist = importlib.metadata.version("grulite")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("grulite is not installed (run from a build tree)")
    assert dist == header_version(), "the installed metadata differs from include/grulite.h"
