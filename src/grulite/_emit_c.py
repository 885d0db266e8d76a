"""A model as C source: the .grl image in a 64-byte aligned constant array,
for programs with no file system (microcontrollers) or that ship one
self-contained binary.

The file defines ``const unsigned char NAME[]`` and ``const size_t
NAME_size``; a C program links it with libgrulite and loads the model with
``grulite_model_load_buffer(NAME, NAME_size, 0, &model, msg, sizeof msg)``,
which borrows the array (no copy; it must stay unchanged, as a constant
does); with no heap (a microcontroller, docs/edge.md),
``grulite_model_load_mem`` does the same in memory the caller gives.
``Model.save_c`` and ``grulite convert --emit-c`` write it.
"""
from __future__ import annotations

import os
import re
from typing import Union

from grulite._errors import GruliteError

__all__ = ["emit_c", "check_c_name"]

_C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef
    union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic
    _Imaginary _Noreturn _Static_assert _Thread_local
""".split())


def check_c_name(name: str) -> str:
    """`name` if it is a C identifier that is not a keyword (nor reserved:
    a leading underscore), else a GruliteError saying why."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) \
            or name in _C_KEYWORDS or len(name) > 63:
        raise GruliteError(f"C array name {name!r} is not a usable C identifier: a letter, then "
                           "letters, digits or _, at most 63 characters, not a C keyword")
    return name


def emit_c(image: bytes, path: Union[str, os.PathLike], name: str, summary: str = "") -> None:
    """Writes `image` (a .grl image) as C source at `path` (atomically: a
    temporary file renamed over it)."""
    check_c_name(name)
    n = len(image)
    lines = [
        f"/* {os.path.basename(os.fspath(path))} - a grulite model compiled in "
        f"({n} bytes, .grl format).",
        " * Written by grulite (grulite convert --emit-c / Model.save_c); do not edit.",
    ]
    for s in summary.splitlines():
        lines.append(f" * {s.replace('*/', '* /')}" if s else " *")
    lines += [
        " *",
        " * Load with (no copy: the array is borrowed):",
        f" *     grulite_model_load_buffer({name}, {name}_size, 0, &model, msg, sizeof msg);",
        " * or, with no heap (docs/edge.md), into mem of grulite_model_mem_size() bytes:",
        f" *     grulite_model_load_mem({name}, {name}_size, mem, sizeof mem, &model, msg, sizeof msg);",
        " */",
        "#include <stddef.h>",
        "",
        "#if defined(_MSC_VER)",
        "#  define GRULITE_MODEL_ALIGN __declspec(align(64))",
        "#else",
        "#  define GRULITE_MODEL_ALIGN __attribute__((aligned(64)))",
        "#endif",
        "",
        f"extern const unsigned char {name}[];",
        f"extern const size_t {name}_size;",
        "",
        "#if defined(_MSC_VER)",
        f"GRULITE_MODEL_ALIGN const unsigned char {name}[{n}] = {{",
        "#else",
        f"const unsigned char {name}[{n}] GRULITE_MODEL_ALIGN = {{",
        "#endif",
    ]
    for i in range(0, n, 16):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in image[i:i + 16]) + ",")
    lines += ["};", f"const size_t {name}_size = {n};", ""]
    target = os.fspath(path)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="ascii", newline="\n") as f:
            f.write("\n".join(lines))
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise OSError(f"cannot write {target!r}: {e.strerror or e}") from None
