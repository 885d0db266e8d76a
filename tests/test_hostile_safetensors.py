"""Hostile .safetensors files (grulite.from_safetensors): the generic mutations and the
format's own cases (machinery: hostile_files.py).
"""
from __future__ import annotations

import os

from hostile_files import SD, SD_KW, Case, file_matrix, mutations
from support.files import raw_safetensors, safetensors_parts

# .safetensors ----------------------------------------------------------------------------------

def st_base(d):
    p = os.path.join(d, "base.safetensors")
    if not os.path.exists(p):
        h, data = safetensors_parts(SD)
        raw_safetensors(p, h, data)
    return p


def _st(name, header_fn, data_fn=lambda: b"", raw_len=None):
    def build(d):
        return raw_safetensors(os.path.join(d, f"st_{name}.safetensors"), header_fn(),
                                 data_fn(), raw_len)
    return build


def _st_good_header():
    return safetensors_parts(SD)


ST = "not a valid safetensors file"
ST_CASES = mutations("safetensors", st_base, ".safetensors", match_trunc=ST, match_magic=ST,
                      kwargs=SD_KW)
ST_CASES += [
    Case("st-header-len-2**63", "safetensors", _st("hl", lambda: b"{}", raw_len=2 ** 63),
         match=r"header length is \d+ bytes but the file has only"),
    Case("st-header-len-200MB", "safetensors",
         _st("hl2", lambda: b"{" + b" " * 64, data_fn=lambda: b"", raw_len=200_000_000),
         match=r"header length"),
    Case("st-header-not-json", "safetensors", _st("nj", lambda: b"{not json"), match=r"JSON"),
    Case("st-header-list", "safetensors", _st("list", lambda: b"[1, 2]"), match=r"does not start"),
    Case("st-header-deep", "safetensors", _st("deep", lambda: b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"),
         match=r"JSON"),
    Case("st-shape-huge", "safetensors",
         _st("shape", lambda: {"gru.weight_ih_l0": {"dtype": "F32", "shape": [3 * 2 ** 31, 2 ** 31],
                                                    "data_offsets": [0, 8]}}, lambda: bytes(8)),
         match=r"needs \d+ bytes"),
    Case("st-offsets-past-end", "safetensors",
         _st("past", lambda: {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 2 ** 62]}},
             lambda: bytes(8)), match=r"ends at byte"),
    Case("st-offsets-overlap", "safetensors",
         _st("ov", lambda: {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
             lambda: bytes(8)), match=r"overlaps|cover"),
    Case("st-dtype-unknown", "safetensors",
         _st("dt", lambda: {"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}},
             lambda: bytes(8)), match=r"dtype 'Q9'"),
    Case("st-negative-dim", "safetensors",
         _st("neg", lambda: {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
             lambda: bytes(8)), match=r"shape"),
    Case("st-duplicate-name", "safetensors",
         _st("dup", lambda: b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                            b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
             lambda: bytes(8)), match=r"twice"),
]


file_results, test_hostile_file = file_matrix(ST_CASES)
