"""grulite.dask: batch inference over dask arrays, on the threaded scheduler
and on a dask.distributed LocalCluster of 2 worker processes.

Results must equal the single-process call bit for bit; the model must
travel to each worker once, not with every task (measured with the
per-process model cache's counters, read on every worker with
``client.run``); a model file that changed after the graph was built must
be refused with a clear error raised from the worker.  Small sizes: the
whole module runs in a few seconds plus the cluster's start."""
from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import grulite  # noqa: E402
import grulite.dask as gd  # noqa: E402
from grulite._model import model_cache  # noqa: E402
from support.models import random_state_dict  # noqa: E402

N, T, I, H, CLASSES = 480, 12, 6, 16, 5
CHUNK = 20                                    # 24 tasks: many more than the 2 workers


def make_model(seed=0, hidden=H, bidirectional=False, head=True, layers=2, batch_first=True):
    sd = random_state_dict(seed, I, (hidden,) * layers, bidirectional, (CLASSES,) if head else (),
                           head_names=["fc"])
    return grulite.from_state_dict(sd, head="fc:softmax" if head else None,
                                   batch_first=batch_first)


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(42)
    x = r.standard_normal((N, T, I)).astype(np.float32)
    lengths = r.integers(1, T + 1, N)
    return x, lengths


@pytest.fixture(scope="module")
def grl(tmp_path_factory):
    p = tmp_path_factory.mktemp("dask") / "model.grl"
    make_model(0).save(p)
    return p


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    try:
        c.wait_for_workers(2, timeout=60)
        yield c
    finally:
        c.close()
        cluster.close()


def reset_counters(client):
    client.run(gd.cache_clear)
    client.run_on_scheduler(gd.cache_clear)


# ---------------------------------------------------------------------------
# on the cluster


