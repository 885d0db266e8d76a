#!/usr/bin/env bash
# The sanitizer gate: AddressSanitizer + UndefinedBehaviorSanitizer and
# valgrind over the C core, and the Python test suite against an ASan +
# UBSan build of the extension.  From anywhere:
#
#     tools/sanitize.sh
#
# Steps (each timed; the script exits non-zero on any sanitizer or valgrind
# report, and on any test failure):
#
#   1. the C tests (tests/c/harness.c, tests/c/test_*.c) and the core, -fsanitize=address,undefined
#      -fno-sanitize-recover=all, with clang and with gcc (those installed),
#      leak detection on; then the fuzz regression inputs
#      (tests/c/fuzz_regress/) through the fuzz targets, same flags.
#   2. valgrind memcheck (--leak-check=full, every error fatal) on a plain
#      -O1 -g build of the same, and on the regression inputs; with step 3
#      to run, in the background beside the extension's build (both use
#      one core), its output printed after that build.
#   3. the extension built with gcc -fsanitize=address,undefined in a
#      private directory (never in place), and
#      `python -m pytest -q tests -x -p no:cacheprovider` against it with
#      gcc's libasan preloaded (and libstdc++, so that C++ extensions such as
#      torch's can throw), ASAN_OPTIONS=detect_leaks=0 (CPython keeps its
#      objects at exit by design).  ASan reports of any process, children
#      included, go to files that are checked at the end; UBSan (whose gcc
#      runtime ignores log_path next to ASan) and ASan print on the console,
#      as pytest captures only Python's sys.stdout / sys.stderr
#      (--capture=sys): a sanitizer that stops the run is seen.
#
#      Deselected: the tests whose child processes cap their address space
#      with RLIMIT_AS (marked caps_address_space: test_hostile_sizes.py and
#      the test_hostile_file matrix of test_hostile_<importer>.py): ASan
#      reserves terabytes of shadow memory and cannot start under such a cap.  GRULITE_SANITIZE=asan is exported for
#      tests that want to adapt instead.
#
#      Not run here either (SANITIZE_PYTHON_TESTS=all runs them): the test
#      files listed in NO_NEW_C below, which reach no line and no branch of
#      the extension (the C core and the Cython binding) that the other files
#      do not.  They test the command line in child processes, the live
#      Keras / torch.onnx / dask references, the Python importers' parsing,
#      the C emitter (whose programs are built without sanitizers) and the
#      import cost: Python that ASan does not instrument.  Measured on a
#      --coverage build of the extension with the other files' runs unioned
#      (gcov lines and branches; 6 lines of the Cython type's GC clear
#      function, reached when the collector happens to break a cycle, were
#      the only difference); they took 80 of the step's 250 s.  Recheck
#      the list when a listed file gains tests of new C paths.
#
# Environment: PYTHON (default python3); SANITIZE_DIR (work directory, kept;
# default a temporary one); SANITIZE_PYTEST_ARGS (replaces "tests" and the
# deselections, e.g. "tests/test_format.py -k hostile"); SANITIZE_PYTHON_TESTS
# (all: the NO_NEW_C files too); SANITIZE_SKIP (space-separated step names
# to skip: c, valgrind, python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VG_PID=
if [ -n "${SANITIZE_DIR:-}" ]; then
    WORK="$SANITIZE_DIR"; mkdir -p "$WORK"; WORK="$(cd "$WORK" && pwd)"; KEEP=1
