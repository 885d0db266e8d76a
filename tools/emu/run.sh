#!/usr/bin/env bash
# The C tests (tests/c, test_core) on emulated x86-64 CPUs with the AVX-512
# kernel sets this machine may lack: Bochs's CPU (bochscpu-python) running a
# static musl build of test_core, one run per CPU model.  From the repo root:
#
#     bash tools/emu/run.sh                        # skylake_x and sapphire_rapids
#     EMU_CPUS=sapphire_rapids bash tools/emu/run.sh
#
# skylake_x: AVX-512 F/CD/BW/DQ/VL without VNNI (the `avx512` set is the one
# it picks; int8 takes AVX2's integer product there).  sapphire_rapids:
# AVX-512 VNNI and BF16 (the `avx512vnni` set).  Each run checks that the
# expected kernel sets run, then test_core with its per-set tests (fixtures'
# numerics and streams, synthetic models against generic, non-finite rows,
# wide int8 inputs, activations, sequence models) on the EMU_ISAS sets.
# Threads do not exist under the emulator (clone fails): thread pools run on
# the calling thread, and the thread tests are left out.  About 5 minutes a
# CPU (Skylake-X 25,449 checks, Sapphire Rapids 28,863).  Correctness only:
# Bochs's timings mean nothing.
#
# Needs: musl-gcc (Debian: musl-tools), a C compiler, Python 3 with venv,
# and pip's bochscpu-python==0.4.0 (installed into EMU_VENV, default
# build/emu-venv, when missing).  BUILD_DIR (default: a temporary directory)
# and EMU_TIMEOUT (seconds per CPU, default 1800) may be set.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CPUS="${EMU_CPUS:-skylake_x sapphire_rapids}"
EMU_VENV="${EMU_VENV:-$ROOT/build/emu-venv}"
EMU_TIMEOUT="${EMU_TIMEOUT:-1800}"
# The kernel sets the per-set tests repeat on (GRULITE_TEST_ISAS): the ones
# this machine may lack; generic is the reference either way, and avx2 runs
# natively in tests/c/run.sh.
EMU_ISAS="${EMU_ISAS:-avx512,avx512vnni}"
if [ -n "${BUILD_DIR:-}" ]; then
    mkdir -p "$BUILD_DIR"
else
    BUILD_DIR="$(mktemp -d)"
    trap 'rm -rf "$BUILD_DIR"' EXIT
fi

command -v musl-gcc >/dev/null 2>&1 || {
    echo "tools/emu/run.sh: musl-gcc is missing (Debian / Ubuntu: apt-get install musl-tools)" >&2
    exit 2
}
if [ ! -x "$EMU_VENV/bin/python" ]; then
    python3 -m venv "$EMU_VENV"
fi
if ! out=$("$EMU_VENV/bin/python" -m pip install -q "bochscpu-python==0.4.0" 2>&1); then
    echo "$out" >&2
    exit 1
fi

echo "== the shim preloaded into the emulator's Python (tools/emu/bochs_shim.c)"
"${CC:-cc}" -shared -fPIC -O2 -Wall -Wextra -Werror tools/emu/bochs_shim.c \
    -o "$BUILD_DIR/libbochs_shim.so" -ldl

echo "== test_core, static, with musl (the same sources and warnings as tests/c/run.sh)"
mapfile -t WARNINGS < <(sed -n '/^\[pending\]/q; /^-/p' cmake/warnings.txt)
musl-gcc -std=c99 -O2 "${WARNINGS[@]}" -Werror -Iinclude -Isrc/core -static \
    src/core/*.c src/core/*/*.c tests/c/harness.c tests/c/test_*.c \
    -o "$BUILD_DIR/test_core" -lm -lpthread

failed=0
for cpu in $CPUS; do
    case "$cpu" in
        skylake_x) want="generic avx2 avx512" ;;
        sapphire_rapids|tigerlake|icelake) want="generic avx2 avx512 avx512vnni" ;;
        *) want="" ;;
    esac
    echo "== test_core on an emulated $cpu"
    log="$BUILD_DIR/$cpu.log"
    t0=$(date +%s)
    rc=0
    timeout "$EMU_TIMEOUT" "$EMU_VENV/bin/python" tools/emu/x86emu.py \
        --shim "$BUILD_DIR/libbochs_shim.so" --cpu "$cpu" \
        --env "GRULITE_TEST_ISAS=$EMU_ISAS" --env GRULITE_TEST_THREADS=0 \
        "$BUILD_DIR/test_core" tests/c/fixtures >"$log" 2>&1 || rc=$?
    grep -E '^(kernel set: |kernel sets this|kernel sets the per-set|FAIL|threads: )|passed, [0-9]+ failed$' "$log" || true
    echo "(exit status $rc, $(( $(date +%s) - t0 )) s)"
    if [ "$rc" != 0 ]; then
        echo "test_core failed on $cpu; the last lines:" >&2
        tail -n 20 "$log" >&2
        failed=1
    elif [ -n "$want" ] && ! grep -qxF "kernel sets this CPU and build run: $want" "$log"; then
        echo "on $cpu the kernel sets that run should be: $want" >&2
        failed=1
    fi
done
exit "$failed"
