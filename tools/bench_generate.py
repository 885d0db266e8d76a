"""Benchmarks whole-sequence-model workloads: grulite's generate and stream
rows against the Python loops users write around torch and ONNX Runtime.

    python tools/bench_generate.py                      # every workload, 1 thread
    python tools/bench_generate.py --quick              # smoke test (< 1 min), not a measurement
    python tools/bench_generate.py --workloads seq2seq --threads 1,2
    python tools/bench_generate.py --json gen.json --markdown gen.md

Workloads (--workloads takes names, comma-separated; all greedy, float32,
random seeded weights, no stop token, so every implementation does the
same work):

    seq2seq   Word decoding, the shape of a small grapheme-to-phoneme model:
              encoder nn.Embedding(30, 256) + nn.GRU(256, 256), decoder
              nn.Embedding(40, 256) + nn.GRU(256, 256) + nn.Linear(256, 40).
              B=1 and B=64 words of 8 letters in, exactly 8 tokens out per
              word.  One call = encode the batch + decode 8 tokens.
                grulite generate       _, h = enc(src); dec.generate(h0=h, start=START, max_steps=8)
                                       (the decoder embedding folded into layer 0, as the
                                       importer chooses by default; the row says so)
                  fold_embedding=False the same with the embedding kept as a table
                grulite stream loop    the hand glue users wrote before generate: enc(src),
                                       s = dec.stream(B); s.state = h; 8 x s.step(tok) + argmax
                torch                  eager, inference_mode: encoder forward, then 8 x
                                       (embedding -> GRU with h -> Linear -> argmax)
                ORT                    torch.onnx.export'ed encoder (src -> h_n) and decoder
                                       step (token (B, 1) int64, h -> logits, h'), opset 17;
                                       a Python loop of 8 session.run + numpy argmax
    charlm    Character LM: nn.Embedding(96, 64) -> nn.GRU(64, 512) ->
              nn.Linear(512, 96), B=1, a prompt of 20 tokens, then 200
              tokens generated greedily.  One call = one 200-token
              generation.  grulite generate (and with the other
              fold_embedding choice), the grulite stream loop (the prompt as
              one chunk, then 199 single steps), a torch loop and an ORT loop
              over an exported step model (tokens (B, T) + h -> last logits, h').
    server    Many streams: the char LM, one stream of 256 rows (states
              warmed up with a few random tokens); each call steps a random
              subset of 32 rows by one (random) token and returns their logits.
                grulite                s.step(tok, rows=idx)
                torch                  index_select the 32 states, one step
                                       (embedding -> GRU -> Linear), index_copy_ them back
                ORT                    numpy gather of the states, the step model, numpy scatter

Checks: the token sequences of every implementation must be identical (an
AssertionError otherwise, naming the first difference); the table notes how
many distinct tokens were generated and the smallest gap between the best
and second-best logit seen by torch (a near tie would make float rounding
pick different tokens).  The decoder's and the LM's Linear weights are
scaled up (x4, the bias not) so that the scores depend on the state more
than on the bias, as in a trained model; argmax itself does not care about
the scale, and random greedy models soon settle into a short cycle of
tokens, which changes nothing of the work done (always the full length).
Server: logits and final states of a fixed run of calls are compared
(max abs difference <= 1e-4).

Timing: each implementation of a case is timed in turn, --rounds times
over (default 3, --quick 1), every call timed on its own: a warm-up, then
at least 20 calls and 0.3 s per round (stopping at --max-time seconds once
5 are done; --quick: 3 calls, 0.2 s at most).  Mean, median and best per
call are over all rounds' calls; ratios are median time / grulite's median
time (grulite generate for seq2seq and charlm, grulite stream rows for
server): > 1 means grulite is that many times faster.

Threads: --threads (default 1; a comma-separated list runs each count in a
fresh process, as tools/bench.py does) sets grulite's num_threads,
torch.set_num_threads and ORT's intra_op_num_threads (inter_op 1).

Output: a Markdown table per case on stdout with the CPU (model name and
family / model / stepping from /proc/cpuinfo) and the thread count;
--json PATH writes every number and the machine / version info, --markdown
PATH the tables.  The grulite of this checkout's in-place build is used
when there is one (python setup.py build_ext --inplace), else the
installed one.  Needs torch (the reference models and tokens);
onnxruntime (and onnx) are optional: without them the ORT rows are skipped.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.machinery
import io
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Prefer the in-place build of this checkout over an installed grulite, as
# tools/bench.py does (a compiled extension only; PYTHONPATH wins).
if not os.environ.get("PYTHONPATH") and any(
        os.path.exists(os.path.join(ROOT, "src", "grulite", "_core" + suffix))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES):
    sys.path.insert(0, os.path.join(ROOT, "src"))

grulite = None       # imported by main() once the arguments are parsed: --help needs no build
torch = None         # likewise

WORKLOADS = ("seq2seq", "charlm", "server")
STATE_TOL = 1e-4     # server: max abs difference of logits / states from grulite's
HEAD_SCALE = 4.0     # the Linear weights' scale-up (see the module docstring)

SEQ2SEQ = dict(src_vocab=30, tgt_vocab=40, emb=256, hidden=256, letters=8, steps=8, start=1,
               batches=(1, 64), seed=0)
CHARLM = dict(vocab=96, emb=64, hidden=512, prompt=20, steps=200, seed=1)
SERVER = dict(rows=256, active=32, warmup_tokens=4, calls=64, seed=2)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Timing

class Timer:
    def __init__(self, quick: bool, max_time: float, rounds: int):
        if quick:
            self.min_runs, self.min_time, self.max_time, self.floor = 3, 0.0, min(max_time, 0.2), 3
            self.settle, self.rounds = 0.02, 1
        else:
            self.min_runs, self.min_time, self.max_time, self.floor = 20, 0.3, max_time, 5
            self.settle, self.rounds = 0.2, max(1, rounds)

    def settings(self) -> dict:
        return dict(min_runs=self.min_runs, min_time_s=self.min_time, max_time_s=self.max_time,
                    floor_runs=self.floor, rounds=self.rounds)

    def samples(self, fn) -> list:
        """Per-call seconds: a warm-up, then at least min_runs calls and
        min_time seconds, stopping at max_time once `floor` calls are done."""
        time.sleep(self.settle)      # let the previous runtime's spinning threads go idle
        t0 = time.perf_counter()
        k = 0
        while k < 3 and (k == 0 or time.perf_counter() - t0 < 0.2):
            fn()
            k += 1
        times = []
        start = time.perf_counter()
        while True:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start
            if len(times) >= self.min_runs and elapsed >= self.min_time:
                break
            if elapsed >= self.max_time and len(times) >= self.floor:
                break
        return times

    def rounds_of(self, fns: dict) -> dict:
        """Times every implementation in turn, `rounds` times over, so that a
        slow spell of the machine hits all of them rather than one."""
        pooled: dict = {k: [] for k in fns}
        round_medians: dict = {k: [] for k in fns}
        time.sleep(0.3 if self.rounds > 1 else self.settle)
        for _ in range(self.rounds):
            for key, fn in fns.items():
                ts = self.samples(fn)
                pooled[key] += ts
                round_medians[key].append(statistics.median(ts))
        out = {}
        for key, ts in pooled.items():
            best, med = min(ts), statistics.median(ts)
            out[key] = dict(mean_s=statistics.fmean(ts), median_s=med, best_s=best, runs=len(ts),
                            round_median_s=round_medians[key], noisy=bool(med > 1.5 * best))
        return out


# ---------------------------------------------------------------------------
# Machine and versions

def cpu_info() -> dict:
    """The first CPU's model name, vendor, family / model / stepping (what
    tells CPUs of one model name apart: "AMD EPYC" on a VM is any of
    several generations) and a few instruction-set flags."""
    fields, flags = {}, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if not key and fields:
                    break                      # end of the first processor's block
                if key in ("model name", "vendor_id", "cpu family", "model", "stepping") \
                        and key not in fields:
                    fields[key] = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    fms = [f"{k} {fields[v]}" for k, v in (("family", "cpu family"), ("model", "model"),
                                             ("stepping", "stepping")) if v in fields]
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"cpu": name + (f" ({', '.join(fms)})" if fms else ""),
            "model_name": fields.get("model name"), "vendor": fields.get("vendor_id"),
            "family": fields.get("cpu family"), "model": fields.get("model"),
            "stepping": fields.get("stepping"), "cpu_count": os.cpu_count(),
            "affinity_cpus": affinity,
            "flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")},
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    v = {"grulite": grulite.__version__,
         "grulite_isas": grulite.available_isas(), "numpy": np.__version__}
    path = os.path.dirname(os.path.abspath(grulite.__file__))
    v["grulite_path"] = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else "installed"
    for mod in ("torch", "onnxruntime", "onnx"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            v[mod] = None
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "include",
                                "setup.py"], capture_output=True, text=True, timeout=10).stdout.strip()
        v["git"] = head + ("+dirty" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        v["git"] = None
    return v


def cpu_snapshot():
    """(busy CPU seconds of the machine, CPU seconds of this process and its
    waited-for children), or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    t = os.times()
    return (v[0] + v[1] + v[2]) / os.sysconf("SC_CLK_TCK"), \
        t.user + t.system + t.children_user + t.children_system