def test_distributed_equals_local(client, grl, data):
    x, _ = data
    m = grulite.load(grl)
    p = gd.predict(m, da.from_array(x, chunks=(CHUNK, T, I)))
    assert p.shape == (N, CLASSES) and p.dtype == np.float32
    assert p.chunks == ((CHUNK,) * (N // CHUNK), (CLASSES,))
    np.testing.assert_array_equal(p.compute(), m.predict(x))


def test_distributed_outputs_and_lengths(client, data):
    x, lengths = data
    m = make_model(3, bidirectional=True)     # in memory: travels as its image
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    ld = da.from_array(lengths, chunks=50)    # other chunks than x: realigned
    y, h_n, head = gd.predict(m, xd, ld, outputs=("y", "h_n", "head"), batch_size=7)
    assert y.chunks == (xd.chunks[0], (T,), (2 * H,))
    assert h_n.chunks == ((4,), xd.chunks[0], (H,))
    assert head.chunks == (xd.chunks[0], (CLASSES,))
    y_l, h_l = m(x, lengths=lengths)
    got = client.compute([y, h_n, head], sync=True)
    np.testing.assert_array_equal(got[0], y_l)
    np.testing.assert_array_equal(got[1], h_l)
    np.testing.assert_array_equal(got[2], m.predict(x, lengths))
    assert (got[0][lengths < T, -1] == 0).all()


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_model_sent_once_per_worker(client, grl, data, kind):
    """24 tasks, 2 workers: each worker deserializes the model once per run
    (and maps the file once), the scheduler never does; a second run
    reuses the workers' mapping.  (A worker may fetch the model a second
    time when the scheduler's memory manager dropped its replica near the
    end of a run: rare, and still not per task.)"""
    x, _ = data
    m = grulite.load(grl) if kind == "file" else make_model(5)
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    assert xd.numblocks[0] == 24
    reset_counters(client)
    for run in range(2):
        np.testing.assert_array_equal(gd.predict(m, xd).compute(), m.predict(x))
        infos = client.run(gd.cache_info)
        assert len(infos) == 2
        for info in infos.values():
            assert info["unpickles"] <= 2 * (run + 1), infos  # per worker, not per task
            assert info["loads"] <= 1, infos                  # one mapping per process
        total = sum(i["unpickles"] for i in infos.values())
        assert 1 <= total <= 4 * (run + 1) < xd.numblocks[0] * (run + 1), infos
        assert client.run_on_scheduler(gd.cache_info)["unpickles"] == 0


def test_counter_sees_per_task_shipping(client, grl, data):
    """The measurement above is sensitive: a model given to map_blocks as a
    plain argument is embedded in every task and unpickled once per task."""
    x, _ = data
    m = grulite.load(grl)
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    reset_counters(client)
    naive = da.blockwise(lambda b, model: model.predict(b), "nj", xd, "ntk", m, None,
                         new_axes={"j": CLASSES}, concatenate=True, dtype=np.float32)
    np.testing.assert_array_equal(naive.compute(), m.predict(x))
    infos = client.run(gd.cache_info)
    assert sum(i["unpickles"] for i in infos.values()) >= xd.numblocks[0]
    assert all(i["loads"] <= 1 for i in infos.values())   # still mapped once, by the cache


def test_changed_file_is_detected_on_the_workers(client, tmp_path, data):
    x, _ = data
    p = tmp_path / "changing.grl"
    make_model(0).save(p)
    m = grulite.load(p)
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    gd.predict(m, xd).compute()               # workers have it mapped and cached
    tmp = str(p) + ".new"
    make_model(1).save(tmp)
    os.replace(tmp, p)
    new_sum = grulite.load(p).checksum
    with pytest.raises(grulite.GruliteError,
                       match=rf"changing\.grl' changed since it was pickled: checksum "
                             rf"{new_sum:#010x}, expected {m.checksum:#010x}"):
        gd.predict(m, xd).compute()
    # The new file, loaded anew, runs.
    m2 = grulite.load(p)
    np.testing.assert_array_equal(gd.predict(m2, xd).compute(), m2.predict(x))


def test_missing_file_is_reported_from_the_workers(client, tmp_path, data):
    x, _ = data
    p = tmp_path / "gone.grl"
    make_model(0).save(p)
    m = grulite.load(p)
    os.remove(p)
    with pytest.raises(FileNotFoundError, match=r"gone\.grl' of a pickled grulite model"):
        gd.predict(m, da.from_array(x, chunks=(CHUNK, T, I))).compute()


# ---------------------------------------------------------------------------
# local schedulers and the graph


def test_threaded_scheduler(grl, data):
    x, lengths = data
    model_cache.clear()
    m = grulite.load(grl)
    xd = da.from_array(x, chunks=(CHUNK, 5, I))          # chunked along T too: merged
    p = gd.predict(m, xd, lengths)
    assert p.numblocks == (24, 1)
    np.testing.assert_array_equal(p.compute(scheduler="threads"), m.predict(x, lengths))
    y = gd.predict(m, xd, lengths, outputs="y", batch_size=64)
    np.testing.assert_array_equal(y.compute(scheduler="threads"), m(x, lengths=lengths)[0])
    # In-process the graph holds the model itself: nothing is pickled.
    assert model_cache.info()["unpickles"] == 0


def test_synchronous_scheduler_and_all_outputs(data):
    x, lengths = data
    m = make_model(7, head=True)
    xd = da.from_array(x, chunks=(100, T, I))            # uneven last block
    hs = gd.predict(m, xd, lengths, outputs="head_steps")
    assert hs.chunks == (xd.chunks[0], (T,), (CLASSES,))
    np.testing.assert_array_equal(hs.compute(scheduler="sync"),
                                  m.predict(x, lengths, all_steps=True))
    (h_n,) = gd.predict(m, xd, outputs=["h_n"])
    np.testing.assert_array_equal(h_n.compute(scheduler="sync"), m(x)[1])


def test_default_output_without_a_head(data):
    x, _ = data
    m = make_model(8, head=False)
    y = gd.predict(m, da.from_array(x, chunks=(CHUNK, T, I)))
    assert y.shape == (N, T, H)
    np.testing.assert_array_equal(y.compute(scheduler="threads"), m(x)[0])


def test_time_major_model_takes_batch_first_blocks(data):
    """x is (N, T, I) whatever the model's default layout."""
    x, _ = data
    tm = make_model(0, batch_first=False)
    assert not tm.config.batch_first
    p = gd.predict(tm, da.from_array(x, chunks=(CHUNK, T, I)))
    np.testing.assert_array_equal(p.compute(scheduler="sync"), tm.predict(x, batch_first=True))
    y = gd.predict(tm, da.from_array(x, chunks=(CHUNK, T, I)), outputs="y")
    np.testing.assert_array_equal(y.compute(scheduler="sync"), tm(x, batch_first=True)[0])


def test_model_node_for_custom_code(grl, data):
    x, _ = data
    m = grulite.load(grl)
    node = gd.model_node(m)
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    out = da.blockwise(lambda b, ref: ref.get().predict(b).argmax(1), "n", xd, "ntk",
                       node, None, concatenate=True, meta=np.empty((0,), np.int64))
    np.testing.assert_array_equal(out.compute(scheduler="threads"), m.predict(x).argmax(1))


def test_graph_carries_the_model_once(data):
    """Bytes in the task graph: one node holds the model's image, each task
    only refers to it (a plain map_blocks argument would copy the image
    into every task)."""
    import cloudpickle
    x, _ = data
    m = make_model(0, hidden=128)
    assert m.nbytes > 300_000
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    graph = dict(gd.predict(m, xd).__dask_graph__())
    sizes = {k: len(cloudpickle.dumps(v)) for k, v in graph.items()}
    tasks = [n for k, n in sizes.items() if isinstance(k, tuple) and k[0].startswith("grulite-predict")]
    models = [n for k, n in sizes.items() if str(k).startswith("grulite-model")]
    assert len(tasks) == 24 and max(tasks) < 2_000
    assert len(models) == 1 and m.nbytes <= models[0] < m.nbytes + 1_000


def test_empty_blocks(data):
    x, _ = data
    m = make_model(0)
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    sel = xd[xd[:, 0, 0] > 10]                           # no rows, unknown chunks
    res = gd.predict(m, sel).compute(scheduler="sync")
    assert res.shape == (0, CLASSES)


def test_bad_arguments(data):
    x, lengths = data
    m = make_model(0)
    headless = make_model(0, head=False)
    xd = da.from_array(x, chunks=(CHUNK, T, I))
    err = grulite.GruliteError
    with pytest.raises(err, match="expects input_size=6"):
        gd.predict(m, da.zeros((10, 3, 4), chunks=5))
    with pytest.raises(err, match="3-D"):
        gd.predict(m, da.zeros((10, 6), chunks=5))
    with pytest.raises(err, match="float32 or float64"):
        gd.predict(m, da.zeros((10, 3, 6), dtype=np.int32, chunks=5))
    with pytest.raises(err, match="unknown output 'logits'"):
        gd.predict(m, xd, outputs="logits")
    with pytest.raises(err, match="needs a model with a head"):
        gd.predict(headless, xd, outputs="head")
    with pytest.raises(err, match=r"lengths has shape \(3,\); expected \(480,\)"):
        gd.predict(m, xd, [1, 2, 3])
    with pytest.raises(err, match="lengths must be integers"):
        gd.predict(m, xd, lengths.astype(np.float32))
    with pytest.raises(err, match="batch_size must be an int"):
        gd.predict(m, xd, batch_size=0)
    with pytest.raises(TypeError, match="grulite.Model"):
        gd.predict("model.grl", xd)
    bad = lengths.copy()
    bad[5] = T + 1                                       # found when the block runs
    with pytest.raises(err, match=r"lengths\[5\] = 13 is outside \[1, 12\]"):
        gd.predict(m, xd, bad).compute(scheduler="sync")


def test_import_error_without_dask(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.delitem(sys.modules, "grulite.dask")
    import importlib
    with pytest.raises(ImportError, match=r'pip install "grulite\[dask\]"'):
        importlib.import_module("grulite.dask")
