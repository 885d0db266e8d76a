#!/usr/bin/env bash
# Bounded fuzzing of every target (tools/fuzz/README.md).  From anywhere:
#
#     tools/fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs (default all): load forward (C,
# libFuzzer + ASan + UBSan, leak detection on) and the Python importers of
# grulite's registry, grulite.importers.IMPORTERS (npz pt safetensors onnx
# keras; atheris, a plain mutation loop without it).
# Exits non-zero when a target finds a crash (its input is kept under
# $FUZZ_DIR/artifacts and its log is printed) or cannot be built.
#
# Environment:
#   FUZZ_DIR           work directory (builds, seeds, corpora, artifacts,
#                      logs); kept.  Default: a temporary one, removed unless
#                      something crashed.
#   FUZZ_JOBS          targets run at once (default: CPUs, at most 2)
#   CC_FUZZ            clang to build the C targets with (default clang)
#   PYTHON             Python with numpy (default python3)
#   GRULITE_PYTHONPATH a grulite build to fuzz (default: built here, privately)
#   GRULITE_FUZZ_NO_ATHERIS=1   force the plain mutation loop
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SECS="${1:-60}"
shift || true
PY="${PYTHON:-python3}"
CC_FUZZ="${CC_FUZZ:-clang}"
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
JOBS="${FUZZ_JOBS:-$(( ncpu < 2 ? 1 : 2 ))}"

if [ -n "${FUZZ_DIR:-}" ]; then
    WORK="$FUZZ_DIR"; KEEP=1
else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/grulite-fuzz.XXXXXX")"; KEEP=0
fi
mkdir -p "$WORK"/{bin,corpus,artifacts,logs}
WORK="$(cd "$WORK" && pwd)"
t_start=$(date +%s)

# ---- A private grulite build for Python: the importer targets come from its registry
PYLIB="${GRULITE_PYTHONPATH:-}"
if [ -z "$PYLIB" ]; then
    PYLIB="$WORK/pylib"
    echo "== build grulite for Python (private: $PYLIB)"
    "$PY" setup.py -q build_ext --build-lib "$PYLIB" --build-temp "$WORK/pybuild" \
        >"$WORK/logs/pybuild.log" 2>&1 || { cat "$WORK/logs/pybuild.log"; exit 2; }
    (cd src && find grulite \( -name '*.py' -o -name py.typed \) -exec cp --parents {} "$PYLIB/" \;)
    cp -r src/grulite/data "$PYLIB/grulite/"
fi
PY_TARGETS=$(PYTHONPATH="$PYLIB" "$PY" tools/fuzz/fuzz_importer.py --list) ||
    { echo "run.sh: cannot list the importers (tools/fuzz/fuzz_importer.py --list)" >&2; exit 2; }
# shellcheck disable=SC2206
ALL=(load forward $PY_TARGETS)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi
is_c() { [ "$1" = load ] || [ "$1" = forward ]; }
want_c=0; want_py=0
for t in "${TARGETS[@]}"; do
    case " ${ALL[*]} " in *" $t "*) ;; *) echo "run.sh: unknown target $t (${ALL[*]})" >&2; exit 2;; esac
    if is_c "$t"; then want_c=1; else want_py=1; fi
done

# ---- C targets: clang with libFuzzer -------------------------------------------
FUZZ_FLAGS=(-std=c99 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined,float-cast-overflow
            -fno-sanitize-recover=all -Iinclude)