def other_load(start, end, wall: float):
    """CPUs used on average by other processes between two snapshots."""
    if not start or not end or wall <= 0:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / wall)


# ---------------------------------------------------------------------------
# Models and ONNX Runtime sessions

def lm_modules(vocab: int, emb: int, hidden: int, head: bool):
    """nn.Embedding -> nn.GRU (batch_first) [-> nn.Linear], as a ModuleDict
    whose state_dict names are emb.*, gru.*, fc.* (what grulite is told)."""
    nn = torch.nn
    mods = {"emb": nn.Embedding(vocab, emb), "gru": nn.GRU(emb, hidden, batch_first=True)}
    if head:
        mods["fc"] = nn.Linear(hidden, vocab)
        with torch.no_grad():
            mods["fc"].weight.mul_(HEAD_SCALE)
    return nn.ModuleDict(mods).eval()


def ort_available() -> bool:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ort_session(module, args, inputs: dict, outputs: dict, threads: int):
    """Exports `module` (TorchScript exporter, opset 17) with the named
    inputs / outputs and their dynamic axes; an ORT session on it."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes={**inputs, **outputs}, opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


def export_encoder(m, threads: int):
    """src (B, T) int64 -> h_n (1, B, H)."""
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.gru = m["emb"], m["gru"]

        def forward(self, src):
            return self.gru(self.emb(src))[1]

    src = torch.zeros(2, 3, dtype=torch.int64)
    return ort_session(Encoder().eval(), (src,), {"src": {0: "B", 1: "T"}}, {"h": {1: "B"}}, threads)


def export_step(m, threads: int):
    """tok (B, T) int64, h (1, B, H) -> logits at the last step (B, V), h'."""
    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.gru, self.fc = m["emb"], m["gru"], m["fc"]

        def forward(self, tok, h):
            y, h = self.gru(self.emb(tok), h)
            return self.fc(y[:, -1]), h

    H = m["gru"].hidden_size
    args = (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(1, 2, H))
    return ort_session(Step().eval(), args, {"tok": {0: "B", 1: "T"}, "h": {1: "B"}},
                       {"logits": {0: "B"}, "h_out": {1: "B"}}, threads)


