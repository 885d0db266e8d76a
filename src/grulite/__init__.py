"""grulite: a small, fast GRU inference engine.

    import grulite
    m = grulite.from_npz("model.npz")          # np.savez'd PyTorch state_dict
    y, h_n = m(x)                              # torch.nn.GRU semantics
    m.save("model.grl"); m = grulite.load("model.grl")   # memory-mapped
"""
from grulite._version import __version__
from grulite._errors import GruliteError
from grulite._model import (DenseConfig, LayerConfig, Model, ModelConfig, from_bytes,
                            from_npz, from_state_dict, load)
from grulite._core import Stream
from grulite._core import isa_supported as _isa_supported


def available_isas() -> list:
    """Kernel sets this CPU and build can run, best last (see ``Model.isa``)."""
    return [name for name in ("generic", "avx2", "avx512", "avx512vnni") if _isa_supported(name)]


__all__ = ["__version__", "GruliteError", "Model", "ModelConfig", "LayerConfig",
           "DenseConfig", "Stream", "load", "from_bytes", "from_state_dict", "from_npz",
           "available_isas"]