else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/grulite-sanitize.XXXXXX")"; KEEP=0
fi
# shellcheck disable=SC2317
cleanup() {
    if [ -n "$VG_PID" ]; then kill -- -"$VG_PID" 2>/dev/null || true; fi
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
SKIP=" ${SANITIZE_SKIP:-} "
FIXTURES=tests/c/fixtures
REGRESS=tests/c/fuzz_regress
TEST_SOURCES=(tests/c/harness.c tests/c/test_*.c)
# float-cast-overflow: part of clang's "undefined", not of gcc's.
SAN=(-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all
     -fno-omit-frame-pointer -g -O1)
# The strict warning set, shared with CMake, setup.py and tests/c/run.sh.
mapfile -t WARNINGS < <(sed -n '/^\[pending\]/q; /^-/p' cmake/warnings.txt)
WARN=(-std=c99 "${WARNINGS[@]}" -Werror -Iinclude)
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
TIMES=()
t_all=$(date +%s)

step_begin() { echo "== $1"; t0=$(date +%s); }
step_end() { TIMES+=("$(printf '%-44s %4d s' "$1" $(( $(date +%s) - t0 )))"); }

# The regression inputs of each fuzz target, if any.
regress_dirs() {
    for t in load forward; do
        if [ -d "$REGRESS/$t" ] && [ -n "$(ls -A "$REGRESS/$t" 2>/dev/null)" ]; then echo "$t"; fi
    done
}

# build_c DIR CC FLAGS...: the core, the C tests and the fuzz regression
# replays compiled once into DIR (largest files first, two at a time), then
# DIR/test_core and DIR/replay_<target> linked from those objects.
build_c() {
    local dir="$1" cc="$2"; shift 2
    mkdir -p "$dir"
    local core=(src/core/*.c src/core/*/*.c) extra=() running=0 failed=0 src t
    for t in $(regress_dirs); do extra+=("tools/fuzz/fuzz_$t.c"); done
    [ "${#extra[@]}" = 0 ] || extra+=(tools/fuzz/replay.c)
    c_obj() { echo "$dir/$(echo "${1%.c}" | tr / _).o"; }
    # shellcheck disable=SC2012
    for src in $(ls -S "${core[@]}" "${TEST_SOURCES[@]}" ${extra[@]+"${extra[@]}"}); do
        "$cc" "$@" -c "$src" -o "$(c_obj "$src")" &
        running=$((running + 1))
        if [ "$running" -ge 2 ]; then wait -n || failed=1; running=$((running - 1)); fi
    done
    while [ "$running" -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
    [ "$failed" = 0 ] || { echo "sanitize.sh: compilation failed ($cc $*)" >&2; exit 1; }
    local core_objs=() test_objs=()
    for src in "${core[@]}"; do core_objs+=("$(c_obj "$src")"); done
    for src in "${TEST_SOURCES[@]}"; do test_objs+=("$(c_obj "$src")"); done
    "$cc" "$@" "${core_objs[@]}" "${test_objs[@]}" -lm -lpthread -o "$dir/test_core"
    for t in $(regress_dirs); do
        "$cc" "$@" "${core_objs[@]}" "$(c_obj "tools/fuzz/fuzz_$t.c")" "$(c_obj tools/fuzz/replay.c)" -lm -lpthread \
            -o "$dir/replay_$t"
    done
}

# ---- 1. C core: ASan + UBSan ---------------------------------------------------
if [[ "$SKIP" != *" c "* ]]; then
    compilers=()
    for cc in clang gcc; do command -v "$cc" >/dev/null 2>&1 && compilers+=("$cc"); done
    [ "${#compilers[@]}" -gt 0 ] || { echo "sanitize.sh: neither clang nor gcc found" >&2; exit 2; }
    for cc in "${compilers[@]}"; do
        step_begin "C tests, $cc ASan + UBSan, leak detection on"
        build_c "$WORK/c_$cc" "$cc" "${WARN[@]}" "${SAN[@]}"
        "$WORK/c_$cc/test_core" "$FIXTURES" >"$WORK/test_core_$cc.log" 2>&1 ||
            { cat "$WORK/test_core_$cc.log"; echo "sanitize.sh: C tests failed under $cc ASan/UBSan" >&2; exit 1; }
        tail -n 1 "$WORK/test_core_$cc.log"
        for t in $(regress_dirs); do
            "$WORK/c_$cc/replay_$t" "$REGRESS/$t"
        done
        step_end "C tests, $cc ASan+UBSan"
    done
fi

# ---- 2. C core: valgrind ---------------------------------------------------------
# With step 3 to run: this script again for step 2 alone, in the background
# (its own process group), beside the extension's build, which compiles on
# one core; its output is printed when that build is done, and its failure
# is this script's.
if [[ "$SKIP" != *" valgrind "* && "$SKIP" != *" python "* ]]; then
    echo "== C tests under valgrind memcheck: beside the Python extension's build (output after it)"
    SANITIZE_SKIP="c python" SANITIZE_DIR="$WORK/valgrind" setsid bash "${BASH_SOURCE[0]}" \
        >"$WORK/valgrind.log" 2>&1 &
    VG_PID=$!
    SKIP="$SKIP valgrind "
fi
if [[ "$SKIP" != *" valgrind "* ]]; then
    step_begin "C tests under valgrind memcheck"
    if ! command -v valgrind >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get update -qq >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
        else
            echo "sanitize.sh: valgrind is not installed" >&2; exit 2
        fi
    fi
    VG=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=full
        --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible
        --track-origins=yes --quiet)
    cc=$(command -v gcc || command -v clang)
    build_c "$WORK/c_vg" "$cc" "${WARN[@]}" -g -O1
    # The activation matrix in full runs in the other builds (plain, ASan).
    GRULITE_TEST_QUICK=1 "${VG[@]}" "$WORK/c_vg/test_core" "$FIXTURES" >"$WORK/test_core_vg.log" 2>&1 ||
        { cat "$WORK/test_core_vg.log"; echo "sanitize.sh: valgrind reported errors" >&2; exit 1; }
    tail -n 1 "$WORK/test_core_vg.log"
    for t in $(regress_dirs); do
        "${VG[@]}" "$WORK/c_vg/replay_$t" "$REGRESS/$t"
    done
    step_end "C tests, valgrind memcheck"
fi

# ---- 3. Python: ASan + UBSan extension, the test suite ---------------------------
if [[ "$SKIP" != *" python "* ]]; then
    step_begin "Python extension, gcc ASan + UBSan (private build)"
    if ! "$PY" -c "import Cython, numpy, pytest, setuptools" 2>/dev/null; then
        "$PY" -m pip install -q cython numpy pytest setuptools
    fi
    # setup.py appends -O3 -g0 after CFLAGS: this wrapper drops them so that
    # reports carry line numbers and -O1 applies.
    cat >"$WORK/cc-san" <<'EOF'
#!/bin/sh
for a; do shift; case "$a" in -g0|-O3) ;; *) set -- "$@" "$a";; esac; done
exec gcc "$@"
EOF
    chmod +x "$WORK/cc-san"
    rm -rf "$WORK/pylib" "$WORK/pybuild"
    CC="$WORK/cc-san" LDSHARED="$WORK/cc-san -shared" CFLAGS="${SAN[*]}" \
        LDFLAGS="-fsanitize=address,undefined,float-cast-overflow" \
        "$PY" setup.py build_ext --build-lib "$WORK/pylib" --build-temp "$WORK/pybuild" \
        >"$WORK/pybuild.log" 2>&1 || { tail -n 40 "$WORK/pybuild.log"; exit 1; }
    mkdir -p "$WORK/pylib/grulite"
    # The package's Python files, subpackages (importers/...) included.
    (cd src/grulite && find . -name '*.py' -o -name py.typed) | while read -r f; do
        mkdir -p "$WORK/pylib/grulite/$(dirname "$f")"
        cp "src/grulite/$f" "$WORK/pylib/grulite/$f"
    done
    cp -r src/grulite/data "$WORK/pylib/grulite/"
    ext=$(ls "$WORK"/pylib/grulite/_core*.so)
    # grep -c reads all of its input: with grep -q and pipefail, ldd or nm
    # killed by SIGPIPE after the match made this check fail at random.
    if [ "$( { ldd "$ext"; nm -D "$ext"; } 2>/dev/null | grep -c -e libasan -e __asan_init)" = 0 ]; then
        echo "sanitize.sh: $ext is not instrumented" >&2; exit 1
    fi
    step_end "Python extension build (ASan+UBSan)"

    if [ -n "$VG_PID" ]; then
        step_begin "C tests under valgrind memcheck (its output; waiting for it)"
        vg_rc=0
        wait "$VG_PID" || vg_rc=$?
        VG_PID=
        sed 's/^/   /' "$WORK/valgrind.log"
        [ "$vg_rc" = 0 ] || { echo "sanitize.sh: the valgrind step failed (above)" >&2; exit 1; }
        step_end "C tests, valgrind memcheck: wait"
    fi

    step_begin "Python tests against it (LD_PRELOAD libasan)"
    rm -rf "$WORK/reports"; mkdir -p "$WORK/reports"
    DESELECT=(-m "not caps_address_space")
    NO_NEW_C=(test_cli test_cli_generate test_dask test_emit_c test_import_cost test_importers test_keras
              test_onnx test_pickle test_safetensors test_sequence_import test_torchfile)
    if [ "${SANITIZE_PYTHON_TESTS:-}" != all ]; then
        for f in "${NO_NEW_C[@]}"; do DESELECT+=("--ignore=tests/$f.py"); done
    fi
    preload="$(gcc -print-file-name=libasan.so)"
    stdcxx="$(gcc -print-file-name=libstdc++.so)"
    [ -e "$stdcxx" ] && preload="$preload $stdcxx"
    # shellcheck disable=SC2086
    set +e
    LD_PRELOAD="$preload" \
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$WORK/reports/asan" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        PYTHONPATH="$WORK/pylib" KERAS_BACKEND="${KERAS_BACKEND:-torch}" GRULITE_SANITIZE=asan \
        "$PY" -m pytest -q ${SANITIZE_PYTEST_ARGS:-tests "${DESELECT[@]}"} -x -p no:cacheprovider --capture=sys
    rc=$?
    set -e
    if [ -n "$(ls -A "$WORK/reports")" ]; then
        for f in "$WORK"/reports/*; do echo "---- $f"; head -n 80 "$f"; done
        echo "sanitize.sh: sanitizer reports from the Python tests (above)" >&2
        exit 1
    fi
    [ "$rc" = 0 ] || { echo "sanitize.sh: the Python tests failed under ASan + UBSan (exit $rc;" \
                            "a run cut short without a pytest summary is a sanitizer report, above)" >&2; exit 1; }
    step_end "Python tests (ASan+UBSan extension)"
fi

echo "== sanitize.sh: clean ($(( $(date +%s) - t_all )) s)"
printf '   %s\n' "${TIMES[@]}"