def grulite_lm(m, threads: int, fold=None):
    """The grulite model of an lm_modules ModuleDict (with its head)."""
    return grulite.from_state_dict(m.state_dict(), prefix="gru", embedding="emb",
                                   head=[("fc", "none")], fold_embedding=fold, num_threads=threads)


# ---------------------------------------------------------------------------
# Checks

def check_tokens(case: str, outputs: dict) -> None:
    """Every implementation's (B, steps) tokens equal the first one's."""
    (ref_name, ref), *rest = outputs.items()
    for name, got in rest:
        if got.shape != ref.shape:
            raise AssertionError(f"{case}: {name} gave tokens of shape {got.shape}, "
                                 f"{ref_name} {ref.shape}")
        bad = np.argwhere(got != ref)
        if len(bad):
            b, t = bad[0]
            raise AssertionError(f"{case}: {name} differs from {ref_name} at row {b}, step {t}: "
                                 f"{got[b, t]} vs {ref[b, t]} ({len(bad)} tokens differ)")


def token_stats(tokens: np.ndarray, logits: list) -> dict:
    """Distinct tokens generated, and the smallest top-2 logit gap seen."""
    gaps = [float(np.min(np.diff(np.sort(lg, axis=-1)[..., -2:], axis=-1))) for lg in logits]
    return {"distinct_tokens": int(len(np.unique(tokens))), "min_top2_gap": min(gaps)}


