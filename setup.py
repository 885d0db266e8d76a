"""Builds the one extension module, grulite._core, from the C core and the
Cython binding.  Flags are portable: no -march=native in what users install."""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))

if sys.platform == "win32":
    cflags = ["/O2"]
else:
    # -g0: no debug info in what users install (it was 83% of the module).
    cflags = ["-O3", "-g0", "-std=c99", "-fvisibility=hidden"]
    if os.environ.get("GRULITE_WERROR"):
        cflags += ["-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
                   "-Wno-unreachable-code", "-Wno-unused-parameter"]

# Every C file of the core, in its subfolders too (docs/architecture.md).
core_sources = sorted(glob.glob(os.path.join("src", "core", "**", "*.c"), recursive=True))

ext = Extension(
    "grulite._core",
    sources=["src/grulite/_core.pyx"] + core_sources,
    include_dirs=["include", "src/core", numpy.get_include()],
    depends=sorted(glob.glob(os.path.join("src", "core", "**", "*.h"), recursive=True))
    + ["include/grulite.h"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=cflags,
    language="c",
)

setup(ext_modules=cythonize([ext], language_level=3,
                            compiler_directives={"embedsignature": True}))
