"""grulite: a small, fast GRU inference engine.

    import grulite
    m = grulite.from_npz("model.npz")          # np.savez'd PyTorch state_dict
    y, h_n = m(x)                              # torch.nn.GRU semantics
    m.save("model.grl"); m = grulite.load("model.grl")   # memory-mapped
"""
from grulite._core import Stream
from grulite._core import isa_supported as _isa_supported
from grulite._errors import GruliteError
from grulite._model import DenseConfig, LayerConfig, Model, ModelConfig, from_bytes, from_npz, from_state_dict, load
from grulite._version import __version__

# Importers load their modules on first use: `import grulite` stays cheap.

def from_onnx(path, *, dtype: str = "float32", num_threads=None) -> Model:
    """Imports the GRU nodes (and Linear / activation head) of an ONNX file.

    Needs the ``onnx`` package (``pip install grulite[onnx]``), not ONNX
    Runtime.  See ``grulite._onnx`` for the conventions (y, h0 / h_n)."""
    from grulite._onnx import from_onnx as _f
    return _f(path, dtype=dtype, num_threads=num_threads)


def from_keras(path, *, dtype: str = "float32", num_threads=None, head: bool = True) -> Model:
    """Imports a Keras 3 ``.keras`` archive with GRU layers (and a Dense head).

    Needs ``h5py`` (``pip install grulite[keras]``), not Keras."""
    from grulite._keras import from_keras as _f
    return _f(path, dtype=dtype, num_threads=num_threads, head=head)


def from_torch_file(path, prefix=None, reset_after=True, head=None, *, batch_first: bool = True,
                    dtype: str = "float32", num_threads=None) -> Model:
    """Imports a ``torch.save``'d state_dict or checkpoint without torch.

    The pickle is read by a restricted unpickler that builds tensors and
    plain containers only; anything else is refused before it runs.
    Arguments are those of :func:`from_state_dict`."""
    from grulite._torchfile import from_torch_file as _f
    return _f(path, prefix, reset_after, head, batch_first=batch_first, dtype=dtype,
              num_threads=num_threads)


def from_safetensors(path, prefix=None, reset_after=True, head=None, *, batch_first: bool = True,
                     dtype: str = "float32", num_threads=None) -> Model:
    """Imports a ``.safetensors`` file (parsed directly; no extra package).

    Arguments are those of :func:`from_state_dict`."""
    from grulite._safetensors import from_safetensors as _f
    return _f(path, prefix, reset_after, head, batch_first=batch_first, dtype=dtype,
              num_threads=num_threads)


def available_isas() -> list:
    """Kernel sets this CPU and build can run, best last (see ``Model.isa``)."""
    return [name for name in ("generic", "neon", "avx2", "avx512", "avx512vnni") if _isa_supported(name)]


__all__ = ["__version__", "GruliteError", "Model", "ModelConfig", "LayerConfig",
           "DenseConfig", "Stream", "load", "from_bytes", "from_state_dict", "from_npz",
           "from_onnx", "from_keras", "from_torch_file", "from_safetensors", "available_isas"]
