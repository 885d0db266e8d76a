"""The importers package: one registry (grulite.importers.IMPORTERS) behind
grulite convert, the grulite.from_* functions and the fuzz targets, and the
state_dict formats sharing one set of options."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import grulite
from grulite.importers import IMPORTERS, by_name, for_path
from support.files import write_npz, write_safetensors, write_torch_state_dict
from support.models import gru_state, linear_state

# Writers of a state_dict (name -> float32 array) in each state_dict format.
WRITERS = {"npz": write_npz, "pt": write_torch_state_dict, "safetensors": write_safetensors}
STATE_DICT_FORMATS = [imp.name for imp in IMPORTERS if imp.state_dict]


def test_registry_covers_the_formats():
    assert {imp.name for imp in IMPORTERS} == {"npz", "pt", "safetensors", "onnx", "keras"}
    assert set(STATE_DICT_FORMATS) == set(WRITERS)
    for imp in IMPORTERS:
        for ext in imp.extensions:
            assert for_path("dir/model" + ext.upper()) is imp
        assert by_name(imp.name) is imp
    with pytest.raises(grulite.GruliteError, match=r"unknown input type '\.h5'.*\.safetensors"):
        for_path("model.h5")


@pytest.mark.parametrize("fmt", STATE_DICT_FORMATS)
def test_head_from_state_in_every_state_dict_format(tmp_path, fmt):
    """head_from="state" (the head reads the final states, directions
    concatenated) is an option of every state_dict importer, as of
    from_state_dict: from_torch_file and from_safetensors lacked it."""
    rng = np.random.default_rng(3)
    sd = {**gru_state(rng, 3, 4, bidirectional=True), **linear_state(rng, 8, 2)}
    ref = grulite.from_state_dict(sd, head="fc:softmax", head_from="state")
    path = WRITERS[fmt](tmp_path / ("m" + by_name(fmt).extensions[0]), sd)
    fn = {"npz": grulite.from_npz, "pt": grulite.from_torch_file,
          "safetensors": grulite.from_safetensors}[fmt]
    m = fn(path, head="fc:softmax", head_from="state")
    assert m.config.head_from == "state"
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    assert_array_equal(m.predict(x), ref.predict(x))
    assert not np.allclose(m.predict(x), fn(path, head="fc:softmax").predict(x))


def _reverse_model_file(tmp_path):
    """A .grl file whose one layer runs backwards (ONNX direction="reverse",
    Keras go_backwards)."""
    from grulite.importers._image import image_from_layers
    rng = np.random.default_rng(5)
    H, I = 4, 3
    layer = dict(input_size=I, hidden_size=H, num_directions=1, reverse=True, reset_after=True,
                 bias=False, weight_ih=[rng.standard_normal((3 * H, I))],
                 weight_hh=[rng.standard_normal((3 * H, H))])
    path = tmp_path / "rev.grl"
    grulite.from_bytes(image_from_layers(I, [layer], [], {})).save(path)
    return path


@pytest.mark.parametrize("fixture, needs", [("onnx/node_rev_lbr0_layout0_b.onnx", "onnx"),
                                            ("keras/gru_go_backwards.keras", "h5py")])
def test_convert_and_info_name_an_imported_reverse_layer_backward(tmp_path, capsys, fixture,
                                                                 needs):
    pytest.importorskip(needs)
    from grulite._cli import main
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", fixture)
    dst = tmp_path / "rev.grl"
    assert main(["convert", src, "-o", str(dst)]) == 0
    assert main(["info", str(dst)]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"layer 0: .* backward ", out)) == 2, out      # convert, then info
    assert "forward" not in out


def test_info_names_a_reverse_layer_backward(tmp_path, capsys):
    from grulite._cli import main
    path = _reverse_model_file(tmp_path)
    assert grulite.load(path).config.layers[0].reverse
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"layer 0: .* backward ", out), out
    assert "forward" not in out


def _help(capsys, *args) -> str:
    from grulite._cli import main
    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_convert_help_lists_every_format(capsys):
    top = _help(capsys)
    convert = _help(capsys, "convert")
    for imp in IMPORTERS:
        for ext in imp.extensions:
            assert ext in convert, (ext, convert)
    # The one-line summary in `grulite --help` does not name a single format.
    line = next(l for l in top.splitlines() if l.strip().startswith("convert"))
    assert ".npz)" not in line, line


@pytest.mark.parametrize("fmt", STATE_DICT_FORMATS)
def test_convert_names_the_tensors_it_does_not_use(tmp_path, capsys, fmt):
    """An nn.Embedding, a Linear not named in --head: convert says so on
    stderr (a note, not an error) instead of dropping them silently."""
    from grulite._cli import main
    rng = np.random.default_rng(7)
    sd = {"embedding.weight": rng.standard_normal((10, 5)).astype(np.float32),   # feeds nothing
          **gru_state(rng, 3, 4), **linear_state(rng, 4, 5), **linear_state(rng, 5, 2, name="fc2")}
    src = WRITERS[fmt](tmp_path / ("m" + by_name(fmt).extensions[0]), sd)
    assert main(["convert", str(src), "-o", str(tmp_path / "m.grl"), "--head", "fc:relu"]) == 0
    cap = capsys.readouterr()
    assert "note" in cap.err and "error" not in cap.err, cap.err
    for name in ("embedding.weight", "fc2.weight", "fc2.bias"):
        assert name in cap.err, cap.err
    for name in ("gru.weight_ih_l0", "fc.weight"):
        assert name not in cap.err, cap.err
    assert grulite.load(tmp_path / "m.grl").config.head_size == 5
    # Everything used: no note.
    sd.pop("embedding.weight")
    src2 = WRITERS[fmt](tmp_path / ("all" + by_name(fmt).extensions[0]), sd)
    capsys.readouterr()
    assert main(["convert", str(src2), "-o", str(tmp_path / "all.grl"),
                 "--head", "fc:relu,fc2:softmax"]) == 0
    assert capsys.readouterr().err == ""
