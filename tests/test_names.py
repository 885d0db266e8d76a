"""Names and validation come from C (grulite.h's tables): the binding keeps
no copies of them, and a configuration is checked by grulite_spec_check."""
import numpy as np
import pytest

import grulite
from grulite import _core


def test_name_tables_come_from_c():
    assert _core.DTYPES == {"float32": 1, "float16": 2, "int8": 3, "bfloat16": 4}
    assert _core.ACTIVATIONS == {"none": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "softmax": 4}
    assert _core.LAYER_KINDS == {"gru": 1, "dense": 2, "embedding": 3, "merge": 4}
    assert _core.GRU_ACTIVATIONS == {
        "sigmoid": 3, "tanh": 2, "relu": 1, "affine": 5, "leaky_relu": 6, "thresholded_relu": 7,
        "scaled_tanh": 8, "hard_sigmoid": 9, "elu": 10, "softsign": 11, "softplus": 12}
    assert _core.MERGES == {"concat": 0, "sum": 1, "mul": 2, "ave": 3}
    assert _core.isa_names() == ("generic", "avx2", "avx512", "avx512vnni", "neon", "neondot")


def test_default_isa_is_what_a_load_picks(monkeypatch):
    monkeypatch.delenv("GRULITE_ISA", raising=False)
    m = grulite.from_state_dict({"weight_ih_l0": np.zeros((6, 3), np.float32),
                                 "weight_hh_l0": np.zeros((6, 2), np.float32)})
    assert _core.default_isa() == m.isa
    assert _core.isa_supported(_core.default_isa())
    monkeypatch.setenv("GRULITE_ISA", "generic")
    assert _core.default_isa() == "generic"
    monkeypatch.setenv("GRULITE_ISA", "no-such-set")
    assert _core.default_isa() is None


def _layer(**kw):
    L = dict(input_size=4, hidden_size=8, num_directions=1, reset_after=True, bias=True)
    L.update(kw)
    return L


@pytest.mark.parametrize("layers, dense, match", [
    ([], [], r"1 to 64 GRU layers; got 0"),
    ([_layer()] * 65, [], r"1 to 64 GRU layers; got 65"),
    ([_layer()] * 5000, [], r"1 to 64 GRU layers; got 5000"),
    ([_layer()], [dict(in_features=8, out_features=2, activation="none", bias=None)] * 70,
     r"at most 64 head layers; got 70"),
    ([_layer(hidden_size=0)], [], r"layer 0: hidden_size 0 is outside \[1, 1048576\]"),
    ([_layer(hidden_size=2 ** 21)], [], r"layer 0: hidden_size 2097152 is outside"),
    ([_layer(hidden_size=2 ** 40)], [], r"layer 0: hidden_size = 1099511627776 does not fit"),
    ([_layer(num_directions=3)], [], r"layer 0: num_directions 3 is not 1 or 2"),
    ([_layer(hidden_size=2 ** 20, num_directions=2)], [], r"layer 0: output width 2097152 above"),
    ([_layer()], [dict(in_features=8, out_features=0, activation="none", bias=None)],
     r"head layer 0: out_features 0 outside"),
    ([_layer()], [dict(in_features=8, out_features=2, activation="gelu", bias=None)],
     r"head layer 0: unknown activation"),
])
def test_check_config_is_c(layers, dense, match):
    with pytest.raises(grulite.GruliteError, match=match):
        _core.check_config(4, layers, dense)


def test_check_config_input_size():
    with pytest.raises(grulite.GruliteError, match=r"input_size 0 is outside \[1, 1048576\]"):
        _core.check_config(0, [_layer()], [])
    _core.check_config(4, [_layer()], [])          # a valid one passes


def test_kinds_and_macs_come_from_c():
    """The layer kinds in the model's order, and the multiply-adds per row and
    step (the one FLOP count: 3*H*(in + H) per layer direction), from C."""
    rng = np.random.default_rng(3)
    sd = {}
    for k, (I, H) in enumerate([(5, 7), (14, 7)]):
        for sfx in ("", "_reverse"):
            sd[f"weight_ih_l{k}{sfx}"] = rng.standard_normal((3 * H, I)).astype(np.float32)
            sd[f"weight_hh_l{k}{sfx}"] = rng.standard_normal((3 * H, H)).astype(np.float32)
    sd["fc.weight"] = rng.standard_normal((3, 14)).astype(np.float32)
    m = grulite.from_state_dict(sd, head="fc:softmax")
    assert m._core.kinds == ["gru", "gru", "dense"]
    assert m._core.macs == 2 * 3 * 7 * (5 + 7) + 2 * 3 * 7 * (14 + 7)
