"""Hostile .onnx files (grulite.from_onnx): the generic mutations and the
format's own cases (machinery: hostile_files.py).
"""
from __future__ import annotations

import os

import numpy as np

from hostile_files import FIX, Case, file_matrix, mutations, pb_len, varint

# .onnx ------------------------------------------------------------------------------------------

ONNX_BASE_FIXTURE = os.path.join(FIX, "onnx", "node_for_lbr1_layout1_nob.onnx")


def onnx_base(d):
    return ONNX_BASE_FIXTURE


def _onnx(name, fn):
    def build(d):
        import onnx
        m = onnx.load(ONNX_BASE_FIXTURE)
        p = os.path.join(d, f"onnx_{name}.onnx")
        out = fn(m, d)
        if isinstance(out, bytes):
            with open(p, "wb") as f:
                f.write(out)
        else:
            onnx.save(out if out is not None else m, p)
        return p
    return build


def _onnx_huge_dims(m, d):
    w = m.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([1, 3 * 2 ** 30, 2 ** 20])


def _onnx_attr(name, **set_fields):
    def fn(m, d):
        for a in m.graph.node[0].attribute:
            if a.name == name:
                for k, v in set_fields.items():
                    setattr(a, k, v)
    return fn


def _onnx_producer_bytes(m, d):
    m.producer_name = "PRODUCERNAME"
    return m.SerializeToString().replace(b"PRODUCERNAME", b"\xff\xfe" * 6)


def _onnx_external(location):
    def fn(m, d):
        from onnx import TensorProto
        if location == "link":
            link = os.path.join(d, "link")
            if not os.path.lexists(link):
                os.symlink("/etc/passwd", link)
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", location), ("length", "64")):
            e = t.external_data.add()
            e.key, e.value = k, v
    return fn


def _onnx_deep(m, d):
    inner = b""
    for _ in range(3000):            # graph.node.attribute.g.node.attribute.g...
        inner = pb_len(1, pb_len(5, pb_len(6, inner)))
    return varint(1 << 3) + varint(8) + pb_len(7, inner)


def _onnx_constant_of_shape(m, d):
    from onnx import TensorProto, helper, numpy_helper
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array([8192, 16384], np.int64), "bigshape"))
    g.node.insert(0, helper.make_node("ConstantOfShape", ["bigshape"], ["big"],
                                      value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])))
    g.output.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, None))


def _onnx_loop(m, d):
    from onnx import TensorProto, helper, numpy_helper
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([1.0], np.float32), "one")])
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(np.array(10 ** 15, np.int64), "M"),
                          numpy_helper.from_array(np.array(True), "c0"),
                          numpy_helper.from_array(np.array([0.0], np.float32), "v0")])
    g.node.insert(0, helper.make_node("Loop", ["M", "c0", "v0"], ["vfinal"], body=body))
    g.output.append(helper.make_tensor_value_info("vfinal", TensorProto.FLOAT, [1]))


ONNX_CASES = mutations("onnx", onnx_base, ".onnx", match_trunc=r"not a readable ONNX|no graph|"
                        r"no GRU|cannot|used before", match_magic=r"not a readable ONNX|no graph",
                        needs="onnx")
ONNX_CASES += [
    Case("onnx-huge-dims", "onnx", _onnx("dims", _onnx_huge_dims), match=r"tensor 'W' cannot be read",
         needs="onnx"),
    Case("onnx-hidden-size-2**31-1", "onnx", _onnx("hs", _onnx_attr("hidden_size", i=2 ** 31 - 1)),
         match=r"hidden_size=2147483647", needs="onnx"),
    Case("onnx-attr-type-undefined", "onnx", _onnx("atype", _onnx_attr("hidden_size", type=0)),
         match=r"hidden_size", needs="onnx"),
    Case("onnx-attr-hidden-size-string", "onnx",
         _onnx("astr", _onnx_attr("hidden_size", type=3, s=b"abc")), match=r"hidden_size",
         needs="onnx"),
    Case("onnx-producer-not-utf8", "onnx", _onnx("prod", _onnx_producer_bytes), ok_allowed=True,
         needs="onnx"),
    # external data is never read, wherever it points
    Case("onnx-external-data-traversal", "onnx", _onnx("ext1", _onnx_external("../../../../../etc/passwd")),
         match=r"keeps its data in an external file \('\.\./", needs="onnx"),
    Case("onnx-external-data-absolute", "onnx", _onnx("ext2", _onnx_external("/etc/passwd")),
         match=r"keeps its data in an external file \('/etc/passwd'\)", needs="onnx"),
    Case("onnx-external-data-symlink", "onnx", _onnx("ext3", _onnx_external("link")),
         match=r"keeps its data in an external file \('link'\)", needs="onnx"),
    Case("onnx-external-data-sibling", "onnx", _onnx("ext4", _onnx_external("weights.bin")),
         match=r"self-contained ONNX files", needs="onnx"),
    Case("onnx-deeply-nested-protobuf", "onnx", _onnx("deep", _onnx_deep),
         match=r"not a readable ONNX", needs="onnx"),
    Case("onnx-constant-of-shape-512MiB", "onnx", _onnx("cos", _onnx_constant_of_shape),
         match=r"does not depend on the input|not supported", needs="onnx"),
    Case("onnx-loop-1e15", "onnx", _onnx("loop", _onnx_loop), alarm=4, max_s=4,
         match=r"Loop|not supported", needs="onnx"),
]


file_results, test_hostile_file = file_matrix(ONNX_CASES)
