"""Pickling and copying models.

A model loaded from a .grl file pickles by reference (path, checksum,
settings); a model built in memory pickles as its image.  Unpickling goes
through a per-process cache (grulite._model.model_cache): one mapping per
file and process, the same Model object for repeated unpickles, and a file
that changed since the pickle was made is refused."""
from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import os
import pickle
import threading

import numpy as np
import pytest

import grulite
from grulite._model import model_cache
from support.models import random_state_dict


def make_model(seed=0, input_size=6, hidden=24, layers=2, head=True, bidirectional=False):
    sd = random_state_dict(seed, input_size, (hidden,) * layers, bidirectional, (5,) if head else (),
                           head_names=["fc"])
    return grulite.from_state_dict(sd, head="fc:softmax" if head else None)


def xs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def replace_file(path, model):
    """Writes `model` over `path` as a new file (new inode), as tools that
    save atomically do; the old mapping stays valid."""
    tmp = str(path) + ".new"
    model.save(tmp)
    os.replace(tmp, path)


@pytest.fixture(autouse=True)
def empty_cache():
    model_cache.clear()
    yield
    model_cache.clear()


@pytest.fixture
def grl(tmp_path):
    p = tmp_path / "model.grl"
    make_model(0).save(p)
    return p


def assert_same_outputs(a, b, lengths=True):
    x = xs((7, 11, a.config.input_size), seed=3)
    L = np.array([11, 1, 5, 11, 2, 9, 4]) if lengths else None
    ya, ha = a(x, lengths=L)
    yb, hb = b(x, lengths=L)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(ha, hb)
    if a.config.head:
        np.testing.assert_array_equal(a.predict(x, L), b.predict(x, L))


# ---------------------------------------------------------------------------
# the two kinds


def test_file_model_pickles_by_reference(grl):
    m = grulite.load(grl)
    data = pickle.dumps(m)
    assert len(data) < 300                     # path + checksum, not the weights
    assert m.nbytes > 20 * len(data)
    assert str(grl).encode() in data
    u = pickle.loads(data)
    assert u is not m
    assert u.path == m.path and u.checksum == m.checksum and u.nbytes == m.nbytes
    assert_same_outputs(m, u)


def test_pickled_size_does_not_grow_with_the_model(tmp_path):
    small, big = tmp_path / "small.grl", tmp_path / "big.grl"
    make_model(0, hidden=8, layers=1).save(small)
    make_model(0, hidden=256, layers=3).save(big)
    s, b = pickle.dumps(grulite.load(small)), pickle.dumps(grulite.load(big))
    assert grulite.load(big).nbytes > 1_000_000
    assert abs(len(s) - len(b)) <= 8           # only the checksum's width may differ


def test_memory_model_pickles_as_its_image():
    m = make_model(1)
    assert m.path is None
    data = pickle.dumps(m)
    assert m.nbytes <= len(data) < m.nbytes + 300
    u = pickle.loads(data)
    assert u.path is None and u.checksum == m.checksum
    assert u.to_bytes() == m.to_bytes()
    assert_same_outputs(m, u)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol(grl, protocol):
    for m in (grulite.load(grl), make_model(2, bidirectional=True, head=False)):
        u = pickle.loads(pickle.dumps(m, protocol=protocol))
        assert_same_outputs(m, u)


def test_settings_travel(grl):
    m = grulite.load(grl, num_threads=1)
    m.isa = "generic"
    u = pickle.loads(pickle.dumps(m))
    assert u.num_threads == 1 and u.isa == "generic"
    assert_same_outputs(m, u)
    # The default settings are not pinned: the unpickling process picks its own.
    d = pickle.loads(pickle.dumps(grulite.load(grl)))
    assert d.isa == grulite.available_isas()[-1] or os.environ.get("GRULITE_ISA")
    assert d is not u                          # other settings, another object


# ---------------------------------------------------------------------------
# the per-process cache


def test_cache_returns_the_same_object(grl):
    data = pickle.dumps(grulite.load(grl))
    a, b = pickle.loads(data), pickle.loads(data)
    assert a is b
    info = model_cache.info()
    assert (info["unpickles"], info["loads"], info["hits"]) == (2, 1, 1)
    # A second pickle of another load of the same file finds it too.
    assert pickle.loads(pickle.dumps(grulite.load(grl))) is a
    # Through a symlink: keyed by the real path.
    link = grl.parent / "link.grl"
    link.symlink_to(grl)
    assert pickle.loads(pickle.dumps(grulite.load(link))) is a
    assert model_cache.info()["loads"] == 1


def test_cache_of_memory_models():
    m = make_model(4)
    data = pickle.dumps(m)
    assert pickle.loads(data) is pickle.loads(data)
    other = make_model(5)
    assert pickle.loads(pickle.dumps(other)) is not pickle.loads(data)
    assert model_cache.info()["loads"] == 2


