"""Concurrency stress tests: threads sharing models, streams outliving models,
kernel sets forced per model, memory-mapped models used from threads.

What is promised (README "Python API", include/grulite.h "Threads"):

* a model is read-only and may be shared by any number of threads; each
  thread gets its own scratch (a thread-local workspace), the C call runs
  without the GIL;
* results are bit-identical for any thread count, batch split or streaming
  chunk size, so every concurrent result here is compared with
  ``assert_array_equal`` to a serial run;
* the C core keeps no global mutable state: two models with different kernel
  sets forced run side by side and each gives exactly its own results;
* a stream keeps its model alive (``Stream.model``), so dropping the last
  Python reference to the model while streams made from it are alive is safe.

A stream itself is *not* thread-safe (one thread at a time, as a C
workspace); ``test_stream_shared_between_threads_does_not_crash`` checks
that misusing it from Python raises instead of crashing the interpreter.
"""
from __future__ import annotations

import gc
import os
import queue
import random
import subprocess
import sys
import textwrap
import threading
import weakref

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from helpers_format import child_env
from support.models import random_state_dict

I = 12                      # input features of every model here
ROUNDS = 8                  # passes of each worker over its jobs in the stress test


# ---------------------------------------------------------------------------
# models


def make_sd(seed: int, hidden=(40, 40), bidirectional=False, head=(), prefix="gru.") -> dict:
    """A PyTorch-style state_dict (numpy float32); `head` lists Linear widths."""
    return random_state_dict(seed, I, hidden, bidirectional, head, prefix, head_scale=0.3)


def build_models() -> dict:
    """Models of every shape the engine has (fresh objects on each call)."""
    head = grulite.from_state_dict(make_sd(2, head=(16, 6)), head="fc0:relu,fc1:softmax")
    return {
        "uni": grulite.from_state_dict(make_sd(1)),
        "head": head,
        "mixed": grulite.from_state_dict(make_sd(3, hidden=(32, 20)), reset_after=[True, False]),
        "bidir": grulite.from_state_dict(make_sd(4, hidden=(24, 24), bidirectional=True),
                                         reset_after=False),
        "f16": grulite.from_state_dict(make_sd(5), dtype="float16"),
        "i8": head.astype("int8"),
    }


STREAMABLE = ("uni", "head", "mixed", "f16", "i8")
HEADED = ("head", "i8")


@pytest.fixture(scope="module")
def models():
    return build_models()


def xs(rng, B, T):
    return rng.standard_normal((B, T, I)).astype(np.float32)


def state_like(m, B, rng):
    """A random h0 in the model's own form (array, or tuple per layer)."""
    c = m.config
    if c.uniform:
        LD = sum(l.num_directions for l in c.layers)
        return rng.standard_normal((LD, B, c.layers[0].hidden_size)).astype(np.float32) * 0.5
    return tuple(rng.standard_normal((l.num_directions, B, l.hidden_size)).astype(np.float32) * 0.5
                 for l in c.layers)


def assert_state_equal(got, want, what=""):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), what
        for g, w in zip(got, want):
            assert_array_equal(g, w, err_msg=what)
    else:
        assert_array_equal(got, want, err_msg=what)


# ---------------------------------------------------------------------------
# jobs: deterministic work items, run once serially for the reference


