#!/usr/bin/env bash
# Builds and runs the C core tests (no Python needed).  From the repo root:
#
#     bash tests/c/run.sh                 # build with the strict warning set
#                                         # (cmake/warnings.txt), -Werror, run
#     VALGRIND=1 bash tests/c/run.sh      # also run once under valgrind memcheck
#     SANITIZE=1 bash tests/c/run.sh      # also an ASan + UBSan build (gcc / clang)
#
# CC (default cc) and BUILD_DIR (default: a temporary directory, removed
# afterwards) may be set.  Fixtures: tests/c/fixtures, written by
# tools/make_c_fixtures.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CC="${CC:-cc}"
if [ -n "${BUILD_DIR:-}" ]; then
    mkdir -p "$BUILD_DIR"
else
    BUILD_DIR="$(mktemp -d)"
    trap 'rm -rf "$BUILD_DIR"' EXIT
fi
FIXTURES="tests/c/fixtures"
# test_core: the harness and one file per area (tests/c/test_main.c lists them).
TEST_SOURCES=(tests/c/harness.c tests/c/test_*.c)
# The strict warning set, shared with CMake, setup.py and tools/sanitize.sh.
mapfile -t WARNINGS < <(sed -n '/^\[pending\]/q; /^-/p' cmake/warnings.txt)
CFLAGS=(-std=c99 -O2 "${WARNINGS[@]}" -Werror -Iinclude)

echo "== build ($CC)"
"$CC" "${CFLAGS[@]}" src/core/*.c src/core/*/*.c "${TEST_SOURCES[@]}" -lm -lpthread -o "$BUILD_DIR/test_core"

echo "== run"
"$BUILD_DIR/test_core" "$FIXTURES"

echo "== the library's printf against the C library's (tests/c/message_check.c)"
# Every conversion the core writes is one src/core/message.c knows (the
# compiler checks them against printf's, a larger set).
unknown=$(grep -rhoE '%[-0]?[0-9]*(\.[0-9]+)?(ll|l|z|hh|h)?[a-zA-Z%]' src/core --include='*.c' |
          grep -vxE '%[-0]?[0-9]*(\.[0-9]+)?(ll|l|z)?[diuxspgc%]' || true)
if [ -n "$unknown" ]; then
    echo "conversions src/core/message.c does not implement: $unknown" >&2
    exit 1
fi
"$CC" "${CFLAGS[@]}" -Isrc/core tests/c/message_check.c src/core/message.c -lm -o "$BUILD_DIR/message_check"
"$BUILD_DIR/message_check"

# Fuzzing regressions: every input in tests/c/fuzz_regress/<target>/ (a
# crash a fuzz target found, tools/fuzz/README.md) replayed through that
# target's checks, with a plain main() instead of libFuzzer.
REGRESS_TARGETS=()
for t in load forward; do
    if [ -n "$(ls -A "tests/c/fuzz_regress/$t" 2>/dev/null)" ]; then REGRESS_TARGETS+=("$t"); fi
done
for t in ${REGRESS_TARGETS[@]+"${REGRESS_TARGETS[@]}"}; do
    echo "== fuzz regressions: $t"
    "$CC" "${CFLAGS[@]}" src/core/*.c src/core/*/*.c "tools/fuzz/fuzz_$t.c" tools/fuzz/replay.c -lm -lpthread \
          -o "$BUILD_DIR/replay_$t"
    "$BUILD_DIR/replay_$t" "tests/c/fuzz_regress/$t"
done

if [ "${VALGRIND:-0}" = "1" ]; then
    if command -v valgrind >/dev/null 2>&1; then
        echo "== valgrind memcheck"
        valgrind --tool=memcheck --leak-check=full --show-leak-kinds=all \
                 --errors-for-leak-kinds=all --error-exitcode=99 --quiet \
                 "$BUILD_DIR/test_core" "$FIXTURES"
    else
        echo "== valgrind not found; skipped"
    fi
fi

if [ "${SANITIZE:-0}" = "1" ]; then
    echo "== ASan + UBSan build"
    "$CC" "${CFLAGS[@]}" -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=all -DGRULITE_TEST_SANITIZE src/core/*.c src/core/*/*.c "${TEST_SOURCES[@]}" -lm -lpthread \
          -o "$BUILD_DIR/test_core_san"
    "$BUILD_DIR/test_core_san" "$FIXTURES"
    "$CC" "${CFLAGS[@]}" -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=all -Isrc/core tests/c/message_check.c src/core/message.c -lm \
          -o "$BUILD_DIR/message_check_san"
    "$BUILD_DIR/message_check_san"
    for t in ${REGRESS_TARGETS[@]+"${REGRESS_TARGETS[@]}"}; do
        "$CC" "${CFLAGS[@]}" -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=all src/core/*.c src/core/*/*.c "tools/fuzz/fuzz_$t.c" tools/fuzz/replay.c \
              -lm -lpthread -o "$BUILD_DIR/replay_${t}_san"
        "$BUILD_DIR/replay_${t}_san" "tests/c/fuzz_regress/$t"
    done
fi
