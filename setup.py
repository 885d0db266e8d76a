"""Builds the one extension module, grulite._core, from the C core and the
Cython binding.  Flags are portable: no -march=native in what users install."""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def strict_warnings() -> list:
    """The strict warning set shared with CMake and the scripts: the flags of
    cmake/warnings.txt above its [pending] line."""
    flags = []
    with open(os.path.join(HERE, "cmake", "warnings.txt")) as f:
        for line in f:
            line = line.strip()
            if line == "[pending]":
                break
            if line.startswith("-"):
                flags.append(line)
    return flags


# What Cython's generated _core.c (and the Python / numpy headers it
# includes) trips in the strict set: not ours to fix, so off for that file.
GENERATED_OFF = ["-Wno-shadow", "-Wno-cast-qual", "-Wno-undef", "-Wno-redundant-decls",
                 "-Wno-strict-prototypes", "-Wno-missing-prototypes", "-Wno-unused-function",
                 "-Wno-unreachable-code", "-Wno-unused-parameter"]

if sys.platform == "win32":
    cflags = ["/O2"]
else:
    # -g0: no debug info in what users install (it was 83% of the module).
    cflags = ["-O3", "-g0", "-std=c99", "-fvisibility=hidden"]
    if os.environ.get("GRULITE_WERROR"):
        cflags += strict_warnings() + ["-Werror"]


class BuildExt(build_ext):
    """With GRULITE_WERROR, relaxes the strict set for the generated source only."""

    def build_extensions(self):
        if os.environ.get("GRULITE_WERROR") and sys.platform != "win32":
            compile_one = self.compiler._compile

            def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
                if os.path.basename(src) == "_core.c":
                    extra_postargs = list(extra_postargs) + GENERATED_OFF
                compile_one(obj, src, ext, cc_args, extra_postargs, pp_opts)

            self.compiler._compile = _compile
        super().build_extensions()


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
                            compiler_directives={"embedsignature": True}),
      cmdclass={"build_ext": BuildExt})
