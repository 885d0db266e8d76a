#!/usr/bin/env python3
"""The edge footprint tables of docs/edge.md and the README.

1. Library size per target: text + data of libgrulite.a built at -Os
   (CMake's MinSizeRel), hosted and with no operating system
   (GRULITE_NO_OS), summed over its objects with the target's `size`.  A
   program links only the objects (with -ffunction-sections, only the
   functions) it uses, so these are upper bounds for what lands in flash.
2. Memory per model: one GRU layer, 16 inputs, H = 32 / 64 / 128, in each
   weight dtype, B = 1.  Flash is the .grl image (the emitted C array);
   RAM is what the library's own queries ask for beside it: the model's
   descriptors (grulite_model_mem_size) and a one-step stream
   (grulite_stream_mem_size), and, for whole sequences, a workspace for 100
   steps (grulite_workspace_mem_size).  Measured by tools/footprint/edge_ram.c
   built for this 64-bit host and for 32-bit ARM (run under qemu-arm; a
   Cortex-M4 has the same sizes: both are ILP32 with the same alignment).
   The stack is not in these: the Cortex-M4 example reports its own.

    python3 tools/edge_footprint.py            # writes tools/footprint/edge.md

Needs cmake and the cross compilers of tools/*.cmake (targets whose
compiler is missing are skipped and said so), qemu-arm for the 32-bit
column, and grulite importable (it makes the models).  Timings under qemu
are not measurements: this script measures sizes only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "footprint", "edge.md")

TARGETS = (  # name, toolchain file (None: this host), C compiler, hosted build too
    ("x86-64 (this host)", None, "cc", True),
    ("aarch64", "tools/aarch64.cmake", "aarch64-linux-gnu-gcc", True),
    ("armv7 (NEON)", "tools/armv7.cmake", "arm-linux-gnueabihf-gcc", True),
    ("riscv64", "tools/riscv64.cmake", "riscv64-linux-gnu-gcc", True),
    ("Cortex-M4F", "tools/cortex-m4.cmake", "arm-none-eabi-gcc", False),
)
HIDDEN = (32, 64, 128)
INPUTS = 16
DTYPES = ("float32", "float16", "int8")


def run(cmd, **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def size_tool(cc: str) -> str:
    return "size" if cc == "cc" else cc[: -len("gcc")] + "size"


def library_bytes(toolchain, cc: str, no_os: bool, work: str) -> int:
    """text + data of libgrulite.a at -Os."""
    build = os.path.join(work, f"lib-{os.path.basename(toolchain or 'host')}-{int(no_os)}")
    args = ["cmake", "-S", REPO, "-B", build, "-DCMAKE_BUILD_TYPE=MinSizeRel",
            "-DGRULITE_BUILD_TESTS=OFF", "-DGRULITE_BUILD_EXAMPLES=OFF",
            "-DGRULITE_BUILD_SHARED=OFF", "-DGRULITE_INSTALL=OFF",
            f"-DGRULITE_NO_OS={'ON' if no_os else 'OFF'}"]
    if toolchain:
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={os.path.join(REPO, toolchain)}")
    run(args)
    run(["cmake", "--build", build, "--target", "grulite_static", "-j2"])
    out = run([size_tool(cc), os.path.join(build, "libgrulite.a")])
    total = 0
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) >= 2 and f[0].isdigit():
            total += int(f[0]) + int(f[1])
    return total


def make_models(work: str) -> list:
    import grulite

    rng = np.random.default_rng(0)
    paths = []
    for H in HIDDEN:
        layer = {"weight_ih": rng.standard_normal((3 * H, INPUTS)).astype(np.float32) * 0.1,
                 "weight_hh": rng.standard_normal((3 * H, H)).astype(np.float32) * 0.1,
                 "bias_ih": np.zeros(3 * H, np.float32), "bias_hh": np.zeros(3 * H, np.float32)}
        for dtype in DTYPES:
            path = os.path.join(work, f"h{H}_{dtype}.grl")
            grulite.from_arrays([layer], dtype=dtype).save(path)
            paths.append((H, dtype, path))
    return paths


def ram(cc: str, paths: list, work: str, emulator=()) -> dict:
    exe = os.path.join(work, f"edge_ram-{os.path.basename(cc)}")
    sources = [os.path.join(REPO, "tools", "footprint", "edge_ram.c")]
    for d in ("", "engine", "format", "kernels", "layers"):
        base = os.path.join(REPO, "src", "core", d)
        sources += [os.path.join(base, f) for f in sorted(os.listdir(base)) if f.endswith(".c")]
    flags = ["-std=c99", "-O1", "-I", os.path.join(REPO, "include")]
    if cc != "cc":
        flags += ["-static", "-mfpu=neon-vfpv4", "-mfloat-abi=hard", "-mfp16-format=ieee"]
    run([cc, *flags, *sources, "-o", exe, "-lm", "-lpthread"])
    out = run([*emulator, exe, *[p for _, _, p in paths]])
    res = {}
    for line in out.splitlines():
        path, image, model, stream, ws = line.split()
        res[path] = (int(image), int(model), int(stream), int(ws))
    return res


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def main() -> int:
    work = tempfile.mkdtemp(prefix="grulite-edge-")
    lines = ["# Edge footprint (tools/edge_footprint.py)", ""]
    try:
        lines += ["## Library, text + data at -Os (libgrulite.a, every object)", "",
                  "| target | hosted | no OS (GRULITE_NO_OS) |", "|---|---|---|"]
        for name, toolchain, cc, hosted in TARGETS:
            if not shutil.which(cc):
                lines.append(f"| {name} | ({cc} not installed) | |")
                continue
            h = kib(library_bytes(toolchain, cc, False, work)) if hosted else "-"
            n = kib(library_bytes(toolchain, cc, True, work))
            lines.append(f"| {name} | {h} | {n} |")
            print(lines[-1], flush=True)

        paths = make_models(work)
        r64 = ram("cc", paths, work)
        r32 = None
        if shutil.which("arm-linux-gnueabihf-gcc") and shutil.which("qemu-arm"):
            r32 = ram("arm-linux-gnueabihf-gcc", paths, work,
                      ("qemu-arm", "-L", "/usr/arm-linux-gnueabihf"))
        lines += ["", f"## Memory per model: 1 GRU layer, {INPUTS} inputs, B = 1", "",
                  "Flash: the .grl image.  RAM beside it: the model's descriptors plus a "
                  "one-step stream (a microcontroller's loop), and a workspace for one "
                  "100-step sequence instead of the stream.  32-bit: armv7 and Cortex-M4; "
                  "64-bit: x86-64, aarch64, riscv64.", "",
                  "| H | dtype | flash | RAM, stream, 32-bit | RAM, stream, 64-bit | "
                  "RAM, 100 steps, 32-bit |", "|---|---|---|---|---|---|"]
        for H, dtype, path in paths:
            image, m64, s64, _ = r64[path]
            if r32:
                _, m32, s32, w32 = r32[path]
                c32, w = f"{m32 + s32:,} B ({m32:,} + {s32:,})", f"{m32 + w32:,} B"
            else:
                c32, w = "(no qemu-arm)", "-"
            lines.append(f"| {H} | {dtype} | {image:,} B | {c32} | {m64 + s64:,} B "
                         f"({m64:,} + {s64:,}) | {w} |")
            print(lines[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