def make_jobs(seed: int, n: int) -> list:
    """n jobs: whole-sequence calls, predicts and streams with mixed batch
    sizes, lengths, layouts, h0 and chunk sizes."""
    rng = np.random.default_rng(seed)
    names = list(build_models_cache())
    jobs = []
    for j in range(n):
        kind = ("call", "call", "predict", "stream", "stream")[j % 5]
        if kind == "predict":
            name = HEADED[j % len(HEADED)]
        elif kind == "stream":
            name = STREAMABLE[j % len(STREAMABLE)]
        else:
            name = names[j % len(names)]
        B = int(rng.choice([1, 2, 3, 5, 8, 16]))
        T = int(rng.choice([1, 4, 17, 40, 100]))
        if name == "bidir" and j % 3 == 0:
            B, T = 1, 80      # big enough for the two directions to run on two threads
        job = dict(id=j, kind=kind, name=name, x=xs(rng, B, T))
        m = build_models_cache()[name]
        if kind in ("call", "predict") and rng.random() < 0.5 and T > 1:
            job["lengths"] = rng.integers(1, T + 1, size=B)
        if kind != "predict" and rng.random() < 0.5:
            job["h0"] = state_like(m, B, rng)
        if kind == "call":
            job["batch_first"] = bool(rng.random() < 0.7)
        if kind == "predict":
            job["all_steps"] = bool(rng.random() < 0.5)
        if kind == "stream":
            chunks, left = [], T
            while left:
                c = int(min(left, rng.choice([1, 1, 2, 3, 7, 16])))
                chunks.append(c)
                left -= c
            job["chunks"] = chunks
            job["roundtrip_state_at"] = int(rng.integers(0, len(chunks)))
        jobs.append(job)
    return jobs


_CACHE: dict = {}


def build_models_cache() -> dict:
    """One set of models used only to shape the jobs (their sizes)."""
    if not _CACHE:
        _CACHE.update(build_models())
    return _CACHE


def run_whole(m, job):
    """The job's result as whole-sequence calls (the reference)."""
    x = job["x"]
    if job["kind"] == "call":
        xi = x if job["batch_first"] else np.ascontiguousarray(x.transpose(1, 0, 2))
        y, h = m(xi, h0=job.get("h0"), lengths=job.get("lengths"), batch_first=job["batch_first"])
        return y, h
    if job["kind"] == "predict":
        return m.predict(x, lengths=job.get("lengths"), all_steps=job["all_steps"]), None
    # stream: the whole-sequence equivalent of stepping through x
    h0 = job.get("h0")
    y, h = m(x, h0=h0)
    out = m.predict(x, h0=h0, all_steps=True) if m.config.head else y
    return out, h


class StreamRun:
    """A stream job advanced chunk by chunk (interleaved with other work)."""

    def __init__(self, m, job):
        self.job = job
        self.s = m.stream(job["x"].shape[0])
        if "h0" in job:
            self.s.state = job["h0"]
        self.pos = 0
        self.k = 0
        self.outs = []

    @property
    def done(self):
        return self.k == len(self.job["chunks"])

    def advance(self):
        c = self.job["chunks"][self.k]
        x = self.job["x"][:, self.pos:self.pos + c]
        out = self.s.step(x[:, 0] if c == 1 else x)          # (B, I) or (B, c, I)
        self.outs.append(out[:, None] if c == 1 else out)
        self.pos += c
        self.k += 1
        if self.k == self.job["roundtrip_state_at"]:
            self.s.state = self.s.state                       # get / set mid-stream: a no-op
        return self.done

    def result(self):
        return np.concatenate(self.outs, axis=1), self.s.state


def run_thread(models, jobs, seed, rounds, results, errors, barrier=None):
    """Runs `jobs` `rounds` times in a shuffled order, streams interleaved
    with whole-sequence calls; appends (job id, result) to results."""
    rng = random.Random(seed)
    try:
        if barrier is not None:
            barrier.wait()
        for _ in range(rounds):
            order = list(jobs)
            rng.shuffle(order)
            open_streams = []
            while order or open_streams:
                if open_streams and (not order or rng.random() < 0.6):
                    st = rng.choice(open_streams)
                    if st.advance():
                        open_streams.remove(st)
                        results.append((st.job["id"], st.result()))
                    continue
                job = order.pop()
                m = models[job["name"]]
                if job["kind"] == "stream":
                    open_streams.append(StreamRun(m, job))
                else:
                    results.append((job["id"], run_whole(m, job)))
    except BaseException as e:                     # reported by the main thread
        errors.append(e)


