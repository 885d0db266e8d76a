"""The grulite command line: convert, info, run, bench, generate, demo."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Optional, TextIO

import numpy as np

from grulite._errors import GruliteError

__all__ = ["main", "convert_file"]

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _err(msg: str) -> None:
    print(f"grulite: error: {msg}", file=sys.stderr)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _describe_layers(layers: Sequence[Any], embedding_width: Optional[int] = None) -> list:
    """One line per layer of a model's config (LayerConfig).  A layer with
    an embedding folded into it (``projected``) shows the embedding's width
    when known."""
    lines = []
    for k, lay in enumerate(layers):
        way = "bidirectional" if lay.bidirectional else "backward" if lay.reverse else "forward"
        folded = bool(getattr(lay, "projected", False))
        width = (embedding_width or "ids") if folded else lay.input_size
        lines.append(f"  layer {k}: input {width:>5} -> hidden {lay.hidden_size:>5}"
                     f"  {way}"
                     f"  reset_{'after' if lay.reset_after else 'before'}"
                     f"  {'bias' if lay.bias else 'no bias'}"
                     f"{'  (embedding folded in)' if folded else ''}"
                     f"{'  learned h0' if getattr(lay, 'h0', False) else ''}"
                     f"{_variant_text(lay)}")
    return lines


def _variant_text(lay: Any) -> str:
    """"  f hard_sigmoid(alpha=0.2, beta=0.5), g relu  clip 3  merge sum": a
    layer's activations when not sigmoid / tanh (per direction when the two
    differ), its clip and merge."""
    from grulite._activations import describe

    out = ""
    acts = getattr(lay, "activations", None)
    if acts:
        per = [f"f {describe(f)}, g {describe(g)}" for f, g in acts]
        out += "  " + (per[0] if len(set(per)) == 1 else
                       "; ".join(f"{'fwd' if d == 0 else 'bwd'}: {p}" for d, p in enumerate(per)))
    if getattr(lay, "clip", None):
        out += f"  clip {lay.clip:g}"
    if getattr(lay, "merge", "concat") != "concat":
        out += f"  merge {lay.merge}"
    return out


def _field(obj: Any, name: str) -> Any:
    """obj[name] of a dict, obj.name of anything else (None when absent)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _embedding_line(name: Optional[str], vocab_size: int, width: Optional[int], config: Any) -> str:
    """The report of an embedding: "emb (37 tokens x 24), folded into layer 0
    (a 37 x 144 table)".  width: the nn.Embedding's (None if unknown);
    config: the model's ``config.embedding`` (whether it was folded, the
    table's width)."""
    folded = _field(config, "folded")
    table = _field(config, "width")
    if folded:
        how = ", folded into layer 0" + (f" (a {vocab_size} x {table} table)" if table else "")
    elif folded is None:
        how = ""
    else:
        how = ", kept as a lookup table"
    if width is None and not folded:
        width = table
    size = f"{vocab_size} tokens" + (f" x {width}" if width else "")
    return f"{name} ({size}){how}" if name else f"{size}{how}"


def _embedding_width(meta: dict, name: Optional[str]) -> Optional[int]:
    """The nn.Embedding's width recorded in a model's metadata (tensors)."""
    tensors = meta.get("tensors")
    if not name or not isinstance(tensors, dict):
        return None
    shape = tensors.get(f"{name}.weight", tensors.get(name))
    if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int):
        return shape[1]
    return None


def _vocab_line(tokens: Sequence[str]) -> str:
    from grulite._vocab import is_char_vocab

    return f"{len(tokens)} tokens ({'characters' if is_char_vocab(tokens) else 'words'})"


