#!/usr/bin/env python3
"""Train grulite's tiny "classifier shape" example: sequence -> softmax over 10 classes.

READ THIS FIRST
    The data here are simulated lottery draws: uniformly random 3-digit
    numbers from numpy's random generator (seed fixed).  Lottery draws are
    random by construction: the next draw is independent of all previous
    draws, so NO model can predict it better than chance (10% top-1 for a
    digit 0-9).  This example exists only to show the classifier shape from
    our source document (a sequence of draws -> softmax over the next draw's
    first digit) and to give grulite a second real, trained weight file with
    a different layout (1 layer, 3 inputs, 10 outputs).  The measured
    held-out accuracy is ~10%, i.e. chance, as expected; any deviation from
    10% is sampling noise (the script prints a 95% interval).

Encoding: each draw d = (d1, d2, d3) becomes 3 features d_i / 9.0.  Input is
the previous SEQ=10 draws, shape (N, 10, 3); target is the first digit of
the following draw.  Split is chronological (first 80% of draws for
training, the rest held out).

Model:
    class DigitsGRU(nn.Module):
        gru = nn.GRU(3, 24, batch_first=True); fc = nn.Linear(24, 10)
        forward(x) = softmax(fc(gru(x)[0][:, -1]))

Output: src/grulite/data/digits_classifier.npz, saved exactly as a user would:
    np.savez(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})

Reproducible: fixed seeds, torch.use_deterministic_algorithms(True),
torch.set_num_threads(1).  Run:  python tools/train_digits.py
"""

import math
import os
import time

import numpy as np
import torch
import torch.nn as nn

SEED = 1234
N_DRAWS = 20000
SEQ = 10
TRAIN_FRAC = 0.8
EPOCHS = 3
BATCH = 128
LR = 1e-3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_PATH = os.path.join(ROOT, "src", "grulite", "data", "digits_classifier.npz")


class DigitsGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 24, batch_first=True)
        self.fc = nn.Linear(24, 10)

    def logits(self, x):
        y, _ = self.gru(x)
        return self.fc(y[:, -1])

    def forward(self, x):  # softmax head: probabilities over the 10 digits
        return torch.softmax(self.logits(x), dim=-1)


def main():
    t0 = time.time()
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    rng = np.random.default_rng(SEED)
    draws = rng.integers(0, 10, size=(N_DRAWS, 3))  # uniform random digits: a "lottery"
    feats = (draws / 9.0).astype(np.float32)

    tgt_idx = np.arange(SEQ, N_DRAWS)
    X = np.stack([feats[t - SEQ:t] for t in tgt_idx])  # (N, SEQ, 3)
    Y = draws[tgt_idx, 0].astype(np.int64)
    split = int(TRAIN_FRAC * N_DRAWS)
    tr, te = tgt_idx < split, tgt_idx >= split
    Xtr, Ytr, Xte, Yte = X[tr], Y[tr], X[te], Y[te]
    print(f"{N_DRAWS} random draws (seed {SEED}); train windows {len(Xtr)}, held-out windows {len(Xte)}")

    model = DigitsGRU()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(Xtr), torch.from_numpy(Ytr)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for b in range(0, len(xt), BATCH):
            idx = perm[b:b + BATCH]
            opt.zero_grad()
            loss = loss_fn(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch}  train cross-entropy {total / len(xt):.4f}  (chance level ln 10 = {math.log(10):.4f})")

    model.eval()
    with torch.no_grad():
        probs_tr = model(xt).numpy()
        probs_te = model(torch.from_numpy(Xte)).numpy()
    acc_tr = float((probs_tr.argmax(1) == Ytr).mean())
    acc_te = float((probs_te.argmax(1) == Yte).mean())
    n = len(Yte)
    half = 1.96 * math.sqrt(0.1 * 0.9 / n)
    majority = int(np.bincount(Ytr, minlength=10).argmax())
    acc_major = float((Yte == majority).mean())
    print()
    print(f"train top-1 accuracy:    {acc_tr:.2%}")
    print(f"held-out top-1 accuracy: {acc_te:.2%}  (N={n})")
    print(f"chance:                  10.00%  (95% range for a chance-level guesser on N={n}: "
          f"{0.1 - half:.2%} .. {0.1 + half:.2%})")
    print(f"'always predict the most frequent training digit ({majority})': {acc_major:.2%}")
    print("Lottery draws are random: the model cannot beat chance; this only demonstrates the classifier shape.")

    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    np.savez(OUT_PATH, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    print(f"wrote {os.path.relpath(OUT_PATH, ROOT)} ({os.path.getsize(OUT_PATH)} bytes)")
    print(f"torch {torch.__version__}; total time {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