def impl_times(times: dict, labels: dict, base: str) -> list:
    """One row per implementation: label, times, ratio to `base`."""
    g = times[base]["median_s"]
    return [dict(key=k, label=labels[k], ratio=r["median_s"] / g, **r) for k, r in times.items()]


# ---------------------------------------------------------------------------
# Workload 1: seq2seq word decoding

def run_seq2seq(threads: int, timer: Timer, use_ort: bool) -> list:
    c = SEQ2SEQ
    torch.manual_seed(c["seed"])
    enc_m = lm_modules(c["src_vocab"], c["emb"], c["hidden"], head=False)
    dec_m = lm_modules(c["tgt_vocab"], c["emb"], c["hidden"], head=True)
    enc = grulite.from_state_dict(enc_m.state_dict(), prefix="gru", embedding="emb",
                                  num_threads=threads)
    dec = grulite.from_state_dict(dec_m.state_dict(), prefix="gru", embedding="emb",
                                  head=[("fc", "none")], num_threads=threads)
    folded = bool(dec.config.embedding["folded"])
    dec_other = grulite_lm(dec_m, threads, fold=not folded)
    sessions = (export_encoder(enc_m, threads), export_step(dec_m, threads)) if use_ort else None
    out = []
    for B in c["batches"]:
        src = np.random.default_rng(c["seed"] + B).integers(2, c["src_vocab"], (B, c["letters"]))
        r = seq2seq_batch(src, (enc_m, dec_m), (enc, dec, dec_other), sessions, timer)
        out.append({"workload": "seq2seq", "case": f"seq2seq-b{B}", "threads": threads,
                    "title": f"seq2seq word decoding: B={B} word{'s' if B > 1 else ''} of "
                             f"{c['letters']} letters in, {c['steps']} tokens out "
                             f"(emb {c['emb']}, hidden {c['hidden']}, vocab {c['src_vocab']} -> "
                             f"{c['tgt_vocab']})",
                    "config": dict(c, batch=B), "per": "call (encode + decode the batch)",
                    "baseline": "grulite", "decoder_embedding_folded": folded,
                    "encoder_embedding_folded": bool(enc.config.embedding["folded"]),
                    "isa": dec.isa, "grulite_num_threads": dec.num_threads, **r})
    return out


def seq2seq_batch(src: np.ndarray, torch_models, grulite_models, sessions, timer: Timer) -> dict:
    """One batch of words (B, letters): every implementation checked, then timed."""
    enc_m, dec_m = torch_models
    enc, dec, dec_other = grulite_models
    B, steps, start = src.shape[0], SEQ2SEQ["steps"], SEQ2SEQ["start"]
    src_t = torch.from_numpy(src)
    folded = bool(dec.config.embedding["folded"])

    def g_generate(d=dec):
        _, h = enc(src)
        return d.generate(h0=h, start=start, max_steps=steps)

    def g_stream():
        _, h = enc(src)
        s = dec.stream(B)
        s.state = h
        tok, toks = np.full(B, start, np.int64), []
        for _ in range(steps):
            tok = s.step(tok).argmax(-1)
            toks.append(tok)
        return toks

    def t_loop(keep_logits=None):
        with torch.inference_mode():
            _, h = enc_m["gru"](enc_m["emb"](src_t))
            tok, toks = torch.full((B, 1), start, dtype=torch.int64), []
            for _ in range(steps):
                y, h = dec_m["gru"](dec_m["emb"](tok), h)
                logits = dec_m["fc"](y[:, 0])
                tok = logits.argmax(-1, keepdim=True)
                toks.append(tok)
                if keep_logits is not None:
                    keep_logits.append(logits.numpy().copy())
            return toks

    def o_loop():
        enc_s, dec_s = sessions
        h = enc_s.run(None, {"src": src})[0]
        tok, toks = np.full((B, 1), start, np.int64), []
        for _ in range(steps):
            logits, h = dec_s.run(None, {"tok": tok, "h": h})
            tok = logits.argmax(-1)[:, None]
            toks.append(tok)
        return toks

    fns = {"grulite": g_generate, "grulite_other_fold": lambda: g_generate(dec_other),
           "grulite_stream": g_stream, "torch": t_loop}
    labels = {"grulite": f"grulite generate (decoder embedding {'folded' if folded else 'not folded'})",
              "grulite_other_fold": f"grulite generate, fold_embedding={not folded}",
              "grulite_stream": f"grulite stream loop (hand glue: {steps} x s.step + argmax)",
              "torch": "torch eager loop", "ort": f"ORT loop (encoder + {steps} x step session.run)"}
    if sessions:
        fns["ort"] = o_loop

    logits = []
    tokens = {"torch": torch.cat(t_loop(logits), 1).numpy(),
              "grulite": np.stack(g_generate()),
              "grulite_other_fold": np.stack(g_generate(dec_other)),
              "grulite_stream": np.stack(g_stream(), 1)}
    if sessions:
        tokens["ort"] = np.concatenate(o_loop(), 1)
    check_tokens(f"seq2seq B={B}", tokens)
    times = timer.rounds_of(fns)
    return {"tokens_identical": True, **token_stats(tokens["torch"], logits),
            "impls": impl_times(times, labels, "grulite")}