def convert_file(src: str, dst: Optional[str], prefix: Optional[str] = None,
                 head: Optional[str] = None,
                 reset_after: bool = True, dtype: str = "auto", batch_first: bool = True,
                 out: Optional[TextIO] = None, head_from: str = "output",
                 embedding: Any = None, fold_embedding: Optional[bool] = None,
                 vocab: Any = None, notes: bool = True, h0: Optional[str] = None,
                 update_gate: str = "torch", emit_c: Optional[str] = None,
                 c_name: str = "grulite_model", activations: Any = None,
                 clip: Optional[float] = None) -> dict:
    """Converts a weights file to .grl and prints what was found (to `out`,
    default stdout; tensors of the file the model does not use, to stderr,
    unless `notes` is False).

    embedding: None (find an nn.Embedding feeding the GRU), a module name,
    or False (none); fold_embedding: None (when it pays), True, False;
    vocab: a vocabulary file (or list of tokens) stored in the model; h0:
    the key of a learned initial state; update_gate: "torch" or "seed"
    (weights for h' = (1 - z)*h + z*n); activations: (f, g) for every
    layer, or None; clip: ONNX's clip, or None; dst: the .grl file, or None;
    emit_c: a C source file to write too (the array c_name).  The one
    conversion path:
    ``grulite convert`` and ``grulite demo`` use it.
    """
    out = out or sys.stdout
    from grulite import from_bytes
    from grulite._emit_c import check_c_name
    from grulite.importers import for_path

    if emit_c is not None:
        check_c_name(c_name)            # before any work

    importer = for_path(src)
    if importer.state_dict:
        image, summary = importer.image(src, prefix=prefix, reset_after=reset_after, head=head,
                                        batch_first=batch_first, dtype=dtype, head_from=head_from,
                                        embedding=embedding, fold_embedding=fold_embedding,
                                        vocab=vocab, h0=h0, update_gate=update_gate,
                                        activations=activations, clip=clip)
    elif prefix or head or not reset_after or not batch_first or head_from != "output" or \
            embedding is not None or fold_embedding is not None or vocab is not None or \
            h0 is not None or update_gate != "torch" or activations is not None or \
            clip is not None:
        raise GruliteError(f"--prefix, --head, --head-from, --reset-before, --time-major, "
                           f"--embedding, --no-embedding, --fold-embedding, --vocab, --h0, "
                           f"--update-gate, --activations and --clip "
                           f"apply to state_dicts; a {os.path.splitext(src)[1]} file "
                           f"({importer.what}) carries its own structure")
    else:
        image, summary = importer.image(src, dtype=dtype)
    model = from_bytes(image)       # validate with the C loader before writing
    if dst is not None:
        model.save(dst)
    kind = summary.get("kind") or "GRU"
    print(f"found a {kind} under prefix {summary['prefix']!r} in "
          f"{os.path.basename(src)}:", file=out)
    emb = summary.get("embedding")
    emb_config = getattr(model.config, "embedding", None)
    if emb is not None:
        print("  embedding: " + _embedding_line(emb["name"], emb["vocab_size"], emb["width"],
                                               emb_config), file=out)
    for line in _describe_layers(model.config.layers, emb["width"] if emb else None):
        print(line, file=out)
    for d in summary["dense"]:
        print(f"  head {d['name']}: {d['in_features']} -> {d['out_features']}, {d['activation']}"
              f"{'' if d['bias'] is not None else ', no bias'}", file=out)
    if summary.get("vocab"):
        origin = (f", from {os.path.basename(os.fspath(vocab))}"
                  if isinstance(vocab, (str, os.PathLike)) else "")
        print(f"  vocab: {_vocab_line(summary['vocab'])}{origin}", file=out)
    bf = model.config.batch_first
    print(f"  {summary['parameters']:,} parameters, dtype {model.config.dtype}, layout "
          f"{'batch-first' if bf else 'time-major'}", file=out)
    if dst is not None:
        print(f"wrote {dst} ({_human(os.path.getsize(dst))}, checksum {model.checksum:08x})",
              file=out)
    if emit_c is not None:
        model.save_c(emit_c, c_name)
        print(f"wrote {emit_c} (C source: const unsigned char {c_name}[{model.nbytes}], 64-byte "
              f"aligned, and {c_name}_size; checksum {model.checksum:08x})", file=out)
    unused = summary.get("unused") or []
    if unused and notes:
        shown = ", ".join(unused[:20]) + (f" and {len(unused) - 20} more" if len(unused) > 20 else "")
        print(f"grulite: note: {len(unused)} tensor(s) of {os.path.basename(src)} are not in the "
              f"model: {shown} (a Linear layer is added with --head NAME:ACTIVATION, an "
              "nn.Embedding with --embedding NAME)", file=sys.stderr)
    return summary


# ---- subcommands -----------------------------------------------------------

_FOLD = {"auto": None, "yes": True, "no": False}