def check_results(results, reference, jobs_by_id, expect_count=None):
    if expect_count is not None:
        assert len(results) == expect_count
    for jid, (a, h) in results:
        ref_a, ref_h = reference[jid]
        what = f"job {jid} ({jobs_by_id[jid]['kind']} on {jobs_by_id[jid]['name']})"
        assert_array_equal(a, ref_a, err_msg=what)
        if ref_h is not None:
            assert_state_equal(h, ref_h, what)


def start_and_join(threads, timeout=60):
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a worker thread hung"


# ---------------------------------------------------------------------------
# 8+ threads sharing models


@pytest.mark.parametrize("num_threads", [1, 2])
def test_shared_models_many_threads_match_serial(models, num_threads):
    jobs = make_jobs(seed=10, n=150)
    by_id = {j["id"]: j for j in jobs}
    for m in models.values():
        m.num_threads = 1
    reference = {j["id"]: run_whole(models[j["name"]], j) for j in jobs}
    for m in models.values():
        m.num_threads = num_threads

    n_workers = 10
    results: list = []
    errors: list = []
    barrier = threading.Barrier(n_workers + 1)
    # every worker gets its own share plus a common set, so the same inputs
    # are computed by several threads at the same moment
    common = jobs[:10]
    shares = [common + jobs[10 + w::n_workers] for w in range(n_workers)]
    workers = [threading.Thread(target=run_thread,
                                args=(models, shares[w], 100 + w, ROUNDS, results, errors, barrier))
               for w in range(n_workers)]

    # one more thread keeps changing the thread count of the models under the
    # workers' feet: results may not depend on it
    stop = threading.Event()

    def toggler():
        barrier.wait()
        k = 0
        while not stop.is_set():
            for m in models.values():
                m.num_threads = (None, 1, 2, num_threads)[k % 4]
            k += 1
            stop.wait(0.001)

    tog = threading.Thread(target=toggler)
    tog.start()
    try:
        start_and_join(workers)
    finally:
        stop.set()
        tog.join()
    for m in models.values():
        m.num_threads = None
    assert not errors, errors
    check_results(results, reference, by_id, expect_count=ROUNDS * sum(len(s) for s in shares))


def test_many_streams_per_thread_interleaved(models):
    """16 threads, each holding streams of several models at once and
    stepping them one step at a time in lockstep with the others."""
    m = models["head"]
    rng = np.random.default_rng(20)
    x = [xs(rng, 2, 25) for _ in range(16)]
    want = [m.predict(xi, all_steps=True) for xi in x]
    want_u = [models["uni"](xi)[0] for xi in x]
    out = [None] * 16
    errors: list = []
    barrier = threading.Barrier(16)

    def work(i):
        try:
            s_head, s_uni = m.stream(2), models["uni"].stream(2)
            a, b = [], []
            for t in range(25):
                barrier.wait()                          # every thread steps at once
                a.append(s_head.step(x[i][:, t]))
                b.append(s_uni.step(x[i][:, t]))
            out[i] = (np.stack(a, 1), np.stack(b, 1))
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    start_and_join([threading.Thread(target=work, args=(i,)) for i in range(16)])
    assert not errors, errors
    for i in range(16):
        assert_array_equal(out[i][0], want[i])
        assert_array_equal(out[i][1], want_u[i])


# ---------------------------------------------------------------------------
# streams keep their model alive


def _streams_of_a_fresh_model(image: bytes, n: int, B: int):
    """n streams of a model whose only references end up in the streams."""
    m = grulite.from_bytes(image)
    ref = weakref.ref(m)
    streams = [m.stream(B) for _ in range(n)]
    return streams, ref