# ---------------------------------------------------------------------------
# Workload 2: character LM generation

def run_charlm(threads: int, timer: Timer, use_ort: bool) -> list:
    c = CHARLM
    torch.manual_seed(c["seed"])
    lm = lm_modules(c["vocab"], c["emb"], c["hidden"], head=True)
    m = grulite_lm(lm, threads)
    folded = bool(m.config.embedding["folded"])
    m_other = grulite_lm(lm, threads, fold=not folded)
    sess = export_step(lm, threads) if use_ort else None
    prompt = np.random.default_rng(c["seed"]).integers(0, c["vocab"], (1, c["prompt"]))
    prompt_t = torch.from_numpy(prompt)
    steps, H = c["steps"], c["hidden"]

    def g_generate(model=m):
        return model.generate(prompt=prompt, max_steps=steps)

    def g_stream():
        s = m.stream(1)
        tok = s.step(prompt)[:, -1].argmax(-1)           # the prompt as one chunk
        toks = [tok]
        for _ in range(steps - 1):
            tok = s.step(tok).argmax(-1)
            toks.append(tok)
        return toks

    def t_loop(keep_logits=None):
        with torch.inference_mode():
            y, h = lm["gru"](lm["emb"](prompt_t))
            logits = lm["fc"](y[:, -1])
            tok = logits.argmax(-1, keepdim=True)
            toks = [tok]
            for i in range(steps):
                if keep_logits is not None:
                    keep_logits.append(logits.numpy().copy())
                if i == steps - 1:
                    break
                y, h = lm["gru"](lm["emb"](tok), h)
                logits = lm["fc"](y[:, 0])
                tok = logits.argmax(-1, keepdim=True)
                toks.append(tok)
            return toks

    h0 = np.zeros((1, 1, H), np.float32)

    def o_loop():
        logits, h = sess.run(None, {"tok": prompt, "h": h0})
        tok = logits.argmax(-1)[:, None]
        toks = [tok]
        for _ in range(steps - 1):
            logits, h = sess.run(None, {"tok": tok, "h": h})
            tok = logits.argmax(-1)[:, None]
            toks.append(tok)
        return toks

    fns = {"grulite": g_generate, "grulite_other_fold": lambda: g_generate(m_other),
           "grulite_stream": g_stream, "torch": t_loop}
    labels = {"grulite": f"grulite generate (embedding {'folded' if folded else 'not folded'})",
              "grulite_other_fold": f"grulite generate, fold_embedding={not folded}",
              "grulite_stream": f"grulite stream loop (hand glue: prompt chunk + {steps - 1} x s.step)",
              "torch": "torch eager loop", "ort": f"ORT loop ({steps} x step session.run)"}
    if use_ort:
        fns["ort"] = o_loop

    logits = []
    tokens = {"torch": torch.cat(t_loop(logits), 1).numpy(),
              "grulite": np.stack(g_generate()),
              "grulite_other_fold": np.stack(g_generate(m_other)),
              "grulite_stream": np.stack(g_stream(), 1)}
    if use_ort:
        tokens["ort"] = np.concatenate(o_loop(), 1)
    check_tokens("charlm", tokens)
    stats = token_stats(tokens["torch"], logits)

    times = timer.rounds_of(fns)
    return [{"workload": "charlm", "case": "charlm", "threads": threads,
             "title": f"character LM generation: B=1, prompt {c['prompt']} tokens, {steps} tokens "
                      f"generated greedily (emb {c['emb']}, hidden {c['hidden']}, vocab {c['vocab']})",
             "config": dict(c), "per": f"call ({steps}-token generation)", "baseline": "grulite",
             "embedding_folded": folded, "isa": m.isa, "grulite_num_threads": m.num_threads,
             "tokens_identical": True, **stats, "impls": impl_times(times, labels, "grulite")}]