def cmd_convert(a: argparse.Namespace) -> int:
    dst = a.output or (None if a.emit_c else os.path.splitext(a.input)[0] + ".grl")
    embedding: Any = False if a.no_embedding else a.embedding
    convert_file(a.input, dst, prefix=a.prefix, head=a.head, reset_after=a.reset_after,
                 dtype=a.dtype, batch_first=not a.time_major, head_from=a.head_from,
                 embedding=embedding, fold_embedding=_FOLD[a.fold_embedding], vocab=a.vocab,
                 h0=a.h0, update_gate=a.update_gate, emit_c=a.emit_c, c_name=a.name,
                 activations=_parse_activations(a.activations), clip=a.clip)
    return 0


def _parse_activations(text: Optional[str]) -> Any:
    """"hard_sigmoid:0.2:0.5,tanh" -> (("hard_sigmoid", 0.2, 0.5), ("tanh",)); None -> None."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise GruliteError(f"--activations takes F,G (two activations, e.g. sigmoid,relu); "
                           f"got {text!r}")
    out = []
    for p in parts:
        name, *params = p.split(":")
        try:
            out.append((name, *(float(v) for v in params)))
        except ValueError:
            raise GruliteError(f"--activations: {p!r}: parameters are numbers "
                               "(name[:alpha[:beta]])") from None
    return tuple(out)


def cmd_info(a: argparse.Namespace) -> int:
    import grulite

    m = grulite.load(a.model)       # validates everything, checksum included
    c = m.config
    if a.json:
        print(json.dumps(dict(config=c.to_dict(), checksum=f"{m.checksum:08x}", bytes=m.nbytes,
                              metadata=m.metadata), indent=2))
        return 0
    print(f"{a.model}: grulite model, {_human(m.nbytes)}")
    print(f"  checksum: ok (CRC-32 {m.checksum:08x}, verified on load)")
    meta = m.metadata
    emb = getattr(c, "embedding", None)
    name = meta.get("embedding") if isinstance(meta.get("embedding"), str) else None
    width = _embedding_width(meta, name) if emb is not None else None
    inputs = (f"input: token ids 0..{_field(emb, 'vocab_size') - 1}" if emb is not None
              else f"input_size {c.input_size}")
    print(f"  {inputs}, {c.num_layers} layer(s), dtype {c.dtype}, "
          f"default layout {'batch-first' if c.batch_first else 'time-major'}")
    if emb is not None:
        table_dtype = _field(emb, "dtype")
        print("  embedding: " + _embedding_line(name, _field(emb, "vocab_size"), width, emb)
              + (f", {table_dtype}" if table_dtype and table_dtype != c.dtype else ""))
    if isinstance(meta.get("vocab"), list):
        print(f"  vocab: {_vocab_line(meta['vocab'])} (grulite generate encodes text with it)")
    for line in _describe_layers(c.layers, width):
        print(line)
    for k, d in enumerate(c.head):
        print(f"  head {k}: {d.in_features} -> {d.out_features}, {d.activation}"
              f"{'' if d.bias else ', no bias'}")
    print(f"  outputs: y width {c.output_size}" + (f", head {c.head_size}" if c.head else ""))
    if meta:
        print("  metadata:")
        for k in sorted(meta):
            v = meta[k]
            text = json.dumps(v) if not isinstance(v, str) else v
            if k == "vocab" and isinstance(v, list):
                text = f"[{len(v)} tokens] " + text
            if len(text) > 200:
                text = text[:197] + "..."
            print(f"    {k}: {text}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    import grulite

    m = grulite.load(a.model)
    try:
        x = np.load(a.input, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise GruliteError(f"{a.input!r} is not a readable .npy array: {e}") from None
    if not isinstance(x, np.ndarray):
        raise GruliteError(f"{a.input!r} must be a .npy array, not an archive")
    if x.dtype.kind != "f":
        raise GruliteError(f"{a.input!r} has dtype {x.dtype}; expected float32 or float64")
    single = x.ndim == 2
    if single:
        x = x[None] if not a.time_major else x[:, None]
    if x.ndim != 3:
        raise GruliteError(f"{a.input!r} has shape {x.shape}; expected (N, steps, input_size) "
                           "or (steps, input_size)")
    if a.time_major:
        x = x.transpose(1, 0, 2)          # view: (N, T, I)
    N, T, I = x.shape
    if I != m.config.input_size:
        raise GruliteError(f"{a.input!r} has {I} features; the model expects {m.config.input_size}")
    lengths = None
    if a.lengths:
        lengths = np.load(a.lengths, allow_pickle=False)
        if lengths.shape != (N,):
            raise GruliteError(f"{a.lengths!r} has shape {lengths.shape}; expected ({N},)")
    what = a.outputs or ("head" if m.config.head else "y")
    if what == "head" and not m.config.head:
        raise GruliteError("--outputs head: the model has no head")
    if what == "head":
        shape = (N, m.config.head_size)
    elif what == "y":
        shape = (N, T, m.config.output_size)
    else:
        raise GruliteError(f"--outputs {what}: expected head or y")
    if single:
        shape = shape[1:]
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(a.output) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(a.output)))
    os.close(fd)                       # a fresh regular file of ours, not a planted link
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
    view = out[None] if single else out
    bs = max(1, a.batch_size)
    t0 = last = time.perf_counter()
    show = not a.quiet
    try:
        for i in range(0, N, bs):
            xb = np.asarray(x[i:i + bs])
            lb = None if lengths is None else lengths[i:i + bs]
            if lb is None and m.mask_value is not None:
                # lengths from the mask value (Keras' Masking), rows named in the whole file
                xb = np.require(xb, np.float32, ["C", "A"])
                lb = m._masked(xb, True, first_row=i)
            if what == "head":
                view[i:i + bs] = m.predict(xb, lb, batch_first=True)
            else:
                view[i:i + bs] = m(xb, lengths=lb, batch_first=True)[0]
            now = time.perf_counter()
            if show and now - last > 1.0:
                done = min(N, i + bs)
                print(f"\r  {done:,}/{N:,} sequences ({100 * done / N:.0f}%), "
                      f"{done / (now - t0):,.0f} seq/s", end="", file=sys.stderr, flush=True)
                last = now
        out.flush()
        del view, out
        os.replace(tmp, a.output)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    dt = time.perf_counter() - t0
    if show:
        print(f"\r  {N:,} sequences of {T} steps in {dt:.2f} s ({N / max(dt, 1e-9):,.0f} seq/s); "
              f"wrote {what} {shape} to {a.output}", file=sys.stderr)
    return 0


def _time(fn, repeat: int, min_time: float = 0.2) -> list:
    fn()                                     # warm-up
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeat or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 100 * repeat:
            break
    return times


def cmd_bench(a: argparse.Namespace) -> int:
    import grulite

    m = grulite.load(a.model)
    c = m.config
    rng = np.random.default_rng(0)
    B, T = a.batch, a.steps
    x = rng.standard_normal((B, T, c.input_size)).astype(np.float32)
    times = _time(lambda: m(x, batch_first=True), a.repeat)
    best, med = min(times), float(np.median(times))
    print(f"{a.model}: input {c.input_size}, hidden {c.hidden_size}, {c.num_layers} layer(s)"
          f"{', bidirectional' if c.bidirectional else ''}")
    print(f"  whole sequence B={B} T={T}: best {best * 1e3:.3f} ms, median {med * 1e3:.3f} ms "
          f"({len(times)} runs)")
    print(f"  throughput: {B / best:,.0f} sequences/s, {B * T / best:,.0f} steps/s, "
          f"{2.0 * m._core.macs * B * T / best / 1e9:.2f} GFLOP/s")   # the C core's count
    if not c.bidirectional:
        s = m.stream(1)
        xt = x[:1, 0]
        st = _time(lambda: s.step(xt), a.repeat * 10)
        print(f"  streaming step B=1: best {min(st) * 1e6:.1f} us, median "
              f"{float(np.median(st)) * 1e6:.1f} us")
    return 0


def _stored_vocab(m: Any, path: str) -> list:
    """The vocabulary stored in a model (``grulite convert --vocab``)."""
    from grulite._vocab import check_vocab

    vocab = m.metadata.get("vocab")
    if vocab is None:
        raise GruliteError(f"{path} has no vocabulary to turn text into token ids: convert it "
                           "with --vocab vocab.txt (one token per line, in id order)")
    return check_vocab(vocab, what=f"the vocabulary stored in {path}")


def _stop_id(stop: Optional[str], vocab: Sequence[str]) -> Optional[int]:
    """The id of the token --stop names (escapes as in a vocabulary file: \\n, \\s ...)."""
    from grulite._vocab import unescape_token

    if stop is None:
        return None
    token = unescape_token(stop, f"--stop {stop!r}")
    if token not in vocab:
        raise GruliteError(f"--stop {stop!r}: the token {token!r} is not in the vocabulary "
                           f"({len(vocab)} tokens); write a newline as \\n, a space as \\s")
    return list(vocab).index(token)


def generate_text(m: Any, prompts: Sequence[str], vocab: Sequence[str], max_steps: int = 100,
                  stop: Optional[int] = None, sample: bool = False, temperature: float = 1.0,
                  top_k: Optional[int] = None, top_p: Optional[float] = None,
                  seed: Optional[int] = None) -> list:
    """Runs ``m.generate`` on text prompts (one row each, one batch): a list
    of dicts with ``prompt``, ``ids`` (the generated token ids, the stop
    token left out), ``completion`` and ``text`` (prompt and completion)."""
    from grulite._vocab import decode, encode

    rows = []
    for text in prompts:
        try:
            ids = encode(text, vocab)
        except GruliteError as e:
            raise GruliteError(f"prompt {text!r}: {e}") from None
        if not ids:
            raise GruliteError(f"prompt {text!r} has no tokens to start from")
        rows.append(ids)
    out = m.generate(prompt=rows, max_steps=max_steps, stop=stop,
                     strategy="sample" if sample else "greedy", temperature=temperature,
                     top_k=top_k, top_p=top_p, seed=seed)
    result = []
    for text, ids, gen in zip(prompts, rows, out):
        new = [int(t) for t in np.asarray(gen).reshape(-1)]
        result.append(dict(prompt=text, ids=new, completion=decode(new, vocab),
                           text=decode(ids + new, vocab)))
    return result


def cmd_generate(a: argparse.Namespace) -> int:
    import grulite

    if not a.sample:
        given = [flag for flag, v in (("--temperature", a.temperature), ("--top-k", a.top_k),
                                      ("--top-p", a.top_p), ("--seed", a.seed)) if v is not None]
        if given:
            raise GruliteError(f"{', '.join(given)} apply to sampling: add --sample (the default "
                               "is greedy, the most likely token at each step)")
    m = grulite.load(a.model)
    vocab = _stored_vocab(m, a.model)
    rows = generate_text(m, a.prompt, vocab, max_steps=a.max_steps, stop=_stop_id(a.stop, vocab),
                         sample=a.sample, temperature=1.0 if a.temperature is None else a.temperature,
                         top_k=a.top_k, top_p=a.top_p, seed=a.seed)
    if a.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for i, row in enumerate(rows):
        if i:
            print()
        print(row["text"])
    return 0


TEXT_DEMO_MODEL = "zen_charlm.npz"
TEXT_DEMO_VOCAB = "zen_vocab.txt"
TEXT_DEMO_PROMPTS = ("Beautiful is", "Errors should", "Now is")


def _demo_text(a: argparse.Namespace) -> int:
    import grulite

    src = os.path.join(DATA_DIR, TEXT_DEMO_MODEL)
    vocab_path = os.path.join(DATA_DIR, TEXT_DEMO_VOCAB)
    for path in (src, vocab_path):
        if not os.path.exists(path):
            raise GruliteError(f"the generative demo's files are not in this installation "
                               f"({path} is missing)")
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "zen.grl")
        print("Converting the bundled character model (nn.Embedding -> nn.GRU -> nn.Linear, a "
              "PyTorch state_dict saved with np.savez), as `grulite convert zen_charlm.npz "
              "--head fc:softmax --vocab zen_vocab.txt` would:")
        convert_file(src, dst, head="fc:softmax", vocab=vocab_path, notes=False)
        m = grulite.load(dst)
        vocab = _stored_vocab(m, dst)
        stop = vocab.index("\n") if "\n" in vocab else None
        print()
        print("It was trained on the Zen of Python (PEP 20, Tim Peters; `import this`; PSF "
              "license).")
        print("Greedy: the most likely character at each step, to the end of the line "
              "(the prompts run as one batch):")
        print()
        rows = generate_text(m, TEXT_DEMO_PROMPTS, vocab, max_steps=a.max_steps, stop=stop)
        t0 = time.perf_counter()            # timed again, warm (threads started, memory sized)
        generate_text(m, TEXT_DEMO_PROMPTS, vocab, max_steps=a.max_steps, stop=stop)
        dt = time.perf_counter() - t0
        for row in rows:
            print(f"  {row['prompt']}|{row['completion']}")
        n = sum(len(r["ids"]) for r in rows)
        print(f"  (| marks where each prompt ends; {n} characters in {dt * 1e3:.2f} ms)")
        print()
        prompt, temperature, seed = "If the", 0.8, a.seed
        print(f"Sampled: temperature {temperature}, seed {seed} (the same seed gives the same "
              "text), several lines:")
        print()
        rows = generate_text(m, [prompt], vocab, max_steps=3 * a.max_steps, sample=True,
                             temperature=temperature, seed=seed)
        text = rows[0]["text"]
        if "\n" in text:
            text = text[:text.rindex("\n")]      # whole lines only
        for line in text.split("\n"):
            print(f"  {line}")
        del m
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    import grulite

    if a.text:
        return _demo_text(a)
    src = os.path.join(DATA_DIR, "sunspots_gru.npz")
    ev = np.load(os.path.join(DATA_DIR, "sunspots_eval.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "sunspots.grl")
        print("Converting the bundled model (a PyTorch state_dict saved with np.savez), "
              "as `grulite convert sunspots_gru.npz --head fc:none` would:")
        convert_file(src, dst, head="fc:none")
        m = grulite.load(dst)
        x = ev["x"]
        t0 = time.perf_counter()
        pred_std = m.predict(x)[:, 0]
        dt = time.perf_counter() - t0
        del m
    mean, std = float(ev["mean"]), float(ev["std"])
    pred = pred_std * std + mean
    truth, last, years = ev["y_true"], ev["last"], ev["years"]
    print()
    print(f"Yearly sunspot numbers, predicted from the previous {x.shape[1]} years. "
          f"The years {years[0]}-{years[-1]}")
    print("were held out of training (statsmodels' sunspots data set, 1700-2008).")
    print()
    rows = range(len(years)) if a.all else range(max(0, len(years) - 12), len(years))
    print(f"  {'year':>4}  {'truth':>7}  {'grulite':>8}  {'naive':>7}")
    for i in rows:
        print(f"  {years[i]:>4}  {truth[i]:7.1f}  {pred[i]:8.1f}  {last[i]:7.1f}")
    if not a.all:
        print(f"  ... (last 12 of {len(years)} years; --all shows every year)")
    mae = float(np.mean(np.abs(pred - truth)))
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    mae0 = float(np.mean(np.abs(last - truth)))
    rmse0 = float(np.sqrt(np.mean((last - truth) ** 2)))
    print()
    print(f"  held-out MAE   grulite {mae:6.2f}   naive (next year = this year) {mae0:6.2f}")
    print(f"  held-out RMSE  grulite {rmse:6.2f}   naive                         {rmse0:6.2f}")
    diff = float(np.max(np.abs(pred - ev["torch_pred"])))
    print(f"  largest difference from the original PyTorch model's predictions: {diff:.2g}")
    print(f"  {len(years)} sequences in {dt * 1e3:.2f} ms")
    return 0


# ---- parser ---------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from grulite import __version__, _core
    from grulite.importers import describe_formats

    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="grulite", formatter_class=fmt,
        description="grulite: fast GRU inference. Convert PyTorch weights to a .grl file, "
                    "inspect it, run it, time it.",
        epilog="examples:\n  grulite demo\n  grulite convert model.npz -o model.grl --head fc:softmax\n"
               "  grulite info model.grl\n  grulite run model.grl input.npy -o output.npy\n"
               "  grulite bench model.grl\n"
               "  grulite generate charlm.grl --prompt \"Beautiful is\"")
    p.add_argument("--version", action="version", version=f"grulite {__version__}")
    sub = p.add_subparsers(dest="command", metavar="command")

    c = sub.add_parser(
        "convert", formatter_class=fmt,
        help="convert GRU weights (PyTorch, ONNX, Keras) to a .grl model",
        description="Convert GRU weights into a .grl model file: a PyTorch state_dict saved with "
                    "np.savez, torch.save (read without torch) or safetensors (the GRU tensors "
                    "are found under any prefix: gru., rnn., encoder.gru., ...), an ONNX graph or "
                    "a Keras .keras archive.",
        epilog="example:\n"
               "  python -c 'import numpy as np, torch; ...; np.savez(\"model.npz\", "
               "**{k: v.numpy() for k, v in model.state_dict().items()})'\n"
               "  grulite convert model.npz -o model.grl --head fc:softmax")
    c.add_argument("input", help="weights file, by extension: " + describe_formats())
    c.add_argument("-o", "--output", help="output .grl file (default: input with .grl)")
    c.add_argument("--prefix", help="module path of the GRU when the file holds several "
                                    "(e.g. encoder.gru)")
    c.add_argument("--head", help="Linear layers applied to the last step, with activations: "
                                  "fc:softmax or fc1:relu,fc2:none")
    c.add_argument("--head-from", choices=["output", "state"], default="output",
                   help="what the head reads: the top layer's output at the last step (default, "
                        "fc(y[:, -1])) or its final states, directions concatenated "
                        "(fc(cat(h_n[-2], h_n[-1])))")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--reset-after", dest="reset_after", action="store_true", default=True,
                   help="PyTorch's GRU variant (default)")
    g.add_argument("--reset-before", dest="reset_after", action="store_false",
                   help="the original GRU variant (Keras reset_after=False, ONNX "
                        "linear_before_reset=0)")
    c.add_argument("--dtype", default="auto", choices=["auto", *_core.DTYPES],
                   help="GRU weight storage: auto (default: the source's float16 or bfloat16 "
                        "when every GRU weight matrix is stored in it, bit for bit; else "
                        "float32), float32 (exact), float16 or bfloat16 (half the size), "
                        "int8 (a quarter, per-row scales); activations stay float32")
    c.add_argument("--time-major", action="store_true",
                   help="record (steps, batch, features) as the default input layout "
                        "(nn.GRU batch_first=False)")
    e = c.add_mutually_exclusive_group()
    e.add_argument("--embedding", metavar="NAME",
                   help="the nn.Embedding feeding the GRU (e.g. decoder.embedding); by default "
                        "one named like emb / embed / embedding of the GRU's input width is found")
    e.add_argument("--no-embedding", action="store_true",
                   help="no embedding: the model takes float vectors")
    c.add_argument("--fold-embedding", choices=list(_FOLD), default="auto",
                   help="fold the embedding into layer 0's input projection: auto (when the "
                        "folded table is no bigger; default), yes, no")
    c.add_argument("--vocab", metavar="FILE",
                   help="vocabulary stored in the model for grulite generate: one token per "
                        "line in id order (escapes \\n \\t \\r \\s \\\\)")
    c.add_argument("--h0", metavar="KEY",
                   help="a learned initial state (an nn.Parameter of shape (L*D, H) or "
                        "(L*D, 1, H)) stored in the model, used when a call gives no h0")
    c.add_argument("--emit-c", metavar="FILE.c",
                   help="also (or, without -o, only) write the model as C source: a 64-byte "
                        "aligned const array for grulite_model_load_buffer (no file system needed)")
    c.add_argument("--name", default="grulite_model",
                   help="the C array's name with --emit-c (default grulite_model; NAME_size holds "
                        "its size)")
    c.add_argument("--activations", metavar="F,G",
                   help="the gate activation f (r, z) and candidate activation g (n) of every "
                        "layer, e.g. sigmoid,relu or hard_sigmoid:0.2:0.5,tanh (name[:alpha"
                        "[:beta]]; docs/variants.md); default sigmoid,tanh")
    c.add_argument("--clip", type=float, metavar="C",
                   help="bound every gate pre-activation to [-C, C] (ONNX's clip)")
    c.add_argument("--update-gate", choices=("torch", "seed"), default="torch",
                   help="torch: h' = (1 - z)*n + z*h (default); seed: the weights were written "
                        "for h' = (1 - z)*h + z*n, mapped at conversion")
    c.set_defaults(fn=cmd_convert)

    i = sub.add_parser("info", formatter_class=fmt, help="show a model's configuration",
                       description="Validate a .grl file (checksum included) and show its "
                                   "configuration, sizes and metadata.",
                       epilog="example:\n  grulite info model.grl")
    i.add_argument("model")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(fn=cmd_info)

    r = sub.add_parser(
        "run", formatter_class=fmt, help="run a model over a .npy file of sequences",
        description="Run a model over an input of any size, in batches, without loading it "
                    "all (the input is memory-mapped). Writes the head output (N, head_size) "
                    "for models with a head, else the GRU outputs y (N, steps, D*H).",
        epilog="example:\n  grulite run model.grl input.npy -o output.npy --batch-size 256\n"
               "  (input.npy: float32 (N, steps, input_size) or (steps, input_size))")
    r.add_argument("model")
    r.add_argument("input", help=".npy of shape (N, steps, input_size)")
    r.add_argument("-o", "--output", required=True, help="output .npy")
    r.add_argument("--batch-size", type=int, default=256, help="sequences per call (default 256)")
    r.add_argument("--lengths", help=".npy of N integer lengths for padded sequences (default: "
                   "from the model's mask value, for a Keras model with Masking)")
    r.add_argument("--outputs", choices=["head", "y"],
                   help="what to write (default: head if the model has one, else y)")
    r.add_argument("--time-major", action="store_true",
                   help="input is (steps, N, input_size)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    r.set_defaults(fn=cmd_run)

    b = sub.add_parser("bench", formatter_class=fmt, help="time a model on random input",
                       description="Time whole-sequence calls and streaming steps on random "
                                   "input: latency, throughput and GFLOP/s.",
                       epilog="example:\n  grulite bench model.grl --batch 1 --steps 100")
    b.add_argument("model")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--steps", type=int, default=100)
    b.add_argument("--repeat", type=int, default=20, help="minimum timed runs")
    b.set_defaults(fn=cmd_bench)

    gn = sub.add_parser(
        "generate", formatter_class=fmt, help="generate text with a token model",
        description="Continue text prompts with a model that takes token ids (an embedding) "
                    "and ends in a head over its vocabulary (converted with --vocab): the "
                    "prompt is split into characters (a vocabulary of single characters) or "
                    "words, run, then the model's choice at each step is fed back. Several "
                    "--prompt run as one batch.",
        epilog="example:\n  grulite generate charlm.grl --prompt \"Beautiful is\" --stop '\\n'\n"
               "  grulite generate charlm.grl --prompt \"Now\" --sample --temperature 0.8 "
               "--seed 1")
    gn.add_argument("model")
    gn.add_argument("--prompt", action="append", required=True,
                    help="text to continue (repeat for several rows)")
    gn.add_argument("--max-steps", type=int, default=100,
                    help="tokens to generate at most (default 100)")
    gn.add_argument("--stop", metavar="TOKEN",
                    help="stop a row at this token (not printed); escapes as in a vocabulary "
                         "file: \\n newline, \\s space")
    gn.add_argument("--sample", action="store_true",
                    help="sample from softmax(logits / temperature) instead of taking the most "
                         "likely token (greedy, the default)")
    gn.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    gn.add_argument("--top-k", type=int, help="sample among the K most likely tokens")
    gn.add_argument("--top-p", type=float,
                    help="sample among the most likely tokens whose probabilities sum to P")
    gn.add_argument("--seed", type=int, help="seed: the same seed gives the same text")
    gn.add_argument("--json", action="store_true",
                    help="print JSON: prompt, generated ids, completion and text of each row")
    gn.set_defaults(fn=cmd_generate)

    d = sub.add_parser("demo", formatter_class=fmt,
                       help="run a bundled model end to end (sunspots; --text: a character model)",
                       description="Convert the bundled GRU (trained with PyTorch on the yearly "
                                   "sunspot numbers, tools/train_demo.py), then predict the "
                                   "held-out years and compare with the truth. With --text: "
                                   "convert the bundled character-level language model of the "
                                   "Zen of Python (tools/train_charlm.py) and continue a few "
                                   "prompts, greedily and sampled.",
                       epilog="example:\n  grulite demo --all\n  grulite demo --text")
    d.add_argument("--all", action="store_true", help="print every held-out year")
    d.add_argument("--text", action="store_true",
                   help="the generative demo: a character model continues text")
    d.add_argument("--max-steps", type=int, default=80,
                   help="--text: characters per greedy continuation at most (default 80)")
    d.add_argument("--seed", type=int, default=1, help="--text: the sampling seed (default 1)")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "fn", None):
        parser.print_help()
        return 0
    try:
        return a.fn(a)
    except (GruliteError, OSError) as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
