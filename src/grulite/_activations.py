"""A GRU's gate activation f (r, z) and candidate activation g (n).

The names and codes are the C core's (``_core.GRU_ACTIVATIONS``: ONNX's
eleven functions in snake_case); C checks every value.  This module reads
what a user writes and fills in the parameters a function takes when they
are not given:

    "relu"                        a name (case and underscores ignored:
                                  "LeakyRelu" is "leaky_relu")
    ("leaky_relu", 0.1)           a name and alpha
    ("hard_sigmoid", 0.2, 0.5)    a name, alpha and beta
    {"name": "elu", "alpha": 1.0}

An activation is then a tuple ``(name, alpha, beta)``, 0.0 for parameters
the function does not take.  The defaults are ONNX's operators' own
(LeakyRelu 0.01, ThresholdedRelu 1.0, Elu 1.0, HardSigmoid 0.2 / 0.5)
and the identities for the two without one (Affine 1 / 0, ScaledTanh
1 / 1).  The ONNX importer follows ONNX Runtime instead and passes every
value itself.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from grulite import _core
from grulite._errors import GruliteError

Activation = tuple  # (name, alpha, beta)

#: The parameters each function takes, with their defaults.
PARAMS: dict[str, tuple[float, ...]] = {
    "affine": (1.0, 0.0), "leaky_relu": (0.01,), "thresholded_relu": (1.0,),
    "scaled_tanh": (1.0, 1.0), "hard_sigmoid": (0.2, 0.5), "elu": (1.0,),
}

DEFAULT = (("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0))


def names() -> tuple[str, ...]:
    """Every GRU activation's name (the C core's table)."""
    return tuple(_core.GRU_ACTIVATIONS)


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def canonical(name: Any, what: str) -> str:
    """The table's spelling of `name`; a GruliteError listing them for an
    unknown one."""
    if isinstance(name, str):
        for n in names():
            if _key(n) == _key(name):
                return n
    raise GruliteError(f"{what}: unknown activation {name!r}; a GRU takes "
                       f"{', '.join(names())}")


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise GruliteError(f"{what} must be a number; got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise GruliteError(f"{what} must be finite; got {f}")
    return f


def parse(spec: Any, what: str) -> Activation:
    """One activation, as ``(name, alpha, beta)``."""
    if isinstance(spec, Mapping):
        extra = set(spec) - {"name", "alpha", "beta"}
        if "name" not in spec or extra:
            raise GruliteError(f"{what}: a dict activation has 'name' and optionally 'alpha', "
                               f"'beta'; got keys {sorted(map(str, spec))}")
        name = canonical(spec["name"], what)
        given = [spec[k] for k in ("alpha", "beta") if k in spec]
        if "beta" in spec and "alpha" not in spec:
            given = [PARAMS.get(name, (0.0,))[0], spec["beta"]]
    elif isinstance(spec, str):
        name, given = canonical(spec, what), []
    elif isinstance(spec, Sequence) and 1 <= len(spec) <= 3 and isinstance(spec[0], str):
        name, given = canonical(spec[0], what), list(spec[1:])
    else:
        raise GruliteError(f"{what}: an activation is a name, (name, alpha[, beta]) or a dict; "
                           f"got {spec!r}")
    takes = PARAMS.get(name, ())
    if len(given) > len(takes):
        raise GruliteError(f"{what}: {name} takes {len(takes) or 'no'} parameter"
                           f"{'' if len(takes) == 1 else 's'} "
                           f"({'alpha, beta' if len(takes) == 2 else 'alpha' if takes else '-'});"
                           f" got {len(given)}")
    vals = [_number(v, f"{what}: {name} {('alpha', 'beta')[i]}") for i, v in enumerate(given)]
    vals += list(takes[len(vals):])
    vals += [0.0] * (2 - len(vals))
    return (name, vals[0], vals[1])


def parse_pair(spec: Any, what: str) -> tuple[Activation, Activation]:
    """(f, g) from a pair of activations."""
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence) or len(spec) != 2:
        raise GruliteError(f"{what}: activations are a pair (f, g), e.g. ('sigmoid', 'relu'); "
                           f"got {spec!r}")
    return parse(spec[0], f"{what} f"), parse(spec[1], f"{what} g")


def parse_clip(clip: Any, what: str = "clip") -> Optional[float]:
    """None (no clip) or a positive finite bound."""
    if clip is None:
        return None
    c = _number(clip, what)
    if c <= 0:
        raise GruliteError(f"{what} must be > 0 (None: no clip); got {c}")
    return c


def _is_act(x: Any) -> bool:
    """Whether x reads as one activation (not a pair of them)."""
    if isinstance(x, (str, Mapping)):
        return True
    return (isinstance(x, Sequence) and 1 <= len(x) <= 3 and isinstance(x[0], str)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x[1:]))


def for_layers(activations: Any, clip: Any, layers: list) -> None:
    """Sets ``activations`` and ``clip`` on importer layer dicts: one pair
    (f, g) for every layer and direction, or a list of one pair (or None)
    per layer."""
    c = parse_clip(clip)
    if activations is None:
        pairs: list = [None] * len(layers)
    elif not isinstance(activations, Sequence) or isinstance(activations, (str, Mapping)):
        raise GruliteError(f"activations: a pair (f, g), or one pair per layer ({len(layers)}); "
                           f"got {activations!r}")
    elif len(activations) == 2 and (len(layers) != 2 or all(_is_act(a) for a in activations)):
        pairs = [parse_pair(activations, "activations")] * len(layers)
    elif len(activations) == len(layers):
        pairs = [None if a is None else parse_pair(a, f"activations[{k}]")
                 for k, a in enumerate(activations)]
    else:
        raise GruliteError(f"activations: a pair (f, g), or one pair per layer ({len(layers)}); "
                           f"got {activations!r}")
    for lay, pair in zip(layers, pairs):
        lay["activations"] = None if pair is None or pair == DEFAULT else \
            [pair] * int(lay["num_directions"])
        lay["clip"] = c


def describe(act: Activation) -> str:
    """``leaky_relu(alpha=0.1)`` / ``relu``."""
    name, a, b = act
    n = len(PARAMS.get(name, ()))
    if n == 0:
        return name
    return f"{name}(alpha={a:g})" if n == 1 else f"{name}(alpha={a:g}, beta={b:g})"
