#!/usr/bin/env python3
r"""Train grulite's bundled generative demo: a character-level GRU language
model of the Zen of Python.

Data: the Zen of Python (PEP 20, by Tim Peters), the text that ships with
every Python as the standard library's ``this`` module
(``codecs.decode(this.s, "rot13")``, 856 characters, 45 distinct; PSF
license).  No network access is needed.  (A larger license-clear text does
ship with CPython -- ``pydoc_data.topics``, the help() topics, ~465 KB of
PSF-licensed documentation prose -- but some distributions split it off,
and a small model trained on it would no longer continue the Zen's lines,
which is the point of the demo.  The Zen alone is used.)

Model, saved under these state_dict names:
    emb  nn.Embedding(V, 32)
    gru  nn.GRU(32, HIDDEN, num_layers=LAYERS, batch_first=True)
    fc   nn.Linear(HIDDEN, V)
V = 45 characters; HIDDEN = 128, LAYERS = 1: 69,453 float32 parameters.

Training: random windows of WINDOW characters, each run from a zero state
(so prompts work from a fresh model), next-character cross entropy, Adam
with a cosine learning-rate decay.  The final loss printed is the mean
next-character cross entropy over the whole text, run once from a zero
state.

Outputs (default directory src/grulite/data/, option --out-dir):
  * zen_charlm.npz -- the state_dict (emb.weight, gru.weight_ih_l0, ...,
    fc.bias; float32) plus, for a parity test:
        in_prompt  (1, 12) int64  the ids of "Beautiful is"
        ref_greedy (1, 80) int64  torch's greedy continuation: run the
                                  prompt from a zero state, then 80 times
                                  take argmax(fc(last output)) and feed it
                                  back (no stop token)
    written with fixed zip timestamps, so re-running gives the same bytes.
  * zen_vocab.txt -- the vocabulary: one token per line in id order (line 1
    is id 0), UTF-8.  The tokens are single characters, including space and
    newline, so a line holds its token with backslash escapes:
        \n  newline      \t  tab      \\  backslash      \s  space
    (and \r for a carriage return, which the Zen does not contain); every
    other character stands for itself.  Ids are the characters in sorted
    (code point) order.

Deterministic: fixed seeds, one torch thread,
torch.use_deterministic_algorithms(True); 70-80 s on one core here.
Every greedy step of the reference is checked to have its top two logits at
least MARGIN apart, so the greedy text is not at the mercy of float32
rounding.

Run:  python tools/train_charlm.py [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from support.files import npz_bytes  # noqa: E402

OUT_DIR = os.path.join(ROOT, "src", "grulite", "data")
MODEL_NAME = "zen_charlm.npz"
VOCAB_NAME = "zen_vocab.txt"

SEED = 20
EMBED = 32
HIDDEN = 128
LAYERS = 1
WINDOW = 100
BATCH = 32
STEPS = 1000
LR = 5e-3
LR_MIN = 1e-4
CLIP = 1.0

PROMPT = "Beautiful is"
GEN_STEPS = 80
MARGIN = 1e-2          # min gap between the top two logits at a greedy step

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "\\s", "\\": "\\\\"}


def zen() -> str:
    with contextlib.redirect_stdout(io.StringIO()):   # `import this` prints the Zen
        import this
    return codecs.decode(this.s, "rot13")


def escape(ch: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in ch)


class CharLM(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, EMBED)
        self.gru = nn.GRU(EMBED, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.fc = nn.Linear(HIDDEN, vocab)

    def forward(self, ids, h=None):
        y, h = self.gru(self.emb(ids), h)
        return self.fc(y), h


def greedy(model: CharLM, prompt: list, steps: int):
    """torch greedy generation; returns (ids, smallest top-2 logit gap)."""
    out, gaps = [], []
    with torch.no_grad():
        logits, h = model(torch.tensor([prompt]))
        for _ in range(steps):
            last = logits[0, -1]
            top2 = torch.topk(last, 2).values
            gaps.append(float(top2[0] - top2[1]))
            tok = int(torch.argmax(last))
            out.append(tok)
            logits, h = model(torch.tensor([[tok]]), h)
    return out, min(gaps)


def main() -> int:
    ap = argparse.ArgumentParser(description="Train the Zen of Python character GRU demo.")
    ap.add_argument("--out-dir", default=OUT_DIR, help=f"output directory (default {OUT_DIR})")
    args = ap.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    text = zen()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    V, N = len(chars), len(data)
    print(f"text: {N} characters, vocabulary {V}")

    model = CharLM(V)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    offs = torch.arange(WINDOW + 1)
    t0 = time.perf_counter()
    for step in range(STEPS):
        lr = LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * step / STEPS))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, N - WINDOW, (BATCH,), generator=gen)
        win = data[starts[:, None] + offs]                 # (BATCH, WINDOW + 1)
        logits, _ = model(win[:, :-1])
        loss = loss_fn(logits.reshape(-1, V), win[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        if step % 250 == 0 or step == STEPS - 1:
            print(f"step {step:5d}  lr {lr:.2e}  batch loss {loss.item():.4f}")
    secs = time.perf_counter() - t0

    model.eval()
    with torch.no_grad():
        logits, _ = model(data[None, :-1])
        final = loss_fn(logits[0], data[1:]).item()
    print(f"trained in {secs:.1f} s; final loss (whole text, mean next-char cross entropy): {final:.4f}")

    prompt = [stoi[c] for c in PROMPT]
    ids, gap = greedy(model, prompt, GEN_STEPS)
    assert gap >= MARGIN, f"greedy near-tie: top-2 logit gap {gap:.3g} < {MARGIN}; change SEED"
    print(f"greedy: smallest top-2 logit gap over {GEN_STEPS} steps: {gap:.3f}")

    arrays = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    arrays["in_prompt"] = np.array([prompt], dtype=np.int64)
    arrays["ref_greedy"] = np.array([ids], dtype=np.int64)
    os.makedirs(args.out_dir, exist_ok=True)
    model_path = os.path.join(args.out_dir, MODEL_NAME)
    vocab_path = os.path.join(args.out_dir, VOCAB_NAME)
    with open(model_path, "wb") as f:
        f.write(npz_bytes(arrays))
    with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(escape(c) + "\n" for c in chars))
    print(f"wrote {model_path} ({os.path.getsize(model_path)} bytes), {vocab_path}")

    print(f"greedy continuation of {PROMPT!r}:")
    print(PROMPT + "".join(chars[i] for i in ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