if [ "$want_c" = 1 ]; then
    if ! command -v "$CC_FUZZ" >/dev/null 2>&1 && [ "$CC_FUZZ" = clang ] &&
            command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing clang"
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null 2>&1 || true
    fi
    echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
        > "$WORK/bin/probe.c"
    if ! "$CC_FUZZ" -fsanitize=fuzzer,address "$WORK/bin/probe.c" -o "$WORK/bin/probe" 2>/dev/null; then
        ver=$("$CC_FUZZ" --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
        if [ -n "$ver" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "== installing libclang-rt-$ver-dev (libFuzzer runtime)"
            apt-get update -qq >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-$ver-dev" >/dev/null 2>&1 ||
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-$ver-dev" >/dev/null 2>&1 || true
        fi
        if ! "$CC_FUZZ" -fsanitize=fuzzer,address "$WORK/bin/probe.c" -o "$WORK/bin/probe"; then
            echo "run.sh: $CC_FUZZ cannot build libFuzzer targets (install clang and its runtime," \
                 "e.g. apt-get install clang libclang-rt-14-dev)" >&2
            exit 2
        fi
    fi
    # The core and both targets compiled once (largest files first, JOBS at
    # a time), then each target linked with libFuzzer's main.
    echo "== build fuzz_load, fuzz_forward ($CC_FUZZ, libFuzzer + ASan + UBSan)"
    mkdir -p "$WORK/obj"
    obj() { echo "$WORK/obj/$(echo "${1%.c}" | tr / _).o"; }
    core_objs=()
    for src in src/core/*.c src/core/*/*.c; do core_objs+=("$(obj "$src")"); done
    running=0; failed=0
    # shellcheck disable=SC2012
    for src in $(ls -S src/core/*.c src/core/*/*.c tools/fuzz/fuzz_load.c tools/fuzz/fuzz_forward.c); do
        "$CC_FUZZ" "${FUZZ_FLAGS[@]}" -c "$src" -o "$(obj "$src")" &
        running=$((running + 1))
        if [ "$running" -ge "$JOBS" ]; then wait -n || failed=1; running=$((running - 1)); fi
    done
    while [ "$running" -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
    [ "$failed" = 0 ] || { echo "run.sh: build of the fuzz targets failed" >&2; exit 2; }
    for t in load forward; do
        "$CC_FUZZ" "${FUZZ_FLAGS[@]}" "${core_objs[@]}" "$(obj "tools/fuzz/fuzz_$t.c")" -lm -lpthread \
            -o "$WORK/bin/fuzz_$t" || { echo "run.sh: build of fuzz_$t failed" >&2; exit 2; }
    done
fi

# ---- Python: atheris, seeds ---------------------------------------------------
if [ "$want_py" = 1 ] && [ "${GRULITE_FUZZ_NO_ATHERIS:-0}" = 0 ] &&
        ! "$PY" -c "import atheris" 2>/dev/null; then
    echo "== pip install atheris"
    if ! "$PY" -m pip install -q atheris >"$WORK/logs/atheris.log" 2>&1; then
        echo "   atheris did not install (see $WORK/logs/atheris.log);" \
             "the Python targets use the plain mutation loop"
        export GRULITE_FUZZ_NO_ATHERIS=1
    fi
fi
echo "== seeds"
PYTHONPATH="$PYLIB" "$PY" tools/fuzz/make_seeds.py "$WORK/seeds" ||
    { echo "run.sh: make_seeds.py failed" >&2; exit 2; }

# ---- Run -----------------------------------------------------------------------
run_target() {
    local t="$1" log="$WORK/logs/$1.log" rc
    mkdir -p "$WORK/corpus/$t" "$WORK/seeds/$t"
    local args=(-max_total_time="$SECS" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1
                -artifact_prefix="$WORK/artifacts/$t-" "$WORK/corpus/$t" "$WORK/seeds/$t")
    local t0; t0=$(date +%s)
    if is_c "$t"; then
        "$WORK/bin/fuzz_$t" "${args[@]}" >"$log" 2>&1
    else
        PYTHONPATH="$PYLIB" KERAS_BACKEND="${KERAS_BACKEND:-torch}" \
            "$PY" tools/fuzz/fuzz_importer.py "$t" "${args[@]}" >"$log" 2>&1
    fi
    rc=$?
    echo "$rc $(( $(date +%s) - t0 ))" >"$WORK/logs/$t.rc"
}

echo "== fuzzing ${TARGETS[*]}: ${SECS} s each, $JOBS at a time"
running=0
for t in "${TARGETS[@]}"; do
    run_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

# ---- Report ----------------------------------------------------------------------
failed=0
printf '%-12s %-8s %12s %8s %6s\n' target result executions exec/s secs
for t in "${TARGETS[@]}"; do
    read -r rc secs <"$WORK/logs/$t.rc"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/logs/$t.log" | tail -1)
    if [ "$rc" = 0 ]; then result=ok
    elif [ "$rc" = 3 ] && ! is_c "$t"; then result=skipped
    else result=CRASH; failed=1
    fi
    printf '%-12s %-8s %12s %8s %6s\n' "$t" "$result" "${execs:--}" "${rate:--}" "$secs"
    [ "$result" = skipped ] && sed -n '1p' "$WORK/logs/$t.log" | sed 's/^/    /'
done
for t in "${TARGETS[@]}"; do
    read -r rc _ <"$WORK/logs/$t.rc"
    if [ "$rc" != 0 ] && [ "$rc" != 3 ] || { [ "$rc" = 3 ] && is_c "$t"; }; then
        echo "---- $t: last lines of $WORK/logs/$t.log"
        tail -n 60 "$WORK/logs/$t.log"
    fi
done
echo "fuzzing took $(( $(date +%s) - t_start )) s in all"
if [ "$failed" = 1 ]; then
    echo "CRASH: inputs kept in $WORK/artifacts/ (tools/fuzz/README.md: turning a crash into a regression test)"
    ls -l "$WORK/artifacts/"
    exit 1
fi
[ "$KEEP" = 0 ] && rm -rf "$WORK"
exit 0