# ---------------------------------------------------------------------------
# Workload 3: many streams, a random subset stepped per call

def run_server(threads: int, timer: Timer, use_ort: bool) -> list:
    c, lmc = SERVER, CHARLM
    torch.manual_seed(lmc["seed"])
    lm = lm_modules(lmc["vocab"], lmc["emb"], lmc["hidden"], head=True)
    m = grulite_lm(lm, threads)
    sess = export_step(lm, threads) if use_ort else None
    R, K, V = c["rows"], c["active"], lmc["vocab"]
    rng = np.random.default_rng(c["seed"])

    # Every row has read a few tokens: the states every implementation starts from.
    s = m.stream(R)
    s.step(rng.integers(0, V, (R, c["warmup_tokens"])))
    state0 = np.array(s.state)                                # (1, R, H)
    calls = [(rng.choice(R, K, replace=False), rng.integers(0, V, K)) for _ in range(c["calls"])]
    t_calls = [(torch.from_numpy(idx), torch.from_numpy(tok)[:, None]) for idx, tok in calls]

    H_t = torch.from_numpy(state0.copy())
    H_o = state0.copy()

    def g_call(call):
        idx, tok = call
        return s.step(tok, rows=idx)

    def t_call(call):
        idx, tok = call
        with torch.inference_mode():
            y, h = lm["gru"](lm["emb"](tok), H_t.index_select(1, idx))
            H_t.index_copy_(1, idx, h)
            return lm["fc"](y[:, 0])

    def o_call(call):
        idx, tok = call
        logits, h = sess.run(None, {"tok": tok[:, None], "h": H_o[:, idx]})
        H_o[:, idx] = h
        return logits

    # The same calls from the same states: the same logits and states.
    ref = np.stack([g_call(x) for x in calls])
    diffs = {"torch": float(np.abs(np.stack([t_call(x).numpy() for x in t_calls]) - ref).max())}
    state_diffs = {"torch": float(np.abs(H_t.numpy() - s.state).max())}
    if use_ort:
        diffs["ort"] = float(np.abs(np.stack([o_call(x) for x in calls]) - ref).max())
        state_diffs["ort"] = float(np.abs(H_o - s.state).max())
    for p in diffs:
        if not max(diffs[p], state_diffs[p]) <= STATE_TOL:
            raise AssertionError(f"server: {p} differs from grulite by {diffs[p]:.3g} (logits), "
                                 f"{state_diffs[p]:.3g} (states); tolerance {STATE_TOL:g}")

    g_it, t_it, o_it = itertools.cycle(calls), itertools.cycle(t_calls), itertools.cycle(calls)
    fns = {"grulite": lambda: g_call(next(g_it)), "torch": lambda: t_call(next(t_it))}
    labels = {"grulite": f"grulite s.step(tok, rows=idx), {K} of {R} rows",
              "torch": "torch index_select + step + index_copy_",
              "ort": "ORT numpy gather + step session.run + scatter"}
    if use_ort:
        fns["ort"] = lambda: o_call(next(o_it))
    times = timer.rounds_of(fns)
    return [{"workload": "server", "case": "server", "threads": threads,
             "title": f"many streams: char LM stream of {R} rows, each call steps a random {K} rows "
                      f"by one token (hidden {lmc['hidden']}, vocab {V})",
             "config": dict(c, hidden=lmc["hidden"], vocab=V, emb=lmc["emb"]),
             "per": f"call (one step of {K} rows)", "baseline": "grulite",
             "embedding_folded": bool(m.config.embedding["folded"]), "isa": m.isa,
             "grulite_num_threads": m.num_threads, "max_abs_diff_logits": diffs,
             "max_abs_diff_states": state_diffs, "impls": impl_times(times, labels, "grulite")}]


