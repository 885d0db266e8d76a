"""Hostile torch.save'd files (grulite.from_torch_file): the generic mutations and the
format's own cases (machinery: hostile_files.py).
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

from hostile_files import (
    SD,
    SD_KW,
    Case,
    deflate_zero_bomb,
    file_matrix,
    mutations,
    pickle_payloads,
    pt_state_dict,
    write_pt,
)
from support.files import stored, write_zip

# .pt ---------------------------------------------------------------------------------------

def pt_base(d):
    p = os.path.join(d, "base.pt")
    if not os.path.exists(p):
        pkl, rec = pt_state_dict(SD)
        write_pt(p, pkl, rec)
    return p


def _pt(name, fn):
    def build(d):
        return fn(d, os.path.join(d, f"pt_{name}.pt"))
    return build


def _pt_payload(kind):
    def build(d, p):
        marker = os.path.join(d, f"PWNED_pt_{kind}")
        _, rec = pt_state_dict(SD)
        return write_pt(p, pickle_payloads(marker)[kind], rec)
    return build


def _pt_numel(d, p):
    pkl, rec = pt_state_dict(SD, numel={"gru.weight_ih_l0": 2 ** 62})
    return write_pt(p, pkl, rec)


def _pt_shape(d, p):
    pkl, rec = pt_state_dict(SD, shapes={"gru.weight_ih_l0": (2 ** 31, 2 ** 31)})
    return write_pt(p, pkl, rec)


def _pt_lying_size(d, p):
    pkl, rec = pt_state_dict(SD)
    entries = [stored("archive/data.pkl", pkl), stored("archive/byteorder", b"little")]
    for k, v in rec.items():
        e = stored(f"archive/data/{k}", v)
        entries.append(e[:4] + (0xFFFFFFFF,) if k == "0" else e)
    return write_zip(p, entries)


def _pt_pkl_bomb(d, p):
    data, crc, size = deflate_zero_bomb(1024)
    _, rec = pt_state_dict(SD)
    entries = [("archive/data.pkl", 8, data, crc, size), stored("archive/byteorder", b"little")]
    entries += [stored(f"archive/data/{k}", v) for k, v in rec.items()]
    return write_zip(p, entries)


def _pt_bomb_unused(d, p):
    data, crc, size = deflate_zero_bomb(1024)
    pkl, rec = pt_state_dict(SD)
    return write_pt(p, pkl, rec, extra=[("archive/data/999", 8, data, crc, size)])


def _pt_bomb_used(d, p):
    """weight_ih_l0 (15 floats) is a view of a 256 MiB deflated storage."""
    data, crc, size = deflate_zero_bomb(256)
    pkl, rec = pt_state_dict(SD, numel={"gru.weight_ih_l0": size // 4})
    pkl_entries = [stored("archive/data.pkl", pkl), stored("archive/byteorder", b"little")]
    rest = [stored(f"archive/data/{k}", v) for k, v in rec.items() if k != "0"]
    return write_zip(p, pkl_entries + [("archive/data/0", 8, data, crc, size)] + rest)


PT_CASES = mutations("pt", pt_base, ".pt", match_trunc=r"torch|zip|truncat|empty",
                      match_magic=r"torch|zip", kwargs=SD_KW)
PT_CASES += [
    Case("pt-legacy-magic", "pt", lambda d: (open(os.path.join(d, "legacy.pt"), "wb").write(
        (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + bytes(100)), os.path.join(d, "legacy.pt"))[1],
         match=r"legacy|1\.6"),
    Case("pt-bare-pickle", "pt", lambda d: (open(os.path.join(d, "bare.pt"), "wb").write(
        pickle.dumps({"a": 1}, protocol=2)), os.path.join(d, "bare.pt"))[1], match=r"bare pickle"),
    Case("pt-numel-2**62", "pt", _pt("numel", _pt_numel), kwargs=SD_KW, match=r"storage"),
    Case("pt-shape-2**31-squared", "pt", _pt("shape", _pt_shape), kwargs=SD_KW,
         match=r"reaches element|expands|shape"),
    Case("pt-lying-zip-size", "pt", _pt("lie", _pt_lying_size), kwargs=SD_KW,
         match=r"storage|declares|bytes"),
    Case("pt-data-pkl-deflate-bomb", "pt", _pt("pklbomb", _pt_pkl_bomb), kwargs=SD_KW,
         match=r"declares \d+ bytes; more than"),
    Case("pt-deflate-bomb-unused-record", "pt", _pt("bomb_unused", _pt_bomb_unused), kwargs=SD_KW,
         ok_allowed=True),
    Case("pt-deflate-bomb-as-storage", "pt", _pt("bomb_used", _pt_bomb_used), kwargs=SD_KW,
         ok_allowed=True),
]
for _kind in ("reduce-os-system", "stack-global-exec", "inst-posix-system", "nested-subprocess"):
    PT_CASES.append(Case(f"pt-pickle-{_kind}", "pt", _pt(_kind, _pt_payload(_kind)), kwargs=SD_KW,
                         match=r"refus|not allowed|only tensors|could not be unpickled",
                         marker=True))


file_results, test_hostile_file = file_matrix(PT_CASES)


def test_payloads_are_live(tmp_path):
    """The pickle payloads of the matrix do run when given to plain pickle
    (so 'nothing ran' above means something)."""
    for kind in pickle_payloads("unused"):
        marker = tmp_path / f"m_{kind}"
        data = pickle_payloads(str(marker))[kind]
        code = ("import pickle, sys\ntry:\n    pickle.loads(sys.stdin.buffer.read())\n"
                "except Exception:\n    pass\n")
        subprocess.run([sys.executable, "-c", code], input=data, timeout=60, check=True)
        assert marker.exists(), f"payload {kind} does not run under pickle.loads"
