#!/usr/bin/env python3
"""Generate the whole-sequence-model fixtures (tests/fixtures/generate/*.npz).

Issue 15: an embedding layer (token ids in), generation (greedy / sampling),
``nn.GRUCell`` state_dicts and forecasting.  Every reference here is computed
by real torch (``torch.nn`` modules, no hand-written math), so grulite is
checked against torch and not against a second copy of its own formulas.

Re-run (from the repository root; needs torch==2.13.0, numpy):

    python3 tools/make_generate_fixtures.py            # rewrites the files
    python3 tools/make_generate_fixtures.py --check    # regenerates in memory, diffs

Deterministic: fixed ``torch.manual_seed`` per file, float32, one torch
thread, ``torch.use_deterministic_algorithms(True)``, and .npz members
written with a fixed timestamp (``tests/support/files.npz_bytes``), so
re-running gives byte-identical files.

Layout of every file
--------------------
* the model's ``state_dict`` tensors under their PyTorch names (float32
  numpy arrays), e.g. ``emb.weight``, ``gru.weight_ih_l0``, ``fc.bias``;
* inputs under keys starting with ``in_`` and torch's reference outputs
  under keys starting with ``ref_``.  A state_dict loader reading these
  files must ignore the ``in_*`` / ``ref_*`` keys (they are not tensors of
  the model).
* token ids are int64; "padded with -1" means positions past a row's length
  hold -1 (never a valid id).

Files
-----
1. ``charlm.npz``  -- ``emb`` nn.Embedding(37, 24) -> ``gru`` nn.GRU(24, 48,
   num_layers=2, batch_first=True) -> ``fc`` nn.Linear(48, 37).
     in_tokens (4, 9) int64, padding positions 0; in_lengths (4,) = [9, 5, 1, 7]
     ref_y (4, 9, 48)        GRU output of the padded batch (pack_padded_sequence
                             / pad_packed_sequence(total_length=9): zero past length)
     ref_h_n (2, 4, 48)      final state (each row's last valid step)
     ref_logits_last (4, 37) fc(output at each row's last valid step)
     in_prompts (4, 9)       the prompts: rows of in_tokens cut to in_lengths,
                             padded with -1
     in_stop () int64 = 3    the stop token; in_max_steps () int64 = 12
     ref_greedy (4, 12)      greedy generation, each row on its own: run the
                             prompt, then repeatedly take argmax(fc(last output))
                             and feed it back; stop when it equals in_stop (the
                             stop token is not included) or after 12 tokens;
                             padded with -1
     ref_greedy_len (4,)     number of generated tokens per row
     ref_greedy_nostop (4, 12)  the same with no stop token (always 12)
     ref_logits_steps (12, 37)  row 0, no-stop run: the logits at each step
                             (step i's argmax is ref_greedy_nostop[0, i])
   SEED_CHARLM is picked so that some rows stop early and some do not
   (asserted): ref_greedy_len = [3, 7, 12, 3].
2. ``seq2seq.npz`` -- encoder ``enc_emb`` nn.Embedding(30, 32) + ``enc``
   nn.GRU(32, 64, batch_first=True); decoder ``dec_emb`` nn.Embedding(28, 32)
   + ``dec`` nn.GRU(32, 64, batch_first=True) + ``out`` nn.Linear(64, 28).
     in_src (3, 8) int64, padding 0; in_src_lengths (3,) = [8, 6, 3]
     in_start () = 1, in_stop () = 2, in_max_steps () = 10
     ref_enc_h_n (1, 3, 64)  encoder final state (packed: last valid step)
     ref_dec (3, 10)         greedy decoding per row: first input in_start,
                             h0 = that row's encoder h_n; each step
                             tok = argmax(out(dec output)), stop on in_stop
                             (not included) or after 10 tokens; padded with -1
     ref_dec_len (3,)
   SEED_SEQ2SEQ is picked so that at least one row stops early and at least
   one does not (asserted): ref_dec_len = [8, 10, 3].
3. ``grucell.npz`` -- ``cell`` nn.GRUCell(10, 20) (``cell.weight_ih`` (60, 10),
   ``cell.weight_hh`` (60, 20), ``cell.bias_ih`` (60,), ``cell.bias_hh`` (60,))
   and ``cellnb`` nn.GRUCell(10, 20, bias=False) (``cellnb.weight_ih``,
   ``cellnb.weight_hh`` only).
     in_x (3, 6, 10) float32, in_h0 (3, 20)
     ref_cell_y (3, 6, 20)    h_t of ``cell`` applied step by step from in_h0
     ref_cellnb_y (3, 6, 20)  likewise for ``cellnb``
   Decoys in the same file, so that detection must be by shape and not by
   the key pattern: ``lstm`` nn.LSTMCell(10, 20) (``lstm.weight_ih`` (80, 10),
   ``lstm.weight_hh`` (80, 20), ``lstm.bias_ih`` (80,), ``lstm.bias_hh`` (80,))
   and ``rnn`` nn.RNNCell(10, 20) (``rnn.weight_ih`` (20, 10), ``rnn.weight_hh``
   (20, 20), ``rnn.bias_ih`` (20,), ``rnn.bias_hh`` (20,)).  All three cell
   kinds have the same key names ``<p>.weight_ih`` / ``<p>.weight_hh`` /
   ``<p>.bias_ih`` / ``<p>.bias_hh``; a loader must tell them apart by the
   row count of ``weight_hh`` (H = its column count): a GRUCell has 3H rows,
   an LSTMCell 4H, an RNNCell H.  Only ``cell`` and ``cellnb`` are GRU cells.
4. ``forecast.npz`` -- ``gru`` nn.GRU(3, 16, batch_first=True) + ``fc``
   nn.Linear(16, 3).
     in_x (2, 7, 3) float32 (zero past each length), in_lengths (2,) = [7, 4]
     in_steps () = 5
     ref_forecast (2, 5, 3)  per row: run over x[b, :len_b] from h = 0,
                             p1 = fc(output at the last valid step); then feed
                             p1 as the next input (one step, state carried),
                             p2 = fc(that output), ... 5 predictions.
5. ``sample.npz`` -- ``emb`` nn.Embedding(11, 8) -> ``gru`` nn.GRU(8, 16,
   batch_first=True) -> ``fc`` nn.Linear(16, 11) (``fc.weight`` scaled by
   FC_SCALE after init so the distribution is far from uniform).
     in_prompt (1, 5) int64
     ref_logits (1, 11)        fc(output at the last prompt step)
     ref_probs_t05 / _t1 / _t2 (1, 11)  softmax(logits / T), T = 0.5, 1, 2
     ref_probs_topk3 (1, 11)   T = 1, the 3 most likely tokens kept, renormalised
     ref_probs_topp08 (1, 11)  T = 1, top-p = 0.8: sort the probabilities
                               descending, keep the smallest prefix whose sum
                               is >= p (always at least one token), renormalise
     in_top_k () = 3, in_top_p () float32 = 0.8
   The top-k / top-p cut-offs are at least MARGIN away from a tie (asserted).

Robustness: torch's default init gives near-uniform logits (top-2 gaps of
~1e-4 at greedy steps), so in charlm and seq2seq every GRU parameter is
multiplied by GRU_SCALE and the output Linear's weight by FC_SCALE after
init (sample scales its fc.weight by FC_SCALE too).  Every greedy step of
every reference then has its top two logits at least MARGIN = 1e-2 apart
(asserted; the minimum is printed), so an implementation within ordinary
float32 error of torch picks the same tokens.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from support.files import npz_bytes  # noqa: E402

OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "generate")
MAX_BYTES = 200 * 1024
MARGIN = 1e-2          # min gap between the top two logits at a greedy step

# Seeds (torch.manual_seed) per file, picked so that the assertions below hold.
SEED_CHARLM, SEED_SEQ2SEQ, SEED_GRUCELL, SEED_FORECAST, SEED_SAMPLE = 1529, 1505, 1503, 1504, 1501
# torch's default init gives near-uniform logits (top-2 gaps ~1e-4): the
# recurrent and output weights of the generative models are scaled up after
# init, so that greedy steps are far from ties (as in a trained model).
GRU_SCALE = 2.0            # every GRU weight and bias *= this (charlm, seq2seq)
FC_SCALE = 8.0             # the output Linear's weight *= this (charlm, seq2seq, sample)

_gaps: list[float] = []    # every greedy step's top-2 logit gap (for the report)


def _setup() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def _sd(*named_modules) -> dict:
    out = {}
    for prefix, mod in named_modules:
        for k, v in mod.state_dict().items():
            out[f"{prefix}.{k}"] = v.detach().cpu().numpy().astype(np.float32)
    return out


def _scale(module: nn.Module, factor: float, only_weight: bool = False) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not only_weight or name == "weight":
                p *= factor


def _argmax_checked(logits: torch.Tensor) -> int:
    """argmax of a 1-D logits vector, asserting no near-tie with the runner-up."""
    top2 = torch.topk(logits, 2).values
    gap = float(top2[0] - top2[1])
    _gaps.append(gap)
    assert gap >= MARGIN, f"greedy near-tie: top-2 logit gap {gap:.3g} < {MARGIN}"
    return int(torch.argmax(logits))


def _greedy(emb, gru, fc, prompt, h0, max_steps, stop):
    """Greedy generation for one row: run `prompt` (1-D ids) from h0 (or None),
    then feed argmax(fc(last output)) back.  Returns (tokens, per-step logits)."""
    y, h = gru(emb(prompt[None, :]), h0)
    toks, steps = [], []
    for _ in range(max_steps):
        logits = fc(y[0, -1])
        steps.append(logits.clone())
        tok = _argmax_checked(logits)
        if stop is not None and tok == stop:
            break
        toks.append(tok)
        y, h = gru(emb(torch.tensor([[tok]])), h)
    return toks, torch.stack(steps)


def _pad(rows, width, fill=-1) -> np.ndarray:
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _tokens(gen: torch.Generator, lengths, T, lo, hi) -> torch.Tensor:
    """(B, T) int64 ids in [lo, hi), zero past each length."""
    tok = torch.randint(lo, hi, (len(lengths), T), generator=gen, dtype=torch.int64)
    for b, n in enumerate(lengths):
        tok[b, n:] = 0
    return tok


# ---------------------------------------------------------------------------


def charlm() -> dict:
    torch.manual_seed(SEED_CHARLM)
    V, E, H, L, T = 37, 24, 48, 2, 9
    lengths = [9, 5, 1, 7]
    stop, max_steps = 3, 12
    emb = nn.Embedding(V, E)
    gru = nn.GRU(E, H, num_layers=L, batch_first=True)
    fc = nn.Linear(H, V)
    _scale(gru, GRU_SCALE)
    _scale(fc, FC_SCALE, only_weight=True)
    gen = torch.Generator().manual_seed(SEED_CHARLM * 10 + 1)
    tokens = _tokens(gen, lengths, T, 4, V)        # prompts avoid ids 0..3 (pad, stop)
    lens = torch.tensor(lengths, dtype=torch.int64)

    with torch.no_grad():
        packed = pack_padded_sequence(emb(tokens), lens, batch_first=True, enforce_sorted=False)
        y_p, h_n = gru(packed)
        y, _ = pad_packed_sequence(y_p, batch_first=True, total_length=T)
        last = y[torch.arange(len(lengths)), lens - 1]
        logits_last = fc(last)

        greedy, nostop, steps0 = [], [], None
        for b, n in enumerate(lengths):
            # the per-row run must agree with the packed batch
            yb, hb = gru(emb(tokens[b:b + 1, :n]))
            assert torch.allclose(yb[0], y[b, :n], atol=1e-6)
            assert torch.allclose(hb[:, 0], h_n[:, b], atol=1e-6)
            g, _ = _greedy(emb, gru, fc, tokens[b, :n], None, max_steps, stop)
            ns, st = _greedy(emb, gru, fc, tokens[b, :n], None, max_steps, None)
            assert len(ns) == max_steps and ns[:len(g)] == g
            greedy.append(g)
            nostop.append(ns)
            if b == 0:
                steps0 = st
    glen = [len(g) for g in greedy]
    assert any(n < max_steps for n in glen) and any(n == max_steps for n in glen), glen

    out = _sd(("emb", emb), ("gru", gru), ("fc", fc))
    out.update({
        "in_tokens": tokens.numpy(),
        "in_lengths": lens.numpy(),
        "in_prompts": _pad([tokens[b, :n].tolist() for b, n in enumerate(lengths)], T),
        "in_stop": np.array(stop, dtype=np.int64),
        "in_max_steps": np.array(max_steps, dtype=np.int64),
        "ref_y": y.numpy(),
        "ref_h_n": h_n.numpy(),
        "ref_logits_last": logits_last.numpy(),
        "ref_greedy": _pad(greedy, max_steps),
        "ref_greedy_len": np.array(glen, dtype=np.int64),
        "ref_greedy_nostop": _pad(nostop, max_steps),
        "ref_logits_steps": steps0.numpy(),
    })
    return out


def seq2seq() -> dict:
    torch.manual_seed(SEED_SEQ2SEQ)
    VS, VT, E, H, T = 30, 28, 32, 64, 8
    lengths = [8, 6, 3]
    start, stop, max_steps = 1, 2, 10
    enc_emb = nn.Embedding(VS, E)
    enc = nn.GRU(E, H, batch_first=True)
    dec_emb = nn.Embedding(VT, E)
    dec = nn.GRU(E, H, batch_first=True)
    out_l = nn.Linear(H, VT)
    _scale(enc, GRU_SCALE)
    _scale(dec, GRU_SCALE)
    _scale(out_l, FC_SCALE, only_weight=True)
    gen = torch.Generator().manual_seed(SEED_SEQ2SEQ * 10 + 1)
    src = _tokens(gen, lengths, T, 3, VS)
    lens = torch.tensor(lengths, dtype=torch.int64)

    with torch.no_grad():
        packed = pack_padded_sequence(enc_emb(src), lens, batch_first=True, enforce_sorted=False)
        _, h_enc = enc(packed)
        decoded = []
        for b, n in enumerate(lengths):
            _, hb = enc(enc_emb(src[b:b + 1, :n]))
            assert torch.allclose(hb[:, 0], h_enc[:, b], atol=1e-6)
            toks, _ = _greedy(dec_emb, dec, out_l, torch.tensor([start]),
                              h_enc[:, b:b + 1].contiguous(), max_steps, stop)
            decoded.append(toks)
    dlen = [len(d) for d in decoded]
    assert any(n < max_steps for n in dlen) and any(n == max_steps for n in dlen), dlen

    out = _sd(("enc_emb", enc_emb), ("enc", enc), ("dec_emb", dec_emb), ("dec", dec), ("out", out_l))
    out.update({
        "in_src": src.numpy(),
        "in_src_lengths": lens.numpy(),
        "in_start": np.array(start, dtype=np.int64),
        "in_stop": np.array(stop, dtype=np.int64),
        "in_max_steps": np.array(max_steps, dtype=np.int64),
        "ref_enc_h_n": h_enc.numpy(),
        "ref_dec": _pad(decoded, max_steps),
        "ref_dec_len": np.array(dlen, dtype=np.int64),
    })
    return out


def grucell() -> dict:
    torch.manual_seed(SEED_GRUCELL)
    I, H, B, T = 10, 20, 3, 6
    cell = nn.GRUCell(I, H)
    cellnb = nn.GRUCell(I, H, bias=False)
    lstm = nn.LSTMCell(I, H)
    rnn = nn.RNNCell(I, H)
    x = torch.randn(B, T, I)
    h0 = torch.randn(B, H) * 0.5

    def run(c):
        h, ys = h0, []
        for t in range(T):
            h = c(x[:, t], h)
            ys.append(h)
        return torch.stack(ys, 1)

    with torch.no_grad():
        y, ynb = run(cell), run(cellnb)
        # a GRUCell is one step of an nn.GRU with the same weights
        g = nn.GRU(I, H, batch_first=True)
        g.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
        assert torch.allclose(g(x, h0[None])[0], y, atol=1e-6)

    out = _sd(("cell", cell), ("cellnb", cellnb), ("lstm", lstm), ("rnn", rnn))
    assert sorted(k for k in out if k.startswith("cellnb.")) == ["cellnb.weight_hh", "cellnb.weight_ih"]
    out.update({
        "in_x": x.numpy(),
        "in_h0": h0.numpy(),
        "ref_cell_y": y.numpy(),
        "ref_cellnb_y": ynb.numpy(),
    })
    return out


def forecast() -> dict:
    torch.manual_seed(SEED_FORECAST)
    I, H, T, steps = 3, 16, 7, 5
    lengths = [7, 4]
    gru = nn.GRU(I, H, batch_first=True)
    fc = nn.Linear(H, I)
    x = torch.randn(len(lengths), T, I)
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    preds = []
    with torch.no_grad():
        for b, n in enumerate(lengths):
            y, h = gru(x[b:b + 1, :n])
            row = []
            for _ in range(steps):
                p = fc(y[0, -1])
                row.append(p)
                y, h = gru(p[None, None, :], h)
            preds.append(torch.stack(row))
    out = _sd(("gru", gru), ("fc", fc))
    out.update({
        "in_x": x.numpy(),
        "in_lengths": np.array(lengths, dtype=np.int64),
        "in_steps": np.array(steps, dtype=np.int64),
        "ref_forecast": torch.stack(preds).numpy(),
    })
    return out


def _top_k(p: torch.Tensor, k: int) -> torch.Tensor:
    s = torch.sort(p, descending=True).values
    assert float(s[k - 1] - s[k]) >= MARGIN, "top-k cut-off near a tie"
    keep = torch.zeros_like(p, dtype=torch.bool)
    keep[torch.topk(p, k).indices] = True
    q = torch.where(keep, p, torch.zeros_like(p))
    return q / q.sum()


def _top_p(p: torch.Tensor, top_p: float) -> torch.Tensor:
    s, idx = torch.sort(p, descending=True)
    c = torch.cumsum(s.double(), 0)
    n = int(torch.searchsorted(c, torch.tensor([top_p], dtype=torch.float64))[0]) + 1  # first c >= p
    n = max(1, min(n, len(p)))
    assert c[n - 1] >= top_p and (n == 1 or c[n - 2] < top_p)
    assert float(c[n - 1]) - top_p >= MARGIN and (n == 1 or top_p - float(c[n - 2]) >= MARGIN), \
        "top-p cut-off near a tie"
    q = torch.zeros_like(p)
    q[idx[:n]] = p[idx[:n]]
    return q / q.sum()


def sample() -> dict:
    torch.manual_seed(SEED_SAMPLE)
    V, E, H = 11, 8, 16
    emb = nn.Embedding(V, E)
    gru = nn.GRU(E, H, batch_first=True)
    fc = nn.Linear(H, V)
    _scale(fc, FC_SCALE, only_weight=True)
    gen = torch.Generator().manual_seed(SEED_SAMPLE * 10 + 1)
    prompt = torch.randint(0, V, (1, 5), generator=gen, dtype=torch.int64)
    with torch.no_grad():
        y, _ = gru(emb(prompt))
        logits = fc(y[:, -1])                              # (1, V)
        probs = {t: torch.softmax(logits / t, -1) for t in (0.5, 1.0, 2.0)}
        p1 = probs[1.0][0]
        topk = _top_k(p1, 3)[None]
        topp = _top_p(p1, 0.8)[None]
    kept = int((topp > 0).sum())
    assert 2 <= kept < V - 1, kept            # a meaningful cut: several kept, several dropped
    out = _sd(("emb", emb), ("gru", gru), ("fc", fc))
    out.update({
        "in_prompt": prompt.numpy(),
        "in_top_k": np.array(3, dtype=np.int64),
        "in_top_p": np.array(0.8, dtype=np.float32),
        "ref_logits": logits.numpy(),
        "ref_probs_t05": probs[0.5].numpy(),
        "ref_probs_t1": probs[1.0].numpy(),
        "ref_probs_t2": probs[2.0].numpy(),
        "ref_probs_topk3": topk.numpy(),
        "ref_probs_topp08": topp.numpy(),
    })
    return out


FIXTURES = {
    "charlm.npz": charlm,
    "seq2seq.npz": seq2seq,
    "grucell.npz": grucell,
    "forecast.npz": forecast,
    "sample.npz": sample,
}


def build() -> dict:
    _setup()
    del _gaps[:]
    files = {}
    for name, fn in FIXTURES.items():
        arrays = fn()
        for k, v in arrays.items():
            assert v.dtype in (np.float32, np.int64), (name, k, v.dtype)
        data = npz_bytes(arrays)
        assert len(data) < MAX_BYTES, (name, len(data))
        files[name] = data
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="regenerate in memory and compare")
    ap.add_argument("--out-dir", default=OUT_DIR)
    args = ap.parse_args()
    files = build()
    print(f"min top-2 logit gap over {len(_gaps)} greedy steps: {min(_gaps):.4g}")
    bad = 0
    for name, data in files.items():
        path = os.path.join(args.out_dir, name)
        if args.check:
            same = os.path.exists(path) and open(path, "rb").read() == data
            print(f"{name}: {'same' if same else 'DIFFERS'}")
            bad += not same
        else:
            os.makedirs(args.out_dir, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            print(f"{name}: {len(data)} bytes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
