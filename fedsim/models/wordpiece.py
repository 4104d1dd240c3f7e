"""BERT's uncased WordPiece tokenizer in plain Python.

Devlin et al., "BERT" (NAACL 2019); Wu et al., "Google's neural machine translation
system" (2016) for WordPiece. Two stages, as in Google's ``tokenization.py`` and the
Hugging Face ``BertNormalizer`` + ``BertPreTokenizer`` + ``WordPiece`` pipeline:

1. basic tokenization: drop NUL, U+FFFD and control characters, map whitespace to a
   space, put spaces around CJK ideographs, strip accents (NFD, drop category Mn),
   lower-case, split on whitespace and on punctuation (each punctuation character is
   a token of its own);
2. greedy longest-match-first WordPiece over each word, continuations prefixed by
   ``##``; a word longer than 100 characters, or one that cannot be covered by the
   vocabulary, becomes ``[UNK]``.

Where Google's BasicTokenizer and the Rust ``tokenizers`` library differ, this follows
``tokenizers``: accents are stripped before lower-casing, one character at a time
(``str.lower`` would turn a word-final capital sigma into ``ς``; ``tokenizers`` gives
``σ``), and unassigned code points (category Cn) are kept rather than dropped. Characters
added to Unicode after the tables ``tokenizers`` uses can still be classified differently.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import torch

MAX_CHARS_PER_WORD = 100

# CJK Unified Ideographs and their extensions and compatibility blocks (not Hangul, kana).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    # Cc, Cf, Co, Cs; unassigned code points (Cn) are kept, as the ``tokenizers`` library does
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def basic_tokenize(text: str, do_lower_case: bool = True) -> list[str]:
    """Split ``text`` into words and punctuation marks (BERT's BasicTokenizer).

    Parameters
    ----------
    text : str
        Raw text.
    do_lower_case : bool
        Strip accents and lower-case (the uncased models).

    Returns
    -------
    list of str
        Words and single punctuation characters, in order.
    """
    chars: list[str] = []
    for ch in text:
        if ch in "\x00\ufffd" or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(ch):
            chars.extend((" ", ch, " "))
        else:
            chars.append(ch)
    cleaned = "".join(chars)
    if do_lower_case:
        decomposed = unicodedata.normalize("NFD", cleaned)
        cleaned = "".join(c.lower() for c in decomposed if unicodedata.category(c) != "Mn")
    words: list[str] = []
    for word in cleaned.split():
        current: list[str] = []
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
    return words


class WordPiece:
    """Uncased BERT tokenizer reading a ``vocab.txt`` (one token per line, id = line number).

    Parameters
    ----------
    vocab_path : str or Path
        The vocabulary file; it must contain ``[PAD]``, ``[UNK]``, ``[CLS]`` and ``[SEP]``.
    do_lower_case : bool
        Strip accents and lower-case before WordPiece (the uncased models).
    """

    def __init__(self, vocab_path: str | Path, do_lower_case: bool = True) -> None:
        lines = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        self.vocab: dict[str, int] = {}
        for index, token in enumerate(lines):
            self.vocab[token.rstrip("\r")] = index
        self.do_lower_case = do_lower_case
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in self.vocab]
        if missing:
            raise ValueError(f"vocabulary {vocab_path} lacks {', '.join(missing)}")
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]

    def __len__(self) -> int:
        return len(self.vocab)

    def _wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one word; ``["[UNK]"]`` when it fails."""
        if len(word) > MAX_CHARS_PER_WORD:
            return ["[UNK]"]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                candidate = word[start:end] if start == 0 else "##" + word[start:end]
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text``, without ``[CLS]`` / ``[SEP]``.

        Parameters
        ----------
        text : str
            Raw text.

        Returns
        -------
        list of str
            Vocabulary tokens (``[UNK]`` for words the vocabulary cannot cover).
        """
        return [p for word in basic_tokenize(text, self.do_lower_case) for p in self._wordpiece(word)]

    def ids(self, text: str, max_length: int | None = None) -> list[int]:
        """``[CLS] tokens [SEP]`` as ids, the tokens truncated to fit ``max_length``.

        Parameters
        ----------
        text : str
            Raw text.
        max_length : int, optional
            Longest result, special tokens included (at least 2); no limit when None.

        Returns
        -------
        list of int
            Token ids.
        """
        body = [self.vocab[t] for t in self.tokenize(text)]
        if max_length is not None:
            if max_length < 2:
                raise ValueError(f"max_length must be at least 2 (for [CLS] and [SEP]), got {max_length}")
            body = body[: max_length - 2]
        return [self.cls_id, *body, self.sep_id]

    def encode(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and attention mask of a batch, right-padded to its longest sequence.

        Parameters
        ----------
        texts : list of str
            The batch (at least one text).
        max_length : int
            Longest sequence, ``[CLS]`` and ``[SEP]`` included; longer ones are truncated.

        Returns
        -------
        ids : torch.Tensor
            ``[B, L]`` int64 token ids, ``[PAD]`` after each sequence's ``[SEP]``.
        mask : torch.Tensor
            ``[B, L]`` int64, 1 on real tokens and 0 on padding.
        """
        if not texts:
            raise ValueError("encode needs at least one text")
        rows = [self.ids(t, max_length) for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask
