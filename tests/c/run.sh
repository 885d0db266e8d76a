#!/usr/bin/env bash
# Builds and runs the C core tests (no Python needed).  From the repo root:
#
#     bash tests/c/run.sh                 # build with the strict warning set
#                                         # (cmake/warnings.txt), -Werror, run
#     VALGRIND=1 bash tests/c/run.sh      # also run once under valgrind memcheck
#     SANITIZE=1 bash tests/c/run.sh      # also an ASan + UBSan build (gcc / clang)
#     SANITIZE=1 PLAIN=0 bash tests/c/run.sh   # the ASan + UBSan build only (.ci/run:
#                                         # CMake's ctest runs the plain tests there)
#
# CC (default cc), BUILD_DIR (default: a temporary directory, removed
# afterwards) and JOBS (compilers run at once; default: the CPUs) may be set.
# Each build compiles every file once, JOBS at a time, and links test_core
# and the fuzz regression replays from the same objects.  Fixtures:
# tests/c/fixtures, written by tools/make_c_fixtures.py.
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

JOBS="${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}"
CORE_SOURCES=(src/core/*.c src/core/*/*.c)

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
REPLAY_SOURCES=()
for t in ${REGRESS_TARGETS[@]+"${REGRESS_TARGETS[@]}"}; do REPLAY_SOURCES+=("tools/fuzz/fuzz_$t.c"); done
[ "${#REPLAY_SOURCES[@]}" -gt 0 ] && REPLAY_SOURCES+=(tools/fuzz/replay.c)

obj() { echo "$1/$(echo "${2%.c}" | tr / _).o"; }

# build DIR FLAGS...: the core, the tests and the replays compiled into DIR
# (largest files first, JOBS at a time), then test_core and replay_<target>
# linked there.
build() {
    local dir="$1"; shift
    mkdir -p "$dir"
    local running=0 failed=0 src
    # shellcheck disable=SC2012
    for src in $(ls -S "${CORE_SOURCES[@]}" "${TEST_SOURCES[@]}" ${REPLAY_SOURCES[@]+"${REPLAY_SOURCES[@]}"}); do
        "$CC" "$@" -c "$src" -o "$(obj "$dir" "$src")" &
        running=$((running + 1))
        if [ "$running" -ge "$JOBS" ]; then wait -n || failed=1; running=$((running - 1)); fi
    done
    while [ "$running" -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
    [ "$failed" = 0 ] || { echo "tests/c/run.sh: compilation failed ($CC $*)" >&2; exit 1; }
    local core_objs=() test_objs=()
    for src in "${CORE_SOURCES[@]}"; do core_objs+=("$(obj "$dir" "$src")"); done
    for src in "${TEST_SOURCES[@]}"; do test_objs+=("$(obj "$dir" "$src")"); done
    "$CC" "$@" "${core_objs[@]}" "${test_objs[@]}" -lm -lpthread -o "$dir/test_core"
    for t in ${REGRESS_TARGETS[@]+"${REGRESS_TARGETS[@]}"}; do
        "$CC" "$@" "${core_objs[@]}" "$(obj "$dir" "tools/fuzz/fuzz_$t.c")" "$(obj "$dir" tools/fuzz/replay.c)" \
              -lm -lpthread -o "$dir/replay_$t"
    done
}

# run DIR: test_core and the fuzz regressions of the build in DIR.
run() {
    "$1/test_core" "$FIXTURES"
    for t in ${REGRESS_TARGETS[@]+"${REGRESS_TARGETS[@]}"}; do
        echo "== fuzz regressions: $t"
        "$1/replay_$t" "tests/c/fuzz_regress/$t"
    done
}

if [ "${PLAIN:-1}" != 0 ]; then
    echo "== build ($CC)"
    build "$BUILD_DIR/plain" "${CFLAGS[@]}"
    echo "== run"
    run "$BUILD_DIR/plain"
elif [ "${VALGRIND:-0}" = 1 ]; then
    echo "tests/c/run.sh: VALGRIND=1 runs the plain build; not with PLAIN=0" >&2
    exit 2
fi

if [ "${VALGRIND:-0}" = "1" ]; then
    if command -v valgrind >/dev/null 2>&1; then
        echo "== valgrind memcheck"
        valgrind --tool=memcheck --leak-check=full --show-leak-kinds=all \
                 --errors-for-leak-kinds=all --error-exitcode=99 --quiet \
                 "$BUILD_DIR/plain/test_core" "$FIXTURES"
    else
        echo "== valgrind not found; skipped"
    fi
fi

if [ "${SANITIZE:-0}" = "1" ]; then
    echo "== ASan + UBSan build"
    build "$BUILD_DIR/san" "${CFLAGS[@]}" -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=all -DGRULITE_TEST_SANITIZE
    run "$BUILD_DIR/san"
    "$CC" "${CFLAGS[@]}" -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=all -Isrc/core tests/c/message_check.c src/core/message.c -lm \
          -o "$BUILD_DIR/message_check_san"
    "$BUILD_DIR/message_check_san"
fi
