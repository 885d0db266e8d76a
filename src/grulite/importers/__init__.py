"""Importers: one module per foreign weights format, behind one registry.

Each importer module has ``image(path, **options) -> (bytes, summary)``:
the .grl image of the model in the file and a summary of what was found
(``layers``, ``dense``, ``parameters``, ``prefix``; the state_dict formats
add ``tensors`` and ``unused``).  :data:`IMPORTERS` lists them with the
file extensions they read; the command line (``grulite convert``), the
``grulite.from_*`` functions and the fuzz targets (``tools/fuzz``) all go
through it.  Importer modules are imported on first use: this package
itself costs nothing.

Adding a format: a module here with ``image()``, one :class:`Importer`
entry below, a ``from_<format>`` function in ``grulite/__init__.py``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Union

from grulite._errors import GruliteError

__all__ = ["Importer", "IMPORTERS", "by_name", "for_path", "describe_formats"]


@dataclass(frozen=True)
class Importer:
    """One weights format.

    name: short name (the fuzz target's); extensions: file name endings it
    reads; what: a few words for help texts; module: the module under
    ``grulite.importers`` with ``image()``; state_dict: takes the
    state_dict options (prefix, head, reset_after, batch_first, head_from,
    embedding, fold_embedding, vocab);
    needs: optional packages it imports (``pip install grulite[...]``).
    """
    name: str
    extensions: tuple
    what: str
    module: str
    state_dict: bool
    needs: tuple = ()

    def load(self) -> Any:
        """The importer's module (imported on first use)."""
        return importlib.import_module(f"grulite.importers.{self.module}")

    def image(self, path: Union[str, os.PathLike], **options: Any) -> tuple:
        """The .grl image and summary of the model in the file at `path`."""
        return self.load().image(path, **options)


IMPORTERS = (
    Importer("npz", (".npz",), "np.savez'd state_dict", "_npz", True),
    Importer("pt", (".pt", ".pth", ".ckpt", ".bin"), "torch.save", "_torchfile", True),
    Importer("safetensors", (".safetensors",), "safetensors", "_safetensors", True),
    Importer("onnx", (".onnx",), "ONNX GRU graph", "_onnx", False, ("onnx",)),
    Importer("keras", (".keras",), "Keras 3 archive", "_keras", False, ("h5py",)),
)


def by_name(name: str) -> Importer:
    """The importer called `name` ("npz", "pt", "safetensors", "onnx", "keras")."""
    for imp in IMPORTERS:
        if imp.name == name:
            return imp
    raise GruliteError(f"unknown importer {name!r}; expected one of "
                       f"{', '.join(i.name for i in IMPORTERS)}")


def describe_formats() -> str:
    """The formats as a help text shows them: ".npz (np.savez'd state_dict), ..."."""
    return ", ".join(f"{' / '.join(i.extensions)} ({i.what})" for i in IMPORTERS)


def for_path(path: Union[str, os.PathLike]) -> Importer:
    """The importer for a file, chosen by its extension."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    for imp in IMPORTERS:
        if ext in imp.extensions:
            return imp
    raise GruliteError(f"{os.fspath(path)!r}: unknown input type {ext or '(none)'!r}; grulite "
                       f"converts {describe_formats()} files")
