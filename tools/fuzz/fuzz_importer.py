#!/usr/bin/env python3
"""atheris fuzz targets for the Python importers.

    python tools/fuzz/fuzz_importer.py TARGET [libFuzzer flags] [CORPUS_DIR... | FILE...]

TARGET is the name of an importer of grulite's registry
(``grulite.importers.IMPORTERS``: npz, pt, safetensors, onnx, keras;
``--list`` prints them), or ``vocab``: the vocabulary file parser
(``grulite._vocab.read_vocab``; what it reads must write back and read
again the same, and encode / decode round-trip plain characters).  Each input is written to a file with the
importer's first extension and imported through the registry, as
``grulite convert`` and the ``grulite.from_*`` functions do; a target whose
optional package (onnx, h5py) is missing is skipped.
The importer may only succeed or raise GruliteError or OSError (which
includes FileNotFoundError); anything else (KeyError, IndexError,
TypeError, struct.error, MemoryError on a small input, RecursionError, a
hang past -timeout, or a crash of the process) is a bug, and the input is
written to <-artifact_prefix>crash-<sha1>.  A model that imports is then
run on a tiny input (whole sequence, head, stream), which must work.

With atheris installed (pip install atheris) this is a coverage-guided
libFuzzer run: every libFuzzer flag works (-max_total_time=60, -runs=N,
-timeout=20, -artifact_prefix=DIR/, -print_final_stats=1, -jobs=N, ...),
and FILE arguments replay those inputs once.  Without atheris, or with
GRULITE_FUZZ_NO_ATHERIS=1, a plain mutation loop takes the same arguments
(-max_total_time, -runs, -seed, -timeout, -artifact_prefix,
-print_final_stats; new inputs are not kept) and prints the same
"stat::number_of_executed_units" line.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import tempfile
import time
import traceback

# Python modules whose code is instrumented for coverage (besides grulite).
INSTRUMENT = ("grulite", "zipfile", "json", "numpy.lib._format_impl", "numpy.lib.format",
              "numpy.lib._npyio_impl", "numpy.lib.npyio", "pickletools")

SKIPPED = 3   # exit status: a dependency of the target is missing


def _targets() -> list:
    """The importers' names, from grulite's registry (imports grulite: call
    it only where instrumentation does not matter)."""
    from grulite.importers import IMPORTERS
    return [imp.name for imp in IMPORTERS] + ["vocab"]


class _VocabTarget:
    """The vocabulary parser as a target shaped like an importer."""
    name = "vocab"
    extensions = (".txt",)
    needs = ()


def _usage(msg: str) -> None:
    sys.stderr.write(f"{msg}\nusage: fuzz_importer.py {{{'|'.join(_targets())}}} "
                     "[libFuzzer flags] [corpus dirs or files]\n"
                     "       fuzz_importer.py --list\n")
    sys.exit(2)


def _load(target: str):
    """grulite, and the registry's importer for `target` with its module
    imported (so that instrumentation covers it)."""
    import importlib

    import grulite
    from grulite.importers import IMPORTERS
    if target == "vocab":
        import grulite._vocab  # noqa: F401  (instrumented with grulite)
        return grulite, _VocabTarget()
    imp = next((i for i in IMPORTERS if i.name == target), None)
    if imp is None:
        _usage(f"fuzz_importer.py: unknown target {target!r}")
    for dep in imp.needs:
        try:
            importlib.import_module(dep)
        except ImportError:
            print(f"fuzz_importer {target}: skipped ({dep} is not installed)")
            sys.exit(SKIPPED)
    imp.load()
    return grulite, imp


def make_test(target: str, instrument: bool):
    """The function that runs one input, and a cleanup function."""
    if instrument:
        import atheris
        with atheris.instrument_imports(include=list(INSTRUMENT)):
            grulite, imp = _load(target)
    else:
        grulite, imp = _load(target)
    import numpy as np

    def importer(p: str):
        if target == "vocab":
            return _vocab_round_trip(p)
        return grulite.from_bytes(imp.image(p)[0])

    ext = imp.extensions[0]
    allowed = (grulite.GruliteError, OSError)
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    tmpdir = tempfile.mkdtemp(prefix=f"grulite-fuzz-{target}-", dir=base)
    path = os.path.join(tmpdir, "input" + ext)

    def exercise(m) -> None:
        if m is None:                     # the vocab target: checked already
            return
        cfg = m.config
        V = cfg.vocab_size
        if V:                             # token ids in (an embedding)
            x = (np.arange(6) % V).reshape((2, 3) if cfg.batch_first else (3, 2))
            step = np.zeros(2, np.int64)
        else:
            x = np.linspace(-1.0, 1.0, 2 * 3 * cfg.input_size, dtype=np.float32)
            x = x.reshape((2, 3, cfg.input_size) if cfg.batch_first else (3, 2, cfg.input_size))
            step = np.zeros((2, cfg.input_size), np.float32)
        kw = {}
        if not V and m.mask_value is not None:
            # Keras' Masking: lengths come from x, which may hold a masked
            # step before an unmasked one (refused); then run x as it is.
            try:
                m.mask_lengths(x, batch_first=cfg.batch_first)
            except grulite.GruliteError:
                pass
            kw = {"lengths": np.full(2, 3)}
        y, h_n = m(x, **kw)
        assert np.asarray(y).shape[-1] == cfg.output_size, (np.asarray(y).shape, cfg)
        if cfg.head:
            m.predict(x, **kw)
        forward_only = not any(l.bidirectional or getattr(l, "reverse", False) for l in cfg.layers)
        if forward_only:
            s = m.stream(batch_size=2)
            s.step(step)
            s.step(step[:1], rows=[1])
            if V and cfg.head_size == V:
                out = m.generate([[0], [V - 1, 0]], max_steps=3)
                assert all(len(o) <= 3 and ((o >= 0) & (o < V)).all() for o in out), out
        m.to_bytes()

    ignore = _ignore_patterns()

    def test_one_input(data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
        try:
            m = importer(path)
        except allowed:
            return
        except Exception as e:
            if _ignored(e, ignore):
                return
            raise
        exercise(m)

    def cleanup() -> None:
        try:
            os.remove(path)
        except OSError:
            pass
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass

    return test_one_input, cleanup


def _vocab_round_trip(path: str) -> None:
    """read_vocab on the input; what it accepts must write back and read
    again the same, and encode(decode(ids)) give the ids back for a
    character vocabulary."""
    from grulite import _vocab
    tokens = _vocab.read_vocab(path)
    out = path + ".again"
    try:
        _vocab.write_vocab(out, tokens)
        assert _vocab.read_vocab(out) == tokens, "write_vocab / read_vocab round trip"
    finally:
        if os.path.exists(out):
            os.remove(out)
    ids = list(range(len(tokens)))
    text = _vocab.decode(ids, tokens)
    if all(len(t) == 1 for t in tokens):
        # Plain characters: text and ids map one to one.  (<special> tokens
        # can make text ambiguous, "<s>>" vs "<s>" ">": encode then only
        # needs to succeed.)
        assert _vocab.encode(text, tokens) == ids, "encode(decode(ids))"
    elif _vocab.is_char_vocab(tokens):
        _vocab.encode(text, tokens)
    return None


def _ignore_patterns() -> list:
    """GRULITE_FUZZ_IGNORE="Type:text@file;...": known, reported bugs to pass
    over, so that a long campaign can look for other ones: the exception's
    type name (or *), text its message contains, and optionally text of the
    file name of the innermost traceback frame.  Never set in CI."""
    out = []
    for item in os.environ.get("GRULITE_FUZZ_IGNORE", "").split(";"):
        if item.strip():
            kind, _, rest = item.partition(":")
            text, _, where = rest.partition("@")
            out.append((kind.strip(), text.strip(), where.strip()))
    return out


def _ignored(e: BaseException, patterns: list) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    file = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return any(kind in ("*", type(e).__name__) and text in str(e) and where in file
               for kind, text, where in patterns)


# ---- The fallback: a plain mutation loop --------------------------------------

_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                0xFFFFFFFF, 2 ** 31 - 1, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1, 64, 100000, 1 << 20]


def _mutate(rng: random.Random, data: bytes, corpus: list) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(b)
        if op == 0 and n:                                   # flip a bit
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:                                 # random byte
            b[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:                                       # insert bytes
            i = rng.randint(0, n)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and n:                                 # erase a range
            i = rng.randrange(n)
            del b[i:i + rng.randint(1, max(1, min(64, n - i)))]
        elif op == 4 and n:                                 # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            k = rng.randint(0, n)
            b[k:k] = b[i:j]
        elif op == 5 and n:                                 # truncate
            del b[rng.randrange(n):]
        elif op == 6 and n >= 8:                            # interesting integer
            v = rng.choice(_INTERESTING)
            w = rng.choice((1, 2, 4, 8))
            i = rng.randrange(n - w + 1)
            b[i:i + w] = (v & ((1 << (8 * w)) - 1)).to_bytes(w, rng.choice(("little", "big")))
        elif op == 7 and corpus:                            # splice another input
            other = rng.choice(corpus)
            if other:
                i, j = rng.randint(0, n), rng.randrange(len(other))
                b[i:] = other[j:j + rng.randint(1, len(other) - j)]
        elif op == 8 and n:                                 # ASCII digits (JSON, pickle text)
            i = rng.randrange(n)
            b[i:i + 1] = str(rng.choice(_INTERESTING)).encode()
    return bytes(b)


class _Timeout(Exception):
    pass


def _parse_flags(argv: list) -> tuple:
    flags, paths = {}, []
    for a in argv:
        if a.startswith("-") and "=" in a:
            k, v = a[1:].split("=", 1)
            flags[k] = v
        elif a.startswith("-"):
            flags[a[1:]] = "1"
        else:
            paths.append(a)
    return flags, paths


def fallback_main(target: str, argv: list) -> int:
    flags, paths = _parse_flags(argv)
    test, cleanup = make_test(target, instrument=False)
    max_time = float(flags.get("max_total_time", 0)) or None
    runs = int(flags.get("runs", -1))
    timeout = int(flags.get("timeout", 20))
    prefix = flags.get("artifact_prefix", "./")
    rng = random.Random(int(flags.get("seed", time.time_ns() & 0xFFFFFFFF)))

    def on_alarm(signum, frame):
        raise _Timeout()
    signal.signal(signal.SIGALRM, on_alarm)

    def run(data: bytes, save: bool = True) -> bool:
        signal.alarm(timeout)
        try:
            test(data)
            return True
        except _Timeout:
            kind = f"timeout after {timeout} s"
        except BaseException:                       # noqa: BLE001 - every escape is a finding
            kind = "uncaught Python exception"
            traceback.print_exc()
        finally:
            signal.alarm(0)
        print(f"==ERROR: fuzz_importer {target}: {kind}", flush=True)
        if save:
            name = prefix + "crash-" + hashlib.sha1(data).hexdigest()
            d = os.path.dirname(name)
            if d:
                os.makedirs(d, exist_ok=True)
            with open(name, "wb") as f:
                f.write(data)
            print(f"Test unit written to {name}", flush=True)
        return False

    files = [p for p in paths if os.path.isfile(p)]
    dirs = [p for p in paths if os.path.isdir(p)]
    try:
        if files and not dirs:                      # reproduce mode
            ok = True
            for p in files:
                with open(p, "rb") as f:
                    ok = run(f.read(), save=False) and ok
                print(f"Executed {p}")
            return 0 if ok else 1
        corpus = []
        for d in dirs:
            for name in sorted(os.listdir(d)):
                p = os.path.join(d, name)
                if os.path.isfile(p):
                    with open(p, "rb") as f:
                        corpus.append(f.read())
        corpus = corpus or [b""]
        execs, t0 = 0, time.monotonic()
        for data in corpus:                         # every seed once, as is
            if not run(data):
                return 1
            execs += 1
        while (max_time is None or time.monotonic() - t0 < max_time) and (runs < 0 or execs < runs):
            if not run(_mutate(rng, rng.choice(corpus), corpus)):
                return 1
            execs += 1
        if "print_final_stats" in flags:
            dt = max(time.monotonic() - t0, 1e-9)
            print(f"stat::number_of_executed_units: {execs}\n"
                  f"stat::average_exec_per_sec:     {int(execs / dt)}\n"
                  f"stat::engine:                   fallback mutation loop (no coverage)")
        print(f"Done {execs} runs in {int(time.monotonic() - t0)} second(s)")
        return 0
    finally:
        cleanup()


def atheris_main(target: str, argv: list) -> int:
    import atheris
    test, cleanup = make_test(target, instrument=True)
    import atexit
    atexit.register(cleanup)
    atheris.Setup([sys.argv[0]] + argv, test)
    atheris.Fuzz()
    return 0


def main() -> int:
    if len(sys.argv) == 2 and sys.argv[1] == "--list":
        print(" ".join(_targets()))
        return 0
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        _usage("fuzz_importer.py: name a target")
    target, argv = sys.argv[1], sys.argv[2:]
    use_atheris = os.environ.get("GRULITE_FUZZ_NO_ATHERIS", "") in ("", "0")
    if use_atheris:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("fuzz_importer: atheris is not installed; using the plain mutation loop",
                  file=sys.stderr)
            use_atheris = False
    return atheris_main(target, argv) if use_atheris else fallback_main(target, argv)


if __name__ == "__main__":
    sys.exit(main())