def test_stream_keeps_model_alive_across_gc_and_threads():
    image = grulite.from_state_dict(make_sd(30, head=(5,)), head="fc0:softmax").to_bytes()
    twin = grulite.from_bytes(image)                  # same bytes: the reference
    rng = np.random.default_rng(31)
    x = [xs(rng, 3, 30) for _ in range(8)]
    want = [twin.predict(xi, all_steps=True) for xi in x]

    streams, ref = _streams_of_a_fresh_model(image, 8, 3)
    gc.collect()
    model = ref()
    assert model is not None, "the model was freed while streams made from it are alive"
    assert all(s.model is model for s in streams)          # Stream.model keeps it
    del model

    # step the first 10 steps here, the rest in 8 threads, after another collect
    first = [s.step(xi[:, :10]) for s, xi in zip(streams, x)]
    gc.collect()
    out = [None] * 8
    errors: list = []

    def work(i):
        try:
            rest = [streams[i].step(x[i][:, t]) for t in range(10, 30)]  # noqa: F821 (deleted after the threads)
            out[i] = np.concatenate([first[i], np.stack(rest, 1)], axis=1)
        except BaseException as e:
            errors.append(e)

    start_and_join([threading.Thread(target=work, args=(i,)) for i in range(8)])
    assert not errors, errors
    for i in range(8):
        assert_array_equal(out[i], want[i])

    # the last stream gone, the model goes too (no leak through the stream)
    del streams, work
    gc.collect()
    assert ref() is None, "the model outlived every stream made from it"


def test_model_dropped_by_its_creator_thread():
    """A thread builds a model, hands streams to other threads and drops its
    reference; the receivers keep stepping (the model is freed by whichever
    thread drops the last stream)."""
    image = grulite.from_state_dict(make_sd(40, hidden=(24, 16)), reset_after=[False, True]).to_bytes()
    twin = grulite.from_bytes(image)
    rng = np.random.default_rng(41)
    x = [xs(rng, 2, 20) for _ in range(8)]
    want = [twin(xi) for xi in x]
    q: queue.Queue = queue.Queue()
    refs: list = []

    def creator():
        m = grulite.from_bytes(image)
        refs.append(weakref.ref(m))
        for _ in range(8):
            q.put(m.stream(2))
        del m                         # the creator keeps nothing
        gc.collect()

    out = [None] * 8
    errors: list = []

    def user(i):
        try:
            s = q.get(timeout=30)
            ys = [s.step(x[i][:, t]) for t in range(20)]
            out[i] = (np.stack(ys, 1), s.state)
            del s                     # this thread may free the model
            gc.collect()
        except BaseException as e:
            errors.append(e)

    c = threading.Thread(target=creator)
    c.start()
    c.join()
    start_and_join([threading.Thread(target=user, args=(i,)) for i in range(8)])
    assert not errors, errors
    for i in range(8):
        assert_array_equal(out[i][0], want[i][0])
        assert_state_equal(out[i][1], want[i][1])
    gc.collect()
    assert refs[0]() is None


# ---------------------------------------------------------------------------
# no global mutable state: kernel sets forced per model


