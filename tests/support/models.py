"""Random PyTorch-style state_dicts made with numpy (float32, PyTorch's
names and shapes), for tests and tools that need a model of a given shape."""
from __future__ import annotations

import numpy as np


def random_state_dict(seed=0, input_size: int = 3, hidden=(17, 17), bidirectional: bool = False,
                      head=(), prefix: str = "gru.", head_names=None, head_scale: float = 0.5,
                      head_bias_scale: float = 0.1, bias: bool = True, scale: float = 1.0,
                      bound=None, normal: bool = False) -> dict:
    """An nn.GRU state_dict with one layer per entry of `hidden`, followed by
    nn.Linear layers of the widths in `head` named head_names (default fc0,
    fc1, ...).

    seed: an int or a numpy Generator (drawn from in place).  GRU weights
    are uniform in +-scale/sqrt(H) (PyTorch's init, scaled), or +-bound
    when given, or with normal=True standard normal times scale; per
    direction drawn in the order weight_ih, weight_hh, bias_ih, bias_hh.
    Head weights are standard normal times head_scale, biases times
    head_bias_scale.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sd = {}
    D = 2 if bidirectional else 1
    in_f = input_size

    def draw(H, *shape):
        if normal:
            return (rng.standard_normal(shape) * scale).astype(np.float32)
        b = bound if bound is not None else scale / np.sqrt(H)
        return rng.uniform(-b, b, shape).astype(np.float32)

    for k, H in enumerate(hidden):
        for sfx in ("", "_reverse")[:D]:
            sd[f"{prefix}weight_ih_l{k}{sfx}"] = draw(H, 3 * H, in_f)
            sd[f"{prefix}weight_hh_l{k}{sfx}"] = draw(H, 3 * H, H)
            if bias:
                sd[f"{prefix}bias_ih_l{k}{sfx}"] = draw(H, 3 * H)
                sd[f"{prefix}bias_hh_l{k}{sfx}"] = draw(H, 3 * H)
        in_f = D * H
    names = head_names or [f"fc{j}" for j in range(len(head))]
    for name, out_f in zip(names, head):
        sd[f"{name}.weight"] = rng.standard_normal((out_f, in_f)).astype(np.float32) * np.float32(head_scale)
        sd[f"{name}.bias"] = rng.standard_normal(out_f).astype(np.float32) * np.float32(head_bias_scale)
        in_f = out_f
    return sd


def gru_state(rng, input_size: int, hidden: int, layers: int = 1, bidirectional: bool = False,
              bias: bool = True, prefix: str = "gru.") -> dict:
    """An nn.GRU state_dict of `layers` layers of one size, uniform in +-0.5."""
    return random_state_dict(rng, input_size, (hidden,) * layers, bidirectional, prefix=prefix,
                             bias=bias, bound=0.5)


def linear_state(rng, in_features: int, out_features: int, name: str = "fc",
                 bias: bool = True) -> dict:
    """An nn.Linear state_dict, uniform in +-0.5."""
    sd = {f"{name}.weight": rng.uniform(-0.5, 0.5, (out_features, in_features)).astype(np.float32)}
    if bias:
        sd[f"{name}.bias"] = rng.uniform(-0.5, 0.5, out_features).astype(np.float32)
    return sd