def test_cache_keeps_recent_models_alive(grl):
    data = pickle.dumps(grulite.load(grl))
    first_id = id(pickle.loads(data))          # nothing else holds it
    assert id(pickle.loads(data)) == first_id
    assert model_cache.info()["loads"] == 1


def test_cache_is_thread_safe(grl):
    data = pickle.dumps(grulite.load(grl))
    got, barrier = [], threading.Barrier(8)

    def work():
        barrier.wait()
        got.append(pickle.loads(data))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in got}) == 1
    assert model_cache.info()["loads"] == 1


def _child_task(data, x):
    m = pickle.loads(data)
    return os.getpid(), id(m), m.predict(x), model_cache.info()


def test_other_process_maps_the_file_once(grl):
    m = grulite.load(grl)
    x = xs((4, 9, 6))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        res = list(pool.map(_child_task, [pickle.dumps(m)] * 5, [x] * 5))
    assert len({r[0] for r in res}) == 1 and res[0][0] != os.getpid()
    assert len({r[1] for r in res}) == 1       # one Model object in the child
    for r in res:
        np.testing.assert_array_equal(r[2], m.predict(x))
    assert res[-1][3]["unpickles"] == 5 and res[-1][3]["loads"] == 1


# ---------------------------------------------------------------------------
# changed and missing files


@pytest.mark.parametrize("warm", [False, True])
def test_changed_file_is_refused(grl, warm):
    m = grulite.load(grl)
    data = pickle.dumps(m)
    if warm:
        pickle.loads(data)                     # cached, then the file changes
    replace_file(grl, make_model(9))
    new_sum = grulite.load(grl).checksum
    with pytest.raises(grulite.GruliteError,
                       match=rf"model file .*model\.grl' changed since it was pickled: checksum "
                             rf"{new_sum:#010x}, expected {m.checksum:#010x}"):
        pickle.loads(data)
    # A pickle of the new file is fine, and the old model keeps working.
    assert pickle.loads(pickle.dumps(grulite.load(grl))).checksum == new_sum
    assert_same_outputs(m, make_model(0))


def test_file_changed_into_garbage(grl):
    data = pickle.dumps(grulite.load(grl))
    tmp = str(grl) + ".new"
    with open(tmp, "wb") as f:
        f.write(b"not a model at all")
    os.replace(tmp, grl)
    with pytest.raises(grulite.GruliteError, match="changed since it was pickled.*no longer a "
                                                   "valid model"):
        pickle.loads(data)


def test_rewritten_with_the_same_content_is_accepted(grl):
    data = pickle.dumps(grulite.load(grl))
    a = pickle.loads(data)
    replace_file(grl, make_model(0))           # new inode, same bytes
    b = pickle.loads(data)
    assert b.checksum == a.checksum
    assert model_cache.info()["loads"] == 2    # mapped again, checked, accepted


@pytest.mark.parametrize("warm", [False, True])
def test_missing_file(grl, warm):
    data = pickle.dumps(grulite.load(grl))
    if warm:
        pickle.loads(data)
    os.remove(grl)
    with pytest.raises(FileNotFoundError, match=r"model\.grl' of a pickled grulite model does "
                                                r"not exist on"):
        pickle.loads(data)


def test_incompatible_state():
    from grulite._model import _unpickle_model
    with pytest.raises(grulite.GruliteError, match="incompatible grulite version"):
        _unpickle_model({"v": 99})


# ---------------------------------------------------------------------------
# copy


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_copy_and_deepcopy_are_independent(grl, kind):
    m = grulite.load(grl) if kind == "file" else make_model(0)
    m.num_threads = 1
    for c in (copy.copy(m), copy.deepcopy(m)):
        assert c is not m and c._core is not m._core
        assert c.path == m.path and c.checksum == m.checksum and c.num_threads == 1
        assert_same_outputs(m, c)
        c.isa = "generic"                      # reconfiguring a copy leaves m alone
        assert m.isa == grulite.available_isas()[-1] or os.environ.get("GRULITE_ISA")
        c.num_threads = 2
        assert m.num_threads == 1
    assert model_cache.info()["unpickles"] == 0   # copies bypass the cache


def test_deepcopy_keeps_sharing_inside_a_structure(grl):
    m = grulite.load(grl)
    a, b = copy.deepcopy([m, m])
    assert a is b and a is not m


def test_copy_of_a_changed_file_model_copies_the_image(grl):
    m = grulite.load(grl)
    replace_file(grl, make_model(7))
    c = copy.copy(m)
    assert c.path is None and c.checksum == m.checksum
    assert_same_outputs(m, c)