RUNNERS = {"seq2seq": run_seq2seq, "charlm": run_charlm, "server": run_server}


# ---------------------------------------------------------------------------
# Reporting

def fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.4f}" if ms < 0.1 else f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def check_note(r: dict) -> str:
    if r["workload"] == "server":
        d = ", ".join(f"{p} {r['max_abs_diff_logits'][p]:.1e} / {r['max_abs_diff_states'][p]:.1e}"
                      for p in r["max_abs_diff_logits"])
        return f"Checked: max abs difference from grulite, logits / states after {SERVER['calls']} calls: {d}."
    return (f"Checked: identical tokens from every implementation; {r['distinct_tokens']} distinct "
            f"tokens generated, smallest top-2 logit gap {r['min_top2_gap']:.2g}.")


def markdown(results: list, meta: dict) -> str:
    m, v, st = meta["machine"], meta["versions"], meta["settings"]
    isa = next((r.get("isa") for r in results if r.get("isa")), None)
    lines = [f"`python tools/bench_generate.py{' --quick' if st['quick'] else ''}` on {m['cpu']}, "
             f"{m['cpu_count']} CPUs; grulite {v['grulite']}" + (f" ({isa} kernel)" if isa else "")
             + (f", torch {v['torch']}" if v.get("torch") else "")
             + (f", ONNX Runtime {v['onnxruntime']}" if v.get("onnxruntime") else "")
             + f", numpy {v['numpy']}. Times per call in ms, over ≥ {st['min_runs']} calls"
             + (f" in each of {st['rounds']} rounds" if st["rounds"] > 1 else "")
             + "; ratio = median time / grulite's median time (> 1: grulite is that many times faster)."
             + (" QUICK run: a smoke test, not a measurement." if st["quick"] else ""), ""]
    for r in results:
        lines += [f"**{r['title']}**, {r['threads']} thread{'s' if r['threads'] > 1 else ''}; "
                  f"per {r['per']}", "",
                  "| implementation | mean ms | median ms | best ms | runs | ratio |",
                  "|---|---:|---:|---:|---:|---:|"]
        for i in r["impls"]:
            noisy = " (noisy)" if i["noisy"] else ""
            lines.append(f"| {i['label']} | {fmt_ms(i['mean_s'])} | {fmt_ms(i['median_s'])} | "
                         f"{fmt_ms(i['best_s'])} | {i['runs']}{noisy} | {i['ratio']:.2f}× |")
        lines += ["", check_note(r), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------

def parse_list(spec: str, allowed=None, kind=str) -> list:
    out = []
    for w in (w.strip() for w in spec.split(",") if w.strip()):
        try:
            x = kind(w)
        except ValueError:
            raise SystemExit(f"cannot read {w!r} in {spec!r}") from None
        if allowed is not None and x not in allowed:
            raise SystemExit(f"unknown {x!r}; choose from {', '.join(allowed)}")
        if x not in out:
            out.append(x)
    return out


def run_all(threads: int, workloads: list, timer: Timer, use_ort: bool) -> list:
    """Every workload at one thread count, in this process."""
    torch.set_num_threads(threads)
    results = []
    for w in workloads:
        t0 = time.perf_counter()
        rs = RUNNERS[w](threads, timer, use_ort)
        for r in rs:
            r["elapsed_s"] = time.perf_counter() - t0
            g = r["impls"][0]
            log(f"{r['case']}, {threads} thread(s): " + " | ".join(
                f"{i['key']} {fmt_ms(i['median_s'])} ms ({i['ratio']:.2f}x)" for i in r["impls"])
                + f"  [grulite n={g['runs']}]")
        results += rs
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)")
    ap.add_argument("--threads", default="1",
                    help="thread count, or comma-separated counts each run in a fresh process (default 1)")
    ap.add_argument("--quick", action="store_true", help="few repeats: a smoke test, not a measurement")
    ap.add_argument("--max-time", type=float, default=3.0,
                    help="seconds after which one measurement stops once it has 5 calls (default 3)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="times every implementation of a case in turn this many times over "
                         "(default 3; --quick: 1)")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--json", help="write all numbers and the machine / version info to this file")
    ap.add_argument("--markdown", help="write the Markdown tables to this file")
    ap.add_argument("--_worker", type=int, help=argparse.SUPPRESS)   # internal: one thread count
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    workloads = parse_list(a.workloads, WORKLOADS)
    threads_list = sorted(parse_list(a.threads, kind=int))
    if not workloads or not threads_list or min(threads_list) < 1:
        raise SystemExit("need at least one workload and thread counts >= 1")

    global grulite, torch
    import grulite
    try:
        import torch
    except ImportError:
        raise SystemExit("torch is needed: it builds the reference models and their tokens") from None
    use_ort = not a.no_ort and ort_available()
    timer = Timer(a.quick, a.max_time, a.rounds)
    if a._worker:
        with open(a._out, "w") as f:
            json.dump(run_all(a._worker, workloads, timer, use_ort), f)
        return

    t_start = time.perf_counter()
    snap0 = cpu_snapshot()
    meta = {"schema": 1, "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["python", "tools/bench_generate.py"] + sys.argv[1:]),
            "settings": {"quick": a.quick, "threads": threads_list, "workloads": workloads,
                         "ort": use_ort, "ratio": "median time / grulite median time (> 1: grulite faster)",
                         "head_scale": HEAD_SCALE, **timer.settings()},
            "machine": cpu_info(), "versions": versions()}
    m, v = meta["machine"], meta["versions"]
    log(f"grulite {v['grulite']} ({v.get('git')}) from {v['grulite_path']}")
    log(f"{m['cpu']}, {m['cpu_count']} CPUs; torch {v['torch']}, onnxruntime {v['onnxruntime']}, "
        f"numpy {v['numpy']}; threads {threads_list}"
        + ("" if use_ort else "; ORT skipped") + ("; QUICK (smoke test)" if a.quick else ""))

    results = []
    if len(threads_list) == 1:
        results = run_all(threads_list[0], workloads, timer, use_ort)
    else:
        for threads in threads_list:
            # A fresh process per thread count: no thread pool is resized mid-run.
            log(f"\n=== {threads} thread{'s' if threads > 1 else ''} ===")
            fd, out = tempfile.mkstemp(prefix="grulite_bench_generate_", suffix=".json")
            os.close(fd)
            cmd = [sys.executable, os.path.abspath(__file__), "--_worker", str(threads), "--_out", out,
                   "--workloads", ",".join(workloads), "--max-time", str(a.max_time),
                   "--rounds", str(a.rounds)] + (["--quick"] if a.quick else []) \
                + (["--no-ort"] if not use_ort else [])
            try:
                p = subprocess.run(cmd, timeout=3600)
                if p.returncode != 0:
                    raise SystemExit(f"the {threads}-thread run failed (exit {p.returncode})")
                with open(out) as f:
                    results += json.load(f)
            finally:
                os.unlink(out)

    meta["elapsed_s"] = time.perf_counter() - t_start
    load = other_load(snap0, cpu_snapshot(), meta["elapsed_s"])
    meta["machine"]["other_load_during_run"] = load
    if load is not None and load > 0.1:
        warn(f"other processes used {load:.2f} CPUs on average during this run: the numbers are "
             "disturbed; rerun on a quiet machine")
    meta["results"] = results
    md = markdown(results, meta)
    meta["markdown"] = md
    log("\n" + md)
    for path, write in ((a.json, lambda f: json.dump(meta, f, indent=2, ensure_ascii=False)),
                        (a.markdown, lambda f: f.write(md))):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                write(f)
            log(f"wrote {path}")
    log(f"total time {meta['elapsed_s']:.1f} s")


if __name__ == "__main__":
    main()
