"""grulite: a small, fast GRU inference engine.

    import grulite
    m = grulite.from_npz("model.npz")          # np.savez'd PyTorch state_dict
    y, h_n = m(x)                              # torch.nn.GRU semantics
    m.save("model.grl"); m = grulite.load("model.grl")   # memory-mapped
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

from grulite import _core
from grulite._core import Stream
from grulite._errors import GruliteError
from grulite._model import DenseConfig, LayerConfig, Model, ModelConfig, from_bytes, load
from grulite._version import __version__

# The importers (grulite.importers) load on first use: `import grulite` costs
# only what running a .grl model needs.

_Path = Union[str, os.PathLike]
_HeadSpec = Union[None, str, Sequence[Any]]
_Embedding = Union[None, bool, str]
_Vocab = Union[None, str, os.PathLike, Sequence[str]]


def _from_file(importer: str, path: _Path, num_threads: Optional[int], **options: Any) -> Model:
    from grulite.importers import by_name

    image, _ = by_name(importer).image(path, **options)
    return from_bytes(image, num_threads=num_threads)


def from_state_dict(mapping: Mapping[str, Any], prefix: Optional[str] = None,
                    reset_after: Union[bool, Sequence[bool]] = True, head: _HeadSpec = None,
                    *, batch_first: bool = True, dtype: str = "auto",
                    head_from: str = "output", embedding: _Embedding = None,
                    fold_embedding: Optional[bool] = None, vocab: _Vocab = None,
                    h0: Optional[str] = None, update_gate: str = "torch",
                    activations: Any = None, clip: Optional[float] = None,
                    num_threads: Optional[int] = None) -> Model:
    """Builds a model from a PyTorch ``state_dict`` (or a checkpoint holding one).

    Parameters
    ----------
    mapping : Mapping[str, array_like]
        Tensor names to arrays (numpy arrays or torch tensors), e.g.
        ``model.state_dict()`` or ``np.load("model.npz")``.
    prefix : str, optional
        Module path of the GRU (``"gru"``, ``"encoder.rnn"``); found
        automatically when the mapping holds a single GRU.  An
        ``nn.GRUCell`` (``cell.weight_ih``, ``cell.weight_hh``, no ``_l0``)
        loads as a one-layer GRU; LSTMCell / RNNCell tensors are refused.
    reset_after : bool or sequence of bool
        True for PyTorch's GRU; False for the original formulation (Keras
        ``reset_after=False``, ONNX ``linear_before_reset=0``).  One value
        per layer is accepted.
    head : str or sequence, optional
        Linear layers applied to the last step, with activations:
        ``[("fc", "softmax")]`` or ``"fc:relu,out:softmax"``.
    batch_first : bool
        Default layout of inputs (as the nn.GRU's ``batch_first``).
    dtype : {"auto", "float32", "float16", "bfloat16", "int8"}
        Storage type of the GRU weights (see :meth:`Model.save`).  "auto"
        (the default) keeps a float16 or bfloat16 source in its own type
        (bit for bit, half float32's size, the same outputs as float32)
        when every GRU weight matrix is stored in it; float32 otherwise.
    head_from : {"output", "state"}
        What the head reads: the top layer's output at each sequence's last
        valid step (``fc(y[:, -1])``), or its final states with directions
        concatenated (``fc(torch.cat([h_n[-2], h_n[-1]], 1))``); they differ
        only for backward directions.
    embedding : None, str, bool
        The ``nn.Embedding`` feeding the GRU, whose model then takes token
        ids: None finds it (a 2-D ``<name>.weight`` of width input_size
        named ``emb``, ``embed``, ``embedding``, ``embeddings`` or
        ``*_emb`` / ``*_embed`` / ``*_embedding``; of several, the one
        beside the GRU), a module name (``"decoder.embedding"``) takes that
        one, True requires one, False takes none.
    fold_embedding : bool, optional
        Fold the embedding into layer 0's input projection (a (V, 3H)
        table): None when the folded table is no bigger, True always,
        False never.  The outputs are the same either way.
    vocab : list of str or path, optional
        The token of each id (or a vocabulary file, see
        ``docs/sequence-models.md``), stored in the model's metadata for
        ``grulite generate``; needs an embedding of as many rows.
    h0 : str, optional
        The key of a learned initial state (an ``nn.Parameter`` of shape
        ``(num_layers*num_directions, H)`` or ``(num_layers*num_directions,
        1, H)``), stored in the model and used for every row when a call
        gives no ``h0``.
    update_gate : {"torch", "seed"}
        "seed": the weights were written for h' = (1 - z)*h + z*n (the
        source document's z, which is PyTorch's 1 - z); the z rows are
        negated at conversion so that PyTorch's formula gives the same.
    activations : (f, g), or one (f, g) per layer, optional
        A custom cell's gate activation f (r and z) and candidate
        activation g (n), for every direction: names ("sigmoid", "tanh",
        "relu", "affine", "leaky_relu", "thresholded_relu", "scaled_tanh",
        "hard_sigmoid", "elu", "softsign", "softplus"), or with parameters
        ``("leaky_relu", 0.1)``, ``("hard_sigmoid", 0.2, 0.5)``.  None:
        sigmoid and tanh.  Formulas and defaults: ``docs/variants.md``.
    clip : float, optional
        Bound every pre-activation to [-clip, clip] first (ONNX's clip).
    num_threads : int, optional
        Threads for whole-sequence calls (see :attr:`Model.num_threads`).
    """
    from grulite.importers._state_dict import build_image

    image, _ = build_image(mapping, prefix, reset_after, head, batch_first, dtype=dtype,
                           head_from=head_from, embedding=embedding,
                           fold_embedding=fold_embedding, vocab=vocab, h0=h0,
                      update_gate=update_gate, activations=activations, clip=clip)
    return from_bytes(image, num_threads=num_threads)


def from_npz(path: _Path, prefix: Optional[str] = None,
             reset_after: Union[bool, Sequence[bool]] = True, head: _HeadSpec = None,
             *, batch_first: bool = True, dtype: str = "auto",
             head_from: str = "output", embedding: _Embedding = None,
             fold_embedding: Optional[bool] = None, vocab: _Vocab = None,
                    h0: Optional[str] = None, update_gate: str = "torch",
             activations: Any = None, clip: Optional[float] = None,
             num_threads: Optional[int] = None) -> Model:
    """Builds a model from a state_dict saved with ``np.savez``.

    ``np.savez("model.npz", **{k: v.numpy() for k, v in model.state_dict().items()})``
    makes such a file.  Only the members the model uses are read, after
    every shape is checked on the members' headers.  Parameters are those
    of :func:`from_state_dict`.
    """
    return _from_file("npz", path, num_threads, prefix=prefix, reset_after=reset_after,
                      head=head, batch_first=batch_first, dtype=dtype, head_from=head_from,
                      embedding=embedding, fold_embedding=fold_embedding, vocab=vocab,
                      h0=h0, update_gate=update_gate, activations=activations, clip=clip)


def from_torch_file(path: _Path, prefix: Optional[str] = None,
                    reset_after: Union[bool, Sequence[bool]] = True, head: _HeadSpec = None,
                    *, batch_first: bool = True, dtype: str = "auto",
                    head_from: str = "output", embedding: _Embedding = None,
                    fold_embedding: Optional[bool] = None, vocab: _Vocab = None,
                    h0: Optional[str] = None, update_gate: str = "torch",
                    activations: Any = None, clip: Optional[float] = None,
                    num_threads: Optional[int] = None) -> Model:
    """Imports a ``torch.save``'d state_dict or checkpoint without torch.

    ``torch.save(model.state_dict(), path)`` or a checkpoint dict such as
    ``{"model": model.state_dict(), "epoch": 3, "optimizer": ...}`` (torch
    >= 1.6).  The pickle is read by a restricted unpickler that builds
    tensors and plain containers only; anything else raises
    :class:`GruliteError` before it runs.  Parameters are those of
    :func:`from_state_dict`.
    """
    return _from_file("pt", path, num_threads, prefix=prefix, reset_after=reset_after,
                      head=head, batch_first=batch_first, dtype=dtype,
                      head_from=head_from, embedding=embedding,
                      fold_embedding=fold_embedding, vocab=vocab, h0=h0,
                      update_gate=update_gate, activations=activations, clip=clip)


def from_safetensors(path: _Path, prefix: Optional[str] = None,
                     reset_after: Union[bool, Sequence[bool]] = True, head: _HeadSpec = None,
                     *, batch_first: bool = True, dtype: str = "auto",
                     head_from: str = "output", embedding: _Embedding = None,
                    fold_embedding: Optional[bool] = None, vocab: _Vocab = None,
                    h0: Optional[str] = None, update_gate: str = "torch",
                    activations: Any = None, clip: Optional[float] = None,
                    num_threads: Optional[int] = None) -> Model:
    """Imports a ``.safetensors`` file of a state_dict (parsed directly; no
    extra package): ``safetensors.torch.save_file(model.state_dict(), path)``.

    Parameters are those of :func:`from_state_dict`.
    """
    return _from_file("safetensors", path, num_threads, prefix=prefix,
                      reset_after=reset_after, head=head, batch_first=batch_first, dtype=dtype,
                      head_from=head_from, embedding=embedding,
                      fold_embedding=fold_embedding, vocab=vocab, h0=h0,
                      update_gate=update_gate, activations=activations, clip=clip)


def from_arrays(layers: Sequence[Mapping[str, Any]], *, embedding: Any = None,
                head: Sequence[Any] = (), reset_after: Union[bool, Sequence[bool]] = True,
                batch_first: bool = True, dtype: str = "auto", vocab: _Vocab = None,
                fold_embedding: Optional[bool] = None, head_from: str = "output",
                activations: Any = None, clip: Optional[float] = None,
                num_threads: Optional[int] = None) -> Model:
    """Builds a model from arrays that do not carry PyTorch's names.

    Parameters
    ----------
    layers : list of dict
        One dict per GRU layer: ``weight_ih`` (3H, input), ``weight_hh``
        (3H, H), optionally ``bias_ih`` and ``bias_hh`` (3H,) (both or
        neither), ``h0`` (H,) a learned initial state (used when a call
        gives no h0), and ``weight_ih_reverse`` ... ``h0_reverse`` for a
        second direction; PyTorch's layout and gate order r, z, n.  Arrays may be numpy
        arrays, torch tensors or anything ``np.asarray`` takes.
    embedding : array_like, optional
        A (vocab_size, width) table: the model then takes token ids, and
        layer 0's weight_ih is (3H, width).
    head : list of (weight, bias or None, activation)
        Linear layers after the GRU: weight (out, in), bias (out,).
    reset_after : bool or sequence of bool
        As for :func:`from_state_dict`, one value or one per layer.
    batch_first, dtype, head_from, fold_embedding, vocab, activations, clip, num_threads
        As for :func:`from_state_dict`.

    Every shape is checked; a GruliteError names the layer and the array.
    """
    from grulite.importers._arrays import image

    img, _ = image(layers, embedding=embedding, head=head, reset_after=reset_after,
                   batch_first=batch_first, dtype=dtype, head_from=head_from, vocab=vocab,
                   fold_embedding=fold_embedding, activations=activations, clip=clip)
    return from_bytes(img, num_threads=num_threads)


def from_onnx(path: _Path, *, dtype: str = "auto", num_threads: Optional[int] = None) -> Model:
    """Imports the GRU nodes (and Linear / activation head) of an ONNX file.

    Needs the ``onnx`` package (``pip install grulite[onnx]``), not ONNX
    Runtime.  See ``grulite.importers._onnx`` for what imports and the
    conventions: ``y = Y.transpose(0, 2, 1, 3).reshape(T, B, D*H)`` for
    ``layout=0``; h0 / h_n are (L*D, B, H).

    Parameters
    ----------
    path : str or PathLike
        The ``.onnx`` file (self-contained: external data is never read).
    dtype : {"auto", "float32", "float16", "bfloat16", "int8"}
        Storage type of the GRU weights.
    num_threads : int, optional
        Threads for whole-sequence calls.
    """
    return _from_file("onnx", path, num_threads, dtype=dtype)


def from_keras(path: _Path, *, dtype: str = "auto", num_threads: Optional[int] = None,
               head: bool = True) -> Model:
    """Imports a Keras 3 ``.keras`` archive with GRU layers (and a Dense head).

    Needs ``h5py`` (``pip install grulite[keras]``), not Keras.  The model is
    batch-first like Keras.  See ``grulite.importers._keras`` for what maps
    (and how Keras' go_backwards output order relates to grulite's ``y``).
    A model with ``Masking`` keeps its mask value (``Model.mask_value``)
    and computes ``lengths`` from x when a call gives none (trailing
    padding only).

    Parameters
    ----------
    path : str or PathLike
        The ``.keras`` file.
    dtype : {"auto", "float32", "float16", "bfloat16", "int8"}
        Storage type of the GRU weights.
    num_threads : int, optional
        Threads for whole-sequence calls.
    head : bool
        False skips the Dense layers.
    """
    return _from_file("keras", path, num_threads, dtype=dtype, head=head)


def available_isas() -> list:
    """Kernel sets this CPU and build can run, plainest first (see ``Model.isa``)."""
    return [name for name in _core.isa_names() if _core.isa_supported(name)]


__all__ = ["__version__", "GruliteError", "Model", "ModelConfig", "LayerConfig",
           "DenseConfig", "Stream", "load", "from_bytes", "from_state_dict", "from_npz",
           "from_arrays", "from_onnx", "from_keras", "from_torch_file", "from_safetensors", "available_isas"]
