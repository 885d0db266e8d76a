"""Hostile .npz files (grulite.from_npz): the generic mutations and the
format's own cases (machinery: hostile_files.py).
"""
from __future__ import annotations

import os
import pickle
import zlib

import numpy as np

from hostile_files import SD, SD_KW, Case, deflate_zero_bomb, file_matrix, mutations, touch_cmd
from support.files import Evil, npy_bytes, stored, write_zip

# .npz ------------------------------------------------------------------------------------

def npz_base(d):
    p = os.path.join(d, "base.npz")
    if not os.path.exists(p):
        np.savez(p, **SD)
    return p


def npz_compressed_base(d):
    p = os.path.join(d, "basec.npz")
    if not os.path.exists(p):
        np.savez_compressed(p, **SD)
    return p


def _npz(name, entries_fn):
    def build(d):
        return write_zip(os.path.join(d, f"npz_{name}.npz"), entries_fn(d))
    return build


def _npz_sd_entries(extra=()):
    return [stored(f"{k}.npy", npy_bytes(a)) for k, a in SD.items()] + list(extra)


def _npz_pickle_member(d):
    marker = os.path.join(d, "PWNED_npz")
    payload = pickle.dumps(np.array([Evil(touch_cmd(marker))], dtype=object), protocol=2)
    member = npy_bytes(header={"descr": "|O", "fortran_order": False, "shape": (1,)}, data=b"")
    # np.save of an object array writes the header then the pickle of the array
    member = member + payload
    return _npz_sd_entries([stored("gru.extra.npy", member)])


def _npz_bomb_unused(d):
    hdr = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (1 << 28,)})
    data, crc, size = deflate_zero_bomb(1024, hdr)
    return _npz_sd_entries([("optimizer.state.npy", 8, data, crc, size)])


def _npz_bomb_used(d):
    hdr = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (1 << 26,)})
    data, crc, size = deflate_zero_bomb(256, hdr)
    entries = [e for e in _npz_sd_entries() if e[0] != "gru.weight_ih_l0.npy"]
    return entries + [("gru.weight_ih_l0.npy", 8, data, crc, size)]


def _npz_lying_size(d):
    entries = _npz_sd_entries()
    name, method, data, crc, _ = entries[0]
    entries[0] = (name, method, data, crc, 0xFFFFFFFF)
    return entries


NPZ_CASES = mutations("npz", npz_base, ".npz", match_trunc=r"not a readable \.npz",
                       match_magic=r"not a readable \.npz", kwargs=SD_KW)
NPZ_CASES += mutations("npzc", npz_compressed_base, ".npz", match_trunc=r"not a readable \.npz",
                        match_magic=r"not a readable \.npz", kwargs=SD_KW)
for c in NPZ_CASES:
    c.importer = "npz"
NPZ_CASES += [
    Case("npz-single-npy", "npz",
         lambda d: (np.save(os.path.join(d, "single.npy"), np.zeros(3)),
                    os.rename(os.path.join(d, "single.npy"), os.path.join(d, "single.npz")),
                    os.path.join(d, "single.npz"))[-1],
         match=r"holds a single array, not a state_dict"),
    Case("npz-pickle-member", "npz", _npz("pickle", _npz_pickle_member), kwargs=SD_KW,
         match=r"allow_pickle=False|Object arrays", marker=True),
    Case("npz-shape-2**40", "npz", _npz("shape", lambda d: _npz_sd_entries([stored(
        "gru.big.npy", npy_bytes(header={"descr": "<f4", "fortran_order": False,
                                         "shape": (1 << 40,)}, data=bytes(64)))])),
         kwargs=SD_KW, match=r"not a readable \.npz"),
    Case("npz-shape-16GiB-truncated", "npz", _npz("shape16", lambda d: _npz_sd_entries([stored(
        "gru.big.npy", npy_bytes(header={"descr": "<f4", "fortran_order": False,
                                         "shape": (1 << 32,)}, data=bytes(64)))])),
         kwargs=SD_KW, match=r"not a readable \.npz"),
    # a stored member declaring 4 GiB: zipfile reads the real bytes, the arrays are right
    Case("npz-lying-zip-size", "npz", _npz("lie", _npz_lying_size), kwargs=SD_KW, ok_allowed=True,
         match=r"not a readable \.npz"),
    Case("npz-deflate-bomb-unused-member", "npz", _npz("bomb_unused", _npz_bomb_unused),
         kwargs=SD_KW, ok_allowed=True),
    Case("npz-deflate-bomb-as-weight", "npz", _npz("bomb_used", _npz_bomb_used), kwargs=SD_KW,
         match=r"shape|missing"),
]


file_results, test_hostile_file = file_matrix(NPZ_CASES)


def test_bombs_are_what_they_claim():
    data, crc, size = deflate_zero_bomb(1024)
    assert size == 1 << 30 and len(data) < 1_100_000
    d = zlib.decompressobj(-15)
    out = d.decompress(data[:200_000], 1 << 20)
    assert out == bytes(len(out)) and len(out) == 1 << 20