def _isa_choices() -> list:
    avail = grulite.available_isas()
    out = ["generic"]
    if "avx2" in avail:
        out.append("avx2")
    if "neon" in avail:
        out.append("neon")
    out.append(avail[-1])                          # the best
    return list(dict.fromkeys(out))


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_models_with_different_kernel_sets_run_concurrently(dtype):
    isas = _isa_choices()
    if len(isas) < 2:
        pytest.skip("this CPU and build run only one kernel set")
    image = grulite.from_state_dict(make_sd(50, hidden=(40, 40), head=(6,)), head="fc0:softmax",
                                    dtype=dtype).to_bytes()
    rng = np.random.default_rng(51)
    inputs = [(xs(rng, int(B), 20), rng.integers(1, 21, size=int(B)))
              for B in rng.choice([1, 3, 8], size=6)]

    models = {}
    for isa in isas:
        m = grulite.from_bytes(image)
        m.isa = isa
        assert m.isa == isa
        models[isa] = m
    serial = {isa: [(m(x, lengths=L), m.predict(x, lengths=L)) for x, L in inputs]
              for isa, m in models.items()}
    stream_serial = {isa: m.predict(inputs[0][0], all_steps=True) for isa, m in models.items()}
    # the kernel sets really differ here, or the test would prove nothing
    distinct = {serial[isa][0][0][0].tobytes() for isa in isas}
    if len(distinct) < 2:
        pytest.skip(f"kernel sets {isas} give identical bits here: mixing could not be seen")

    errors: list = []
    got: dict = {isa: [] for isa in isas}
    barrier = threading.Barrier(3 * len(isas))

    def work(isa, seed):
        try:
            m = models[isa]
            r = random.Random(seed)
            barrier.wait()
            s = m.stream(inputs[0][0].shape[0])
            steps = []
            for _ in range(4):
                order = list(range(len(inputs)))
                r.shuffle(order)
                for k in order:
                    x, L = inputs[k]
                    got[isa].append((k, m(x, lengths=L), m.predict(x, lengths=L)))
                    if len(steps) < 20:
                        steps.append(s.step(inputs[0][0][:, len(steps)]))
            got[isa].append(("stream", np.stack(steps, 1)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(isa, 60 + 10 * i + j))
               for i, isa in enumerate(isas) for j in range(3)]
    start_and_join(threads)
    assert not errors, errors
    for isa in isas:
        assert models[isa].isa == isa
        for item in got[isa]:
            if item[0] == "stream":
                assert_array_equal(item[1], stream_serial[isa], err_msg=isa)
                continue
            k, (y, h), p = item
            (y0, h0), p0 = serial[isa][k]
            assert_array_equal(y, y0, err_msg=f"{isa} input {k}")
            assert_array_equal(h, h0, err_msg=f"{isa} input {k}")
            assert_array_equal(p, p0, err_msg=f"{isa} input {k}")


# ---------------------------------------------------------------------------
# saved and memory-mapped models


def test_mmap_models_from_threads(tmp_path):
    src = grulite.from_state_dict(make_sd(70, hidden=(40, 40), head=(6,)), head="fc0:softmax")
    paths = {}
    for dtype in ("float32", "float16", "int8"):
        paths[dtype] = str(tmp_path / f"m_{dtype}.grl")
        src.save(paths[dtype], dtype=dtype)
    rng = np.random.default_rng(71)
    inputs = [xs(rng, int(B), int(T)) for B, T in [(1, 30), (4, 12), (8, 40), (3, 1)]]
    reference = {}
    for dtype, p in paths.items():
        m = grulite.load(p)
        reference[dtype] = [(m(x), m.predict(x)) for x in inputs]

    shared = {dtype: grulite.load(p) for dtype, p in paths.items()}   # one mapping, many threads
    errors: list = []
    done: list = []

    def work(i):
        try:
            dtype = list(paths)[i % 3]
            # half the threads map the file themselves, concurrently with the others
            m = grulite.load(paths[dtype]) if i % 2 else shared[dtype]
            assert m.path == os.path.abspath(paths[dtype])
            for _ in range(3):
                for k, x in enumerate(inputs):
                    (y, h), p = m(x), m.predict(x)
                    (y0, h0), p0 = reference[dtype][k]
                    assert_array_equal(y, y0)
                    assert_array_equal(h, h0)
                    assert_array_equal(p, p0)
            s = m.stream(inputs[1].shape[0])
            out = np.stack([s.step(inputs[1][:, t]) for t in range(inputs[1].shape[1])], 1)
            assert_array_equal(out, m.predict(inputs[1], all_steps=True))
            done.append(i)
        except BaseException as e:
            errors.append(e)

    start_and_join([threading.Thread(target=work, args=(i,)) for i in range(12)])
    assert not errors, errors
    assert len(done) == 12


