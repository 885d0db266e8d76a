"""File writers shared by tests and tools: deterministic .npz, zips written
by hand (sizes may lie), torch.save'd files written opcode by opcode (no
torch needed), and safetensors files."""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np

# ---- .npz ---------------------------------------------------------------------


def npz_bytes(arrays: dict) -> bytes:
    """np.savez_compressed-compatible bytes with fixed member timestamps
    (re-running gives byte-identical files)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_npz(path, arrays: dict) -> str:
    with open(path, "wb") as f:
        f.write(npz_bytes(arrays))
    return str(path)


def npy_bytes(arr=None, header=None, data=b"") -> bytes:
    """A .npy member: of an array, or of a header dict (which may lie) and raw data."""
    bio = io.BytesIO()
    if arr is not None:
        np.save(bio, arr, allow_pickle=False)
        return bio.getvalue()
    np.lib.format.write_array_header_1_0(bio, header)
    return bio.getvalue() + data


# ---- zips written by hand -----------------------------------------------------


def write_zip(path, entries) -> str:
    """A zip written by hand: entries (name, method 0|8, data as stored,
    crc, declared uncompressed size); sizes may lie."""
    out, central = bytearray(), bytearray()
    for name, method, data, crc, usize in entries:
        nb = name.encode()
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc & 0xFFFFFFFF,
                           len(data), usize, len(nb), 0) + nb + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21,
                               crc & 0xFFFFFFFF, len(data), usize, len(nb), 0, 0, 0, 0, 0, off) + nb
    cd = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                                 len(central), cd, 0)
    with open(path, "wb") as f:
        f.write(out)
    return str(path)


def stored(name, data):
    """A write_zip entry stored uncompressed, honestly."""
    return (name, 0, data, zlib.crc32(data), len(data))


# ---- torch.save'd files: a protocol-2 pickle written opcode by opcode ----------

PROTO2 = b"\x80\x02"
STOP = b"."


def pk_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b                    # BINUNICODE


def pk_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])                                   # BININT1
    if -2 ** 31 <= v < 2 ** 31:
        return b"J" + struct.pack("<i", v)                         # BININT
    enc = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(enc)]) + enc                      # LONG1


def pk_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()                   # GLOBAL


def pk_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"                           # MARK ... TUPLE


def pk_call(fn: bytes, *args: bytes) -> bytes:
    return fn + pk_tuple(*args) + b"R"                             # REDUCE


def pk_ordered_dict(items) -> bytes:
    """collections.OrderedDict() then SETITEMS, as torch writes a state_dict."""
    body = pk_call(pk_global("collections", "OrderedDict"))
    if items:
        body += b"(" + b"".join(k + v for k, v in items) + b"u"
    return body


def pk_dict(items) -> bytes:
    return b"}" + (b"(" + b"".join(k + v for k, v in items) + b"u" if items else b"")


def strides(shape) -> tuple:
    """C-order strides in elements."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def pk_tensor(key: str, numel: int, offset: int, size, stride, storage="FloatStorage",
              location="cpu") -> bytes:
    """torch._utils._rebuild_tensor_v2 of storage record `key`."""
    pid = pk_tuple(pk_str("storage"), pk_global("torch", storage), pk_str(key), pk_str(location),
                   pk_int(numel)) + b"Q"
    return pk_call(pk_global("torch._utils", "_rebuild_tensor_v2"), pid, pk_int(offset),
                   pk_tuple(*map(pk_int, size)), pk_tuple(*map(pk_int, stride)), b"\x89",
                   pk_call(pk_global("collections", "OrderedDict")))


STORAGE_OF = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
              "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage",
              "bool": "BoolStorage"}


def torch_state_dict_parts(arrays: dict, big_endian=False, location="cpu", numel=None,
                           shapes=None):
    """(pickled (key, tensor) items, {record: raw bytes}) of a state_dict of
    numpy arrays; numel / shapes ({name: value}) make tensors lie."""
    items, records = [], {}
    for n, (k, a) in enumerate(arrays.items()):
        a = np.asarray(a, order="C")
        key = str(n)
        records[key] = a.astype(a.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
        shape = (shapes or {}).get(k, a.shape)
        items.append((pk_str(k), pk_tensor(key, (numel or {}).get(k, a.size), 0, shape,
                                           strides(shape), STORAGE_OF[a.dtype.name], location)))
    return items, records


def torch_zip(path, pkl: bytes, records: dict, prefix="archive", byteorder=b"little",
              compress=()) -> str:
    """A zip laid out as torch.save writes it (records named in `compress`
    deflated)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in records.items():
            zf.writestr(f"{prefix}/data/{key}", raw,
                        compress_type=zipfile.ZIP_DEFLATED if key in compress else None)
        zf.writestr(f"{prefix}/version", b"3\n")
    return str(path)


def write_torch_state_dict(path, arrays: dict, extra=(), wrap=None, big_endian=False, **kw) -> str:
    """A torch.save'd state_dict of numpy arrays; extra: more pickled
    (key, value) items; wrap(body) -> body puts it inside a container."""
    items, records = torch_state_dict_parts(arrays, big_endian=big_endian,
                                            location=kw.pop("location", "cpu"))
    body = pk_ordered_dict(items + list(extra))
    if wrap is not None:
        body = wrap(body)
    return torch_zip(path, PROTO2 + body + STOP, records,
                     byteorder=b"big" if big_endian else b"little", **kw)


# ---- safetensors ----------------------------------------------------------------

ST_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
            "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
            "bool": "BOOL"}


def safetensors_parts(tensors: dict) -> tuple:
    """(header dict, data bytes) of torch tensors or numpy arrays, C order,
    little-endian."""
    header: dict = {}
    data = bytearray()
    for name, t in tensors.items():
        if hasattr(t, "detach"):                        # torch tensor
            t = t.detach().contiguous()
            kind = ST_CODES[str(t.dtype).replace("torch.", "")]
            if kind == "BF16":
                raw = t.view(__import__("torch").int16).numpy().tobytes()
            else:
                raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
            shape = list(t.shape)
        else:
            a = np.asarray(t, order="C")          # (ascontiguousarray makes 0-d 1-d)
            kind = ST_CODES[a.dtype.name]
            raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
            shape = list(a.shape)
        header[name] = {"dtype": kind, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, bytes(data)


def raw_safetensors(path, header, data: bytes = b"", n=None) -> str:
    """A file from a header (dict, or raw bytes) and a data area; n: the
    header length to declare (default: the true one)."""
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb) if n is None else n))
        f.write(hb)
        f.write(data)
    return str(path)


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> str:
    """A .safetensors file of torch tensors or numpy arrays (8-byte header
    length, JSON header padded to 8 bytes, C-order data)."""
    header, data = safetensors_parts(tensors)
    if metadata:
        header["__metadata__"] = dict(metadata)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return raw_safetensors(path, hb + b" " * (-len(hb) % 8), data)


# ---- a malicious pickle payload -----------------------------------------------


class Evil:
    """Pickles to a call of os.system (the classic payload)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


# ---- Keras archives -------------------------------------------------------------

def rewrite_keras(src: str, dst, config_edit=None, members=None) -> str:
    """A copy of the .keras archive `src` at `dst` with config.json edited in
    place by `config_edit(cfg)`, and `members` replacing members (None
    removes one)."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    if config_edit is not None:
        cfg = json.loads(files["config.json"])
        config_edit(cfg)
        files["config.json"] = json.dumps(cfg).encode()
    if members is not None:
        files = {k: v for k, v in dict(files, **members).items() if v is not None}
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
    return str(dst)
