#!/usr/bin/env python3
"""Train grulite's bundled demo model: a 2-layer GRU on yearly sunspot numbers.

Data: the yearly sunspot series that statsmodels ships inside its wheel
(``statsmodels.api.datasets.sunspots``, column ``SUNACTIVITY``, years
1700-2008, 309 values; source: SIDC/NOAA yearly mean sunspot number, as
packaged by statsmodels).  No network access is needed.

Task: predict next year's sunspot number from the previous W=20 years.

Split (chronological, no leakage of test targets into training):
  * the series is cut at index S = int(0.8 * 309) = 247 (year 1947);
  * a window belongs to TRAIN if its target year is < 1947, and to TEST
    (held out) if its target year is >= 1947.  Training windows therefore
    only ever see years < 1947 (inputs and targets).  Test windows' inputs
    may reach back before 1947 -- that is observed history, not a test
    target;
  * mean/std for standardization are computed on years < 1947 only;
  * the last 15% of the training windows (by time) serve as a validation
    set used to pick the checkpoint (best validation MSE).  The test part is
    never used for any choice.

Outputs (written to src/grulite/data/):
  * sunspots_gru.npz  -- the weights, saved exactly as a user would:
        np.savez(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
  * sunspots_eval.npz -- held-out inputs/targets plus torch's predictions
        (x, y_true, years, last, mean, std, torch_pred).

Reproducible: fixed seeds, torch.use_deterministic_algorithms(True),
torch.set_num_threads(1).  Run:  python tools/train_demo.py
"""

import os
import time

import numpy as np
import torch
import torch.nn as nn

SEED = 0
W = 20
TRAIN_FRAC = 0.8
VAL_FRAC = 0.15  # of the training windows (the latest ones)
EPOCHS = 200
BATCH = 32
LR = 3e-3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "src", "grulite", "data")
MODEL_PATH = os.path.join(OUT_DIR, "sunspots_gru.npz")
EVAL_PATH = os.path.join(OUT_DIR, "sunspots_eval.npz")


class SunspotGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 32, num_layers=2, batch_first=True)
        self.fc = nn.Linear(32, 1)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.fc(y[:, -1])


def load_series():
    import statsmodels.api as sm

    df = sm.datasets.sunspots.load_pandas().data
    years = df["YEAR"].to_numpy().astype(np.int32)
    values = df["SUNACTIVITY"].to_numpy().astype(np.float64)
    assert years[0] == 1700 and years[-1] == 2008 and len(years) == 309, (years[0], years[-1], len(years))
    assert np.all(np.diff(years) == 1)
    return years, values


def metrics(pred, true):
    err = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
    return float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err ** 2)))


def main():
    t0 = time.time()
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    years, values = load_series()
    n = len(values)
    split = int(TRAIN_FRAC * n)  # first test target index
    mean = float(values[:split].mean())
    std = float(values[:split].std())
    z = (values - mean) / std

    # window i: inputs z[i:i+W], target index t = i+W
    targets_idx = np.arange(W, n)
    X = np.stack([z[t - W:t] for t in targets_idx]).astype(np.float32)[:, :, None]
    Y = z[targets_idx].astype(np.float32)
    train_mask = targets_idx < split
    test_mask = ~train_mask
    # sanity: no training window touches a test-period value
    assert targets_idx[train_mask].max() < split

    Xtr_all, Ytr_all = X[train_mask], Y[train_mask]
    n_val = int(round(VAL_FRAC * len(Xtr_all)))
    Xfit, Yfit = Xtr_all[:-n_val], Ytr_all[:-n_val]
    Xval, Yval = Xtr_all[-n_val:], Ytr_all[-n_val:]
    Xte = X[test_mask]
    print(f"series: {n} years {years[0]}-{years[-1]}; split at year {years[split]}; "
          f"train windows {len(Xtr_all)} (fit {len(Xfit)}, val {len(Xval)}), test windows {len(Xte)}")
    print(f"standardization (train part only): mean={mean:.4f} std={std:.4f}")

    model = SunspotGRU()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.MSELoss()
    gen = torch.Generator().manual_seed(SEED)
    xf, yf = torch.from_numpy(Xfit), torch.from_numpy(Yfit)
    xv, yv = torch.from_numpy(Xval), torch.from_numpy(Yval)

    best_val, best_epoch, best_state = float("inf"), -1, None
    for epoch in range(1, EPOCHS + 1):
        model.train()
        perm = torch.randperm(len(xf), generator=gen)
        for b in range(0, len(xf), BATCH):
            idx = perm[b:b + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(xf[idx]).squeeze(1), yf[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv).squeeze(1), yv).item()
        if val < best_val:
            best_val, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if epoch % 50 == 0:
            print(f"epoch {epoch:4d}  val MSE (standardized) {val:.4f}  best {best_val:.4f} @ {best_epoch}")
    model.load_state_dict(best_state)
    model.eval()
    print(f"restored checkpoint from epoch {best_epoch} (best validation MSE {best_val:.4f})")

    def predict(x):
        with torch.no_grad():
            p = model(torch.from_numpy(x)).squeeze(1).numpy().astype(np.float64)
        return p * std + mean

    y_orig = values[targets_idx]
    last_orig = values[targets_idx - 1]
    rows = []
    for name, mask in (("train", train_mask), ("test (held-out)", test_mask)):
        p = predict(X[mask])
        m_mae, m_rmse = metrics(p, y_orig[mask])
        b_mae, b_rmse = metrics(last_orig[mask], y_orig[mask])
        rows.append((name, mask.sum(), m_mae, m_rmse, b_mae, b_rmse))
    print()
    print(f"{'part':<16} {'N':>4}  {'GRU MAE':>8} {'GRU RMSE':>9}  {'persist MAE':>11} {'persist RMSE':>12}")
    for name, cnt, m_mae, m_rmse, b_mae, b_rmse in rows:
        print(f"{name:<16} {cnt:>4}  {m_mae:8.2f} {m_rmse:9.2f}  {b_mae:11.2f} {b_rmse:12.2f}")
    print("(units: sunspot number; 'train' includes the validation windows)")

    os.makedirs(OUT_DIR, exist_ok=True)
    np.savez(MODEL_PATH, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    torch_pred = predict(Xte).astype(np.float32)
    np.savez(
        EVAL_PATH,
        x=Xte.astype(np.float32),
        y_true=y_orig[test_mask].astype(np.float32),
        years=years[targets_idx[test_mask]].astype(np.int32),
        last=last_orig[test_mask].astype(np.float32),
        mean=np.float64(mean),
        std=np.float64(std),
        torch_pred=torch_pred,
    )
    for p in (MODEL_PATH, EVAL_PATH):
        print(f"wrote {os.path.relpath(p, ROOT)} ({os.path.getsize(p)} bytes)")
    print(f"torch {torch.__version__}; total time {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
