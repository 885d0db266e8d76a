"""Model.save writes through the C writer whatever the dtype: the image of
Model.astype(dtype), atomically (a temporary file renamed over the target),
with the same file mode as a save without a dtype."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import grulite
from support.models import gru_state, linear_state


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_save_with_dtype_is_the_c_writer(tmp_path, dtype):
    rng = np.random.default_rng(11)
    m = grulite.from_state_dict({**gru_state(rng, 3, 5), **linear_state(rng, 5, 2)}, head="fc")
    plain, conv = tmp_path / "plain.grl", tmp_path / f"{dtype}.grl"
    m.save(plain)
    m.save(conv, dtype)
    assert conv.read_bytes() == m.astype(dtype).to_bytes()
    assert grulite.load(conv).config.dtype == dtype
    assert stat.S_IMODE(os.stat(conv).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    assert sorted(os.listdir(tmp_path)) == sorted(["plain.grl", f"{dtype}.grl"])   # no temporaries
    conv.write_bytes(b"old")
    m.save(conv, dtype)                                   # replaces an existing file
    assert conv.read_bytes() == m.astype(dtype).to_bytes()
    with pytest.raises((OSError, grulite.GruliteError)):
        m.save(tmp_path / "no-such-dir" / "m.grl", dtype)
    with pytest.raises((ValueError, OSError)):
        m.save(str(tmp_path / "nul\0.grl"), dtype)
