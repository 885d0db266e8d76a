"""Hostile .grl files (grulite.load): the generic mutations and the
format's own cases (machinery: hostile_files.py).
"""
from __future__ import annotations

import os

import numpy as np

import grulite
from helpers_format import (
    OFF_FILE_SIZE,
    OFF_INPUT_SIZE,
    OFF_LAYER_REC,
    OFF_META_LEN,
    OFF_META_OFF,
    OFF_NUM_LAYERS,
    OFF_NUM_TENSORS,
    OFF_VERSION,
    T_D0,
    T_OFFSET,
    parse_grl,
    patch,
    with_crc,
)
from hostile_files import SD, Case, file_matrix, mutations

# .grl ----------------------------------------------------------------------------------

def grl_base(d):
    p = os.path.join(d, "base.grl")
    if not os.path.exists(p):
        grulite.from_state_dict(SD, head="fc0:softmax").save(p)
    return p


def _grl_patched(name, fn):
    def build(d):
        b = open(grl_base(d), "rb").read()
        p = os.path.join(d, f"grl_{name}.grl")
        with open(p, "wb") as f:
            f.write(fn(b))
        return p
    return build


def _grl_tensor_entry(b, i=0):
    return parse_grl(b)["tensors"][i]["entry"]


def _grl_layer_pos(b):
    return parse_grl(b)["layers"][0]["pos"]


GRL_CASES = mutations("grl", grl_base, ".grl", flips_ok=False,
                       match_trunc=r"truncat|empty|header says|too small|bytes",
                       match_magic=r"magic")
GRL_CASES += [
    Case("grl-version-99", "grl", _grl_patched("v99", lambda b: patch(b, OFF_VERSION, 99)),
         match=r"version 99"),
    Case("grl-version-1", "grl", _grl_patched("v1", lambda b: patch(b, OFF_VERSION, 1)),
         match=r"version 1"),
    Case("grl-trailing-data", "grl", _grl_patched("trail", lambda b: b + bytes(64)),
         match=r"trailing data"),
    Case("grl-file-size-2**63", "grl", _grl_patched("fs", lambda b: patch(b, OFF_FILE_SIZE, 2 ** 63, "<Q")),
         match=r"header says \d+ bytes"),
    Case("grl-input-size-2**31", "grl", _grl_patched("in", lambda b: patch(b, OFF_INPUT_SIZE, 2 ** 31)),
         match=r"input_size"),
    Case("grl-input-size-0", "grl", _grl_patched("in0", lambda b: patch(b, OFF_INPUT_SIZE, 0)),
         match=r"input_size"),
    Case("grl-layers-1e6", "grl", _grl_patched("nl", lambda b: patch(b, OFF_NUM_LAYERS, 10 ** 6)),
         match=r"1000000 layers; a model has 1 to 193"),
    Case("grl-layers-0", "grl", _grl_patched("nl0", lambda b: patch(b, OFF_NUM_LAYERS, 0)),
         match=r"0 layers; a model has 1 to 193"),
    Case("grl-layer-rec-1e6", "grl", _grl_patched("nd", lambda b: patch(b, OFF_LAYER_REC, 10 ** 6)),
         match=r"layer records of 1000000 bytes"),
    Case("grl-tensors-2**32-1", "grl", _grl_patched("nt", lambda b: patch(b, OFF_NUM_TENSORS, 2 ** 32 - 1)),
         match=r"tensor table|tensors in the table"),
    Case("grl-meta-offset-2**63", "grl", _grl_patched("mo", lambda b: patch(b, OFF_META_OFF, 2 ** 63, "<Q")),
         match=r"metadata"),
    Case("grl-meta-len-2**64-1", "grl", _grl_patched("ml", lambda b: patch(b, OFF_META_LEN, 2 ** 64 - 1, "<Q")),
         match=r"metadata"),
    Case("grl-hidden-2**31", "grl", _grl_patched("hs", lambda b: patch(b, _grl_layer_pos(b), 2 ** 31)),
         match=r"layer 0: (field 0 = |hidden_size )2147483648 (out of range|outside)"),
    Case("grl-hidden-2**20+1", "grl", _grl_patched("hs2", lambda b: patch(b, _grl_layer_pos(b), 2 ** 20 + 1)),
         match=r"layer 0: (field 0 = |hidden_size )1048577 (out of range|outside)"),
    Case("grl-directions-7", "grl", _grl_patched("nd7", lambda b: patch(b, _grl_layer_pos(b) + 4, 7)),
         match=r"num_directions 7"),
    Case("grl-tensor-offset-2**64-64", "grl",
         _grl_patched("to", lambda b: patch(b, _grl_tensor_entry(b) + T_OFFSET, 2 ** 64 - 64, "<Q")),
         match=r"tensor l0\.d0\.w_ih: (size overflows|offset)"),
    Case("grl-tensor-offset-misaligned", "grl",
         _grl_patched("tm", lambda b: patch(b, _grl_tensor_entry(b) + T_OFFSET,
                                            parse_grl(b)["tensors"][0]["offset"] + 4, "<Q")),
         match=r"not 64-byte aligned"),
    Case("grl-tensor-dims-2**31", "grl",
         _grl_patched("td", lambda b: patch(b, _grl_tensor_entry(b) + T_D0, 2 ** 31)),
         match=r"tensor"),
    Case("grl-tensor-overlap", "grl",
         _grl_patched("tov", lambda b: patch(b, _grl_tensor_entry(b, 1) + T_OFFSET,
                                             parse_grl(b)["tensors"][0]["offset"], "<Q")),
         match=r"overlap"),
    Case("grl-tensor-name-unterminated", "grl",
         _grl_patched("tn", lambda b: with_crc(b[:_grl_tensor_entry(b)] + b"A" * 32
                                               + b[_grl_tensor_entry(b) + 32:])),
         match=r"tensor|name"),
]
for k in range(8):                       # random bytes, checksum recomputed: the structural checks
    def _crc_fixed_flip(b, k=k):
        rng = np.random.default_rng(2000 + k)
        out = bytearray(b)
        for _ in range(4):
            pos = int(rng.integers(16, min(len(out), 64 + 32 * 4 + 64 * 8)))   # header and tables
            out[pos] = int(rng.integers(0, 256))
        return with_crc(out)
    GRL_CASES.append(Case(f"grl-crc-fixed-flip{k}", "grl", _grl_patched(f"cf{k}", _crc_fixed_flip),
                          ok_allowed=True))


file_results, test_hostile_file = file_matrix(GRL_CASES)