def test_concurrent_build_save_and_load(tmp_path):
    """Conversion and saving run without the GIL: threads building, converting
    and saving at once produce exactly the serial images."""
    sds = [make_sd(80 + i, hidden=(16 + 8 * i, 24)) for i in range(4)]
    serial = [grulite.from_state_dict(sd).to_bytes() for sd in sds]
    serial_i8 = [grulite.from_bytes(b).astype("int8").to_bytes() for b in serial]
    errors: list = []

    def work(i):
        try:
            k = i % 4
            m = grulite.from_state_dict(sds[k])
            assert m.to_bytes() == serial[k]
            assert m.astype("int8").to_bytes() == serial_i8[k]
            p = str(tmp_path / f"w{i}.grl")
            m.save(p, dtype="int8" if i % 2 else None)
            assert grulite.load(p).to_bytes() == (serial_i8[k] if i % 2 else serial[k])
        except BaseException as e:
            errors.append(e)

    start_and_join([threading.Thread(target=work, args=(i,)) for i in range(12)])
    assert not errors, errors


# ---------------------------------------------------------------------------
# misuse: one stream stepped from several threads


SHARED_STREAM_CHILD = textwrap.dedent(r"""
    import itertools, threading
    import numpy as np
    import grulite
    rng = np.random.default_rng(0)
    I, H = 16, 64
    sd = {"gru.weight_ih_l0": rng.standard_normal((3 * H, I)).astype(np.float32) * .1,
          "gru.weight_hh_l0": rng.standard_normal((3 * H, H)).astype(np.float32) * .1}
    m = grulite.from_state_dict(sd)
    big = rng.standard_normal((2, 6000, I)).astype(np.float32)
    refused = 0
    for attempt in range(3):
        s = m.stream(2)
        # growing chunks: each step may grow the stream's scratch while the
        # other threads are computing in it
        counter = itertools.count(200 + attempt, 7)
        def work():
            global refused
            while True:
                T = next(counter)
                if T >= 6000:
                    return
                try:
                    s.step(np.ascontiguousarray(big[:, :T]))
                except grulite.GruliteError:
                    refused += 1
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts: t.start()
        for t in ts: t.join()
    print("ok", refused)
""")


def test_stream_shared_between_threads_does_not_crash():
    """Misuse (a stream is one-thread-at-a-time) must give an exception or
    serialized steps, never a crash of the interpreter."""
    p = subprocess.run([sys.executable, "-c", SHARED_STREAM_CHILD], capture_output=True,
                       text=True, timeout=120, env=child_env())
    assert p.returncode == 0, (f"the child died with status {p.returncode} "
                               f"(negative: killed by signal {-p.returncode})\n{p.stderr[-1500:]}")
    assert p.stdout.startswith("ok")


def test_hidden_unit_split_with_more_threads_than_cores():
    """Single sequences of a large layer run its hidden units on two threads
    that meet at a spinning barrier once a step (src/core/layers/gru.c); with several
    callers, each with its own pool, there are more threads than cores and
    the waiters park instead of spinning (threads.c).  Every call must still
    finish with the serial bits."""
    sd = random_state_dict(90, I, (264,), head=())
    m = grulite.from_state_dict(sd, num_threads=2)
    rng = np.random.default_rng(91)
    xs = [rng.standard_normal((1, 30, I)).astype(np.float32) for _ in range(6)]
    serial = grulite.from_state_dict(sd, num_threads=1)
    want = [serial(x) for x in xs]
    errors = queue.Queue()

    def worker(k):
        try:
            for r in range(12):
                i = (k + r) % len(xs)
                y, h = m(xs[i])
                assert_array_equal(y, want[i][0])
                assert_array_equal(h, want[i][1])
        except BaseException as e:      # noqa: BLE001 - reported below
            errors.put(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a caller hung"
    assert errors.empty(), errors.get()
