"""Hostile .keras archives (grulite.from_keras): the generic mutations and the
format's own cases (machinery: hostile_files.py).
"""
from __future__ import annotations

import base64
import io
import json
import marshal
import os
import zipfile

from hostile_files import FIX, Case, deflate_zero_bomb, file_matrix, mutations
from support.files import stored, write_zip

# .keras -------------------------------------------------------------------------------------

KERAS_BASE_FIXTURE = os.path.join(FIX, "keras", "gru_reset_after.keras")


def keras_base(d):
    return KERAS_BASE_FIXTURE


def _keras_blobs():
    with zipfile.ZipFile(KERAS_BASE_FIXTURE) as z:
        return {n: z.read(n) for n in z.namelist()}


def _keras(name, fn):
    def build(d):
        blobs = _keras_blobs()
        entries = fn(blobs, d)
        if entries is None:
            entries = [stored(n, v) for n, v in blobs.items()]
        return write_zip(os.path.join(d, f"keras_{name}.keras"), entries)
    return build


def _keras_replace(**members):
    def fn(blobs, d):
        blobs.update({k.replace("_", "."): v for k, v in members.items()})
        return None
    return fn


def _keras_config_bomb(blobs, d):
    data, crc, size = deflate_zero_bomb(256)
    return [("config.json", 8, data, crc, size), stored("model.weights.h5", blobs["model.weights.h5"])]


def _keras_h5_big(blobs, d):
    import h5py
    bio = io.BytesIO()
    with h5py.File(io.BytesIO(blobs["model.weights.h5"]), "r") as old, h5py.File(bio, "w") as new:
        for k in old:
            old.copy(k, new)
        del new["layers/gru/cell/vars/0"]
        new["layers/gru/cell/vars"].create_dataset("0", shape=(8000, 8000), dtype="f4",
                                                   chunks=(1000, 1000))
    blobs["model.weights.h5"] = bio.getvalue()
    return None


def _keras_h5_damaged(blobs, d):
    """Superblock v0, byte 16: the group leaf node K; its top bit set makes
    h5py raise RuntimeError('Unable to get group info (addr overflow ...)')."""
    h5 = bytearray(blobs["model.weights.h5"])
    assert h5[:8] == b"\x89HDF\r\n\x1a\n" and h5[8] == 0
    h5[16] ^= 0x80
    blobs["model.weights.h5"] = bytes(h5)
    return None


def _keras_h5_damaged_heap(blobs, d):
    """The global heap (vlen string attributes) loses its signature: h5py
    raises OSError("Can't synchronously read data (bad global heap ...)")."""
    h5 = bytearray(blobs["model.weights.h5"])
    i = h5.find(b"GCOL")
    assert i > 0
    h5[i] ^= 0xFF
    blobs["model.weights.h5"] = bytes(h5)
    return None


def _keras_lambda(blobs, d):
    marker = os.path.join(d, "PWNED_keras")
    code = compile(f"open({marker!r}, 'w')", "<lambda>", "exec")
    cfg = json.loads(blobs["config.json"])
    layers = cfg["config"]["layers"]
    gru = next(l for l in layers if l["class_name"] == "GRU")
    lam = {"module": "keras.layers", "class_name": "Lambda",
           "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
               "code": base64.b64encode(marshal.dumps(code)).decode(), "defaults": None,
               "closure": None}}, "arguments": {}}}
    seq = {"module": "keras", "class_name": "Sequential",
           "config": {"name": "seq", "layers": [
               {"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": [None, None, 5], "name": "in"}}, lam,
               {k: v for k, v in gru.items() if k != "inbound_nodes"}]}}
    blobs["config.json"] = json.dumps(seq).encode()
    return None


def _keras_os_system(blobs, d):
    cfg = json.loads(blobs["config.json"])
    for l in cfg["config"]["layers"]:
        if l["class_name"] == "GRU":
            l["module"], l["class_name"] = "os", "system"
    blobs["config.json"] = json.dumps(cfg).encode()
    return None


KERAS_CASES = mutations("keras", keras_base, ".keras", match_trunc=r"not a \.keras archive",
                         match_magic=r"not a \.keras archive|cannot read .* from the archive",
                         needs="h5py")
KERAS_CASES += [
    Case("keras-legacy-hdf5", "keras", lambda d: (open(os.path.join(d, "legacy.keras"), "wb").write(
        b"\x89HDF\r\n\x1a\n" + bytes(100)), os.path.join(d, "legacy.keras"))[1],
         match=r"legacy Keras HDF5", needs="h5py"),
    Case("keras-no-config", "keras", _keras("nocfg", lambda b, d: [stored("model.weights.h5",
                                                                          b["model.weights.h5"])]),
         match=r"has no config.json", needs="h5py"),
    Case("keras-config-not-json", "keras", _keras("badjson", _keras_replace(config_json=b"{oops")),
         match=r"config.json is not valid JSON", needs="h5py"),
    Case("keras-config-deep-json", "keras",
         _keras("deep", _keras_replace(config_json=b"[" * 200000 + b"]" * 200000)),
         match=r"config.json", needs="h5py"),
    Case("keras-metadata-deep-json", "keras",
         _keras("mdeep", _keras_replace(metadata_json=b"[" * 200000 + b"]" * 200000)),
         ok_allowed=True, needs="h5py"),
    Case("keras-h5-not-hdf5", "keras", _keras("noh5", _keras_replace(model_weights_h5=b"junk" * 100)),
         match=r"model.weights.h5 is not a readable HDF5 file", needs="h5py"),
    Case("keras-h5-truncated", "keras",
         _keras("h5trunc", lambda b, d: _keras_replace(model_weights_h5=b["model.weights.h5"][:3000])(b, d)),
         match=r"model.weights.h5", needs="h5py"),
    Case("keras-h5-damaged-superblock", "keras", _keras("h5dmg", _keras_h5_damaged),
         match=r"model.weights.h5", needs="h5py"),
    Case("keras-h5-damaged-global-heap", "keras", _keras("h5heap", _keras_h5_damaged_heap),
         match=r"model.weights.h5", needs="h5py"),
    Case("keras-config-deflate-bomb", "keras", _keras("bomb", _keras_config_bomb),
         match=r"config.json", needs="h5py"),
    Case("keras-h5-dataset-claims-8000x8000", "keras", _keras("h5big", _keras_h5_big),
         match=r"kernel|shape|rows", needs="h5py"),
    Case("keras-lambda-layer", "keras", _keras("lambda", _keras_lambda),
         match=r"layer type 'Lambda' is not supported", marker=True, needs="h5py"),
    Case("keras-class-os-system", "keras", _keras("ossys", _keras_os_system),
         match=r"'system'|no GRU layer", needs="h5py"),
]


file_results, test_hostile_file = file_matrix(KERAS_CASES)
