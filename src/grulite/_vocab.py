"""Vocabularies: the token strings of a model's ids, their file format, and
text <-> ids.

A vocabulary file holds one token per line, in id order (line 1 is id 0),
UTF-8.  A token is written as is, except for five backslash escapes::

    \\n  newline    \\t  tab    \\r  carriage return    \\s  space    \\\\  backslash

so a character vocabulary can hold the newline, the space and the
backslash.  Empty lines are an error (a token is never empty), as are
unknown escapes; a ``\\r\\n`` line ending is read as ``\\n``.  The writer
escapes every space (a line's trailing space is invisible and editors strip
it); the reader also takes a literal space inside a token.

Text is split into tokens by characters when every token is one character
long, else at whitespace (words).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Union

from grulite._errors import GruliteError

__all__ = ["read_vocab", "write_vocab", "check_vocab", "is_char_vocab", "encode", "decode",
           "escape_token", "unescape_token"]

_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "\\": "\\"}
_ESCAPE = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "\\s"}


def escape_token(token: str) -> str:
    """A token as a line of a vocabulary file writes it."""
    return "".join(_ESCAPE.get(ch, ch) for ch in token)


def unescape_token(text: str, where: str = "token") -> str:
    """The token a line of a vocabulary file (or ``--stop``) stands for:
    ``\\n`` ``\\t`` ``\\r`` ``\\s`` ``\\\\`` decoded; any other backslash is an
    error naming `where`."""
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(text):
            raise GruliteError(f"{where}: a lone backslash at its end; write a backslash as \\\\")
        code = text[i + 1]
        if code not in _UNESCAPE:
            raise GruliteError(f"{where}: unknown escape \\{code}; the escapes are \\n (newline), "
                               "\\t (tab), \\r (carriage return), \\s (space), \\\\ (backslash)")
        out.append(_UNESCAPE[code])
        i += 2
    return "".join(out)


def check_vocab(tokens: Any, size: Union[int, None] = None, what: str = "vocab") -> list:
    """`tokens` as a list of str, checked: non-empty strings, no token
    twice, and `size` of them when given (the embedding's vocabulary)."""
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Iterable):
        raise GruliteError(f"{what} must be a list of token strings (or a vocabulary file's "
                           f"path); got {type(tokens).__name__}")
    out = list(tokens)
    seen: dict = {}
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise GruliteError(f"{what}: token {i} is a {type(t).__name__} ({t!r}); expected a str")
        if not t:
            raise GruliteError(f"{what}: token {i} is empty")
        if t in seen:
            raise GruliteError(f"{what}: token {t!r} appears twice, as ids {seen[t]} and {i}; "
                               "text could not be encoded")
        seen[t] = i
    if not out:
        raise GruliteError(f"{what} has no tokens")
    if size is not None and len(out) != size:
        raise GruliteError(f"{what} has {len(out)} tokens; the embedding has {size} rows "
                           f"(one token per id 0..{size - 1})")
    return out


def read_vocab(path: Union[str, os.PathLike]) -> list:
    """The tokens of a vocabulary file (one per line, in id order; see the
    module docstring for the escapes)."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = raw[:e.start].count(b"\n") + 1
        raise GruliteError(f"vocabulary file {p!r}: line {bad} is not UTF-8 ({e.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()                        # the newline that ends the last line
    if not lines:
        raise GruliteError(f"vocabulary file {p!r} is empty; expected one token per line")
    tokens = []
    for n, line in enumerate(lines, 1):
        if line.endswith("\r"):
            line = line[:-1]               # a CRLF file
        if not line:
            raise GruliteError(f"vocabulary file {p!r}: line {n} is empty; every line is a "
                               "token (write a space as \\s, a newline as \\n)")
        tokens.append(unescape_token(line, f"vocabulary file {p!r}: line {n}"))
    return check_vocab(tokens, what=f"vocabulary file {p!r}")


def write_vocab(path: Union[str, os.PathLike], tokens: Sequence[str]) -> None:
    """Writes `tokens` as a vocabulary file that :func:`read_vocab` reads back."""
    toks = check_vocab(tokens)
    with open(os.fspath(path), "w", encoding="utf-8", newline="\n") as f:
        for t in toks:
            f.write(escape_token(t) + "\n")


def _special(token: str) -> bool:
    """A special token of a character vocabulary: ``<eos>``, ``<pad>``, ..."""
    return len(token) > 2 and token[0] == "<" and token[-1] == ">"


def is_char_vocab(vocab: Sequence[str]) -> bool:
    """True when every token is one character, or a special token in angle
    brackets (``<eos>``, ``<sos>``: seq2seq vocabularies): text splits into
    characters, a special token written out whole counting as one."""
    return all(len(t) == 1 or _special(t) for t in vocab)


def _split_chars(text: str, vocab: Sequence[str]) -> list:
    """Characters, except that a special token of the vocabulary written
    out (``<eos>``) is one piece."""
    specials = sorted((t for t in vocab if _special(t)), key=len, reverse=True)
    pieces, i = [], 0
    while i < len(text):
        hit = next((t for t in specials if text.startswith(t, i)), None) if text[i] == "<" else None
        pieces.append(hit or text[i])
        i += len(hit) if hit else 1
    return pieces


def _quoted(items: Iterable[str], limit: int = 10) -> str:
    items = list(dict.fromkeys(items))             # first occurrences, in order
    shown = ", ".join(repr(s) for s in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def encode(text: str, vocab: Sequence[str]) -> list:
    """Token ids of `text`: one per character for a character vocabulary,
    else one per whitespace-separated word.  Characters or words not in the
    vocabulary raise a GruliteError naming them."""
    if not isinstance(text, str):
        raise GruliteError(f"text must be a str; got {type(text).__name__}")
    index = {t: i for i, t in enumerate(vocab)}
    chars = is_char_vocab(vocab)
    pieces = _split_chars(text, vocab) if chars else text.split()
    missing = [p for p in pieces if p not in index]
    if missing:
        what = "characters" if chars else "words"
        raise GruliteError(f"{what} not in the vocabulary ({len(vocab)} tokens): {_quoted(missing)}")
    return [index[p] for p in pieces]


def decode(ids: Iterable[Any], vocab: Sequence[str]) -> str:
    """The text of token ids: joined with "" for a character vocabulary,
    with " " for words."""
    out = []
    V = len(vocab)
    for i in ids:
        k = int(i)
        if not 0 <= k < V:
            raise GruliteError(f"token id {k} is outside the vocabulary (ids 0..{V - 1})")
        out.append(vocab[k])
    return ("" if is_char_vocab(vocab) else " ").join(out)
