"""Text features of one string: dense statistics and hashed word n-grams.

The online path (one record) calls the scalar functions, which take a single Python string
(or None) and return plain Python values: `text_stats` and `hashed_ngrams`. The batch path
calls their twins over a whole column, `text_stats_many` and `hashed_ngrams_rows`, which
tokenise here and count in the compiled loops of `features.kernels`; tests hold each twin
equal to its scalar kernel (row for row, bit for bit). Nothing here is learned: the lexicons
are fixed, the hash is deterministic across processes (CRC32, not Python's salted ``hash()``).
"""

from __future__ import annotations

import functools
import math
import re
import string
import zlib
from collections.abc import Sequence

import numpy as np

from features.kernels import (
    ASCII_COUNT_NAMES,
    CLS_DIGIT,
    CLS_LETTER,
    CLS_PUNCT,
    CLS_SPACE,
    CLS_UPPER,
    CLS_WORD,
    ascii_text_counts,
    hashed_char_ngram_csr,
    hashed_ngram_csr,
)

# Dense statistics of one text column, in output order. Counts are raw counts; ratios are
# shares of characters (or of letters / word tokens, see `text_stats`).
TEXT_STAT_NAMES: tuple[str, ...] = (
    "has_text",  # 1 when the text has a non-space character, 0 when empty, null or missing
    "n_chars",
    "n_words",  # whitespace-separated words
    "n_urls",
    "n_hashtags",  # "#tag" occurrences; for a tag-list column, every word is a tag
    "n_mentions",  # "@name" occurrences
    "n_exclaims",
    "upper_ratio",  # uppercase letters / letters
    "digit_ratio",  # digits / characters
    "punct_ratio",  # ASCII punctuation / characters
    "non_ascii_ratio",  # non-ASCII characters / characters (accents, emoji, other scripts)
    "emoji_ratio",  # emoji and pictographs / characters
    "max_char_run",  # longest run of one repeated character ("!!!!!", "soooo")
    "unique_token_ratio",  # distinct word tokens / word tokens (low = repetitive)
    "spam_share",  # spam-lexicon hits / word tokens
)

# A small, fixed lexicon of engagement-bait and spam wording. It is a signal, not a
# classifier, and it is chosen by hand, never from labels, so it cannot leak them.
SPAM_WORDS: frozenset[str] = frozenset(
    {
        "free",
        "giveaway",
        "click",
        "promo",
        "discount",
        "winner",
        "win",
        "prize",
        "dm",
        "subscribe",
        "crypto",
        "followback",
        "f4f",
        "l4l",
        "sub4sub",
        "earn",
        "cash",
        "limited",
    }
)
# Phrases are matched on the lowercased word-token sequence joined by single spaces.
SPAM_PHRASES: tuple[str, ...] = (
    "link in bio",
    "follow for follow",
    "like for like",
    "check my profile",
    "make money",
)

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_HASHTAG = re.compile(r"#\w+")
_MENTION = re.compile(r"@\w+")
# Pictographs, dingbats, flags and arrows/symbols blocks.
EMOJI_PATTERN = (
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\U00002b00-\U00002bff]"
)
_EMOJI = re.compile(EMOJI_PATTERN)
_RUN2 = re.compile(r"(.)\1", re.DOTALL)
_RUN3 = re.compile(r"(.)\1\1+", re.DOTALL)
_TOKEN = re.compile(r"\w+")
_TOKEN_OR_NUL = re.compile(r"\w+|\x00")  # tokens, and the NUL between texts as a marker
# ASCII bytes -> themselves lowercased if a \w character, else a space: on ASCII text, \w+
# is [A-Za-z0-9_]+, so lowercasing + tokenising is a bytes.translate and a split, several
# times faster than the unicode regex. The second table keeps NUL, the batch text marker.
_ASCII_WORD_BYTES = bytes(
    (ord(chr(c).lower()) if chr(c).isalnum() or c == 95 else 32) if c < 128 else 32
    for c in range(256)
)
_ASCII_WORD_OR_NUL_BYTES = b"\x00" + _ASCII_WORD_BYTES[1:]
_ASCII_LETTERS = string.ascii_letters.encode()
_ASCII_UPPER = string.ascii_uppercase.encode()
_ASCII_DIGITS = string.digits.encode()
_ASCII_PUNCT = string.punctuation.encode()
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+")
_PADDED_PHRASES = tuple(f" {p} " for p in SPAM_PHRASES)
_PHRASE_FIRST_WORDS = frozenset(p.split()[0] for p in SPAM_PHRASES)

_NAN = math.nan
# Null or missing text: nothing is known about it except that there is none.
_ABSENT_STATS: tuple[float, ...] = (0.0,) + (_NAN,) * (len(TEXT_STAT_NAMES) - 1)


def _phrase_hits(toks: list[str]) -> int:
    # spam phrases in a token sequence (str.count: non-overlapping, whole words)
    joined = " " + " ".join(toks) + " "
    return sum(map(joined.count, _PADDED_PHRASES))


def tokens(text: str) -> list[str]:
    """Lowercased word tokens (unicode ``\\w+``); "#tag" yields "tag", URLs split into parts."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORD_BYTES).decode("ascii").split()
    return _TOKEN.findall(text.lower())


def text_stats(text: str | None, *, tag_list: bool = False) -> tuple[float, ...]:
    """Dense statistics of one text, in `TEXT_STAT_NAMES` order.

    None means the value is null or missing: ``has_text`` is 0 and every other statistic
    is NaN (unknown, not zero). An empty string gives zeros. ``tag_list`` marks a column of
    space-separated tags written without "#" (the ``hashtags`` column of `items`).
    """
    if text is None:
        return _ABSENT_STATS
    n = len(text)
    words = text.split()
    n_words = len(words)
    if n == 0:
        return (0.0,) + (0.0,) * (len(TEXT_STAT_NAMES) - 1)
    # Character classes by deleting byte classes of the ASCII part in C, several times
    # faster than a per-character Python map; only the non-ASCII characters (usually a
    # handful) are classified one by one. str.isupper etc. agree with A-Z, A-Za-z, 0-9 on
    # ASCII, so this is exactly the per-character definition.
    ascii_bytes = text.encode("ascii", "ignore")
    n_ascii = len(ascii_bytes)
    non_ascii = n - n_ascii
    letters = n_ascii - len(ascii_bytes.translate(None, _ASCII_LETTERS))
    upper = n_ascii - len(ascii_bytes.translate(None, _ASCII_UPPER))
    digits = n_ascii - len(ascii_bytes.translate(None, _ASCII_DIGITS))
    punct = n_ascii - len(ascii_bytes.translate(None, _ASCII_PUNCT))
    if non_ascii:
        others = _ASCII_RUNS.sub("", text)
        letters += sum(map(str.isalpha, others))
        upper += sum(map(str.isupper, others))
        digits += sum(map(str.isdigit, others))
    # Longest run: runs of 3+ are rare, so find those (few match objects) and fall back to
    # a yes/no search for a pair.
    run = 0
    for m in _RUN3.finditer(text):
        run = max(run, m.end() - m.start())
    if not run:
        run = 2 if _RUN2.search(text) else 1
    toks = tokens(text)
    n_tok = len(toks)
    distinct = set(toks)
    # Set checks first: most texts hold no spam word and no phrase's first word.
    spam = 0 if distinct.isdisjoint(SPAM_WORDS) else sum(map(SPAM_WORDS.__contains__, toks))
    if not distinct.isdisjoint(_PHRASE_FIRST_WORDS):
        spam += _phrase_hits(toks)
    return (
        1.0 if n_words else 0.0,
        float(n),
        float(n_words),
        float(len(_URL.findall(text))) if ("://" in text or "w." in text or "W." in text) else 0.0,
        float(n_words if tag_list else len(_HASHTAG.findall(text)) if "#" in text else 0),
        float(len(_MENTION.findall(text))) if "@" in text else 0.0,
        float(text.count("!")),
        upper / letters if letters else 0.0,
        digits / n,
        punct / n,
        non_ascii / n,
        len(_EMOJI.findall(text)) / n if non_ascii else 0.0,
        float(run),
        len(distinct) / n_tok if n_tok else 0.0,
        spam / n_tok if n_tok else 0.0,
    )


def hashed_ngrams(
    texts: Sequence[str | None], hash_dim: int, ngram_range: tuple[int, int]
) -> tuple[list[int], list[float]]:
    """Hashed word n-grams of several texts as one l2-normalised term-frequency vector.

    Returns sorted column indices and their values. n-grams never span two texts (two
    columns). Index = CRC32(utf-8 n-gram) mod hash_dim, so vectors are identical across
    processes and machines. Term frequencies (collisions add up), then the row is scaled
    to unit l2 norm; a row without tokens is empty.
    """
    lo, hi = ngram_range
    counts: dict[int, int] = {}
    crc = zlib.crc32
    for text in texts:
        if not text:
            continue
        toks = tokens(text)
        n_tok = len(toks)
        for size in range(lo, hi + 1):
            for i in range(n_tok - size + 1):
                gram = toks[i] if size == 1 else " ".join(toks[i : i + size])
                j = crc(gram.encode("utf-8", "surrogatepass")) % hash_dim
                counts[j] = counts.get(j, 0) + 1
    if not counts:
        return [], []
    idx = sorted(counts)
    norm = math.sqrt(sum(c * c for c in counts.values()))
    return idx, [counts[j] / norm for j in idx]


def _crc32_table() -> np.ndarray:
    # The reflected CRC-32 (polynomial 0xEDB88320) byte table: what zlib.crc32 computes.
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0xEDB88320), t >> 1).astype(np.uint32)
    return t


_CRC32_TABLE = _crc32_table()


def _nul_joined(texts: list[str]) -> str:
    # Texts joined by " NUL ", the NUL a marker token; a NUL inside a text is a non-word
    # character like a space, so it becomes one and the markers stay unambiguous.
    joined = " \x00 ".join(texts)
    if joined.count("\x00") != len(texts) - 1:
        joined = " \x00 ".join(t.replace("\x00", " ") for t in texts)
    return joined


def hashed_ngrams_rows(
    rows: Sequence[Sequence[str | None]], hash_dim: int, ngram_range: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`hashed_ngrams` of many rows at once, as CSR arrays (indptr, indices, data).

    Row i equals ``hashed_ngrams(rows[i], ...)`` bit for bit (tested): the same tokens, the
    same CRC32 buckets, the same l2 normalisation. Instead of Python work per n-gram, all
    texts are tokenised in one pass over their concatenation (a NUL between texts, kept as a
    marker; a bytes.translate for the ASCII texts, the same regex as `tokens` for the others)
    into one UTF-8 buffer, and the compiled `features.kernels.hashed_ngram_csr` walks it
    once: n-grams (tokens joined by single spaces, never across two texts), their CRC32
    buckets, counts per row and the l2 norm.
    """
    lo, hi = ngram_range
    n_rows = len(rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    no_ngrams = (indptr, np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64))
    # ASCII texts and the others are tokenised apart (a text's place in the buffer does not
    # matter: its n-grams stay inside it and carry its row).
    ascii_texts: list[str] = []
    ascii_rows: list[int] = []
    other_texts: list[str] = []
    other_rows: list[int] = []
    for i, row in enumerate(rows):
        for text in row:
            if text:
                if text.isascii():
                    ascii_texts.append(text)
                    ascii_rows.append(i)
                else:
                    other_texts.append(text)
                    other_rows.append(i)
    parts: list[bytes] = []
    if ascii_texts:
        # the fast ASCII tokeniser of `tokens`, keeping the NUL markers
        parts.append(_nul_joined(ascii_texts).encode("ascii").translate(_ASCII_WORD_OR_NUL_BYTES))
    if other_texts:
        toks = _TOKEN_OR_NUL.findall(_nul_joined(other_texts).lower())
        parts.append(" ".join(toks).encode("utf-8", "surrogatepass"))
    if not parts:
        return no_ngrams
    buf = np.frombuffer(b" \x00 ".join(parts), dtype=np.uint8)
    text_row = np.asarray(ascii_rows + other_rows, dtype=np.int64)
    return hashed_ngram_csr(buf, text_row, n_rows, int(hash_dim), lo, hi, _CRC32_TABLE)


def char_text(text: str | None) -> str:
    """A text as the character n-grams see it: lowercased, whitespace runs (and NULs) as one
    space, one space padding each end so word starts and ends are n-grams of their own;
    "" for null or blank text (no n-grams)."""
    if not text:
        return ""
    words = (text.replace("\x00", " ") if "\x00" in text else text).lower().split()
    return f" {' '.join(words)} " if words else ""


def _code_points(texts: list[str]) -> np.ndarray:
    # texts joined by code point 0 (absent from `char_text` output), as a uint32 array
    joined = "\x00".join(texts)
    return np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def hashed_char_ngrams(
    texts: Sequence[str | None], hash_dim: int, char_range: tuple[int, int]
) -> tuple[list[int], list[float]]:
    """Hashed character n-grams of several texts as one l2-normalised term-frequency vector.

    The single-item twin of `hashed_char_ngrams_rows` (the same compiled kernel on one row):
    n-grams of `char_text` of each text, never across two texts, bucket = FNV-1a of the
    code points mod hash_dim (deterministic across processes).
    """
    kept = [t for t in map(char_text, texts) if t]
    if not kept:
        return [], []
    lo, hi = char_range
    _, idx, val = hashed_char_ngram_csr(
        _code_points(kept), np.zeros(len(kept), dtype=np.int64), 1, int(hash_dim), lo, hi
    )
    return idx.tolist(), val.tolist()


def hashed_char_ngrams_rows(
    rows: Sequence[Sequence[str | None]], hash_dim: int, char_range: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`hashed_char_ngrams` of many rows at once, as CSR arrays (indptr, indices, data);
    row i equals ``hashed_char_ngrams(rows[i], ...)`` (tested)."""
    texts: list[str] = []
    text_row: list[int] = []
    for i, row in enumerate(rows):
        for text in row:
            t = char_text(text)
            if t:
                texts.append(t)
                text_row.append(i)
    if not texts:
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        return indptr, np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)
    lo, hi = char_range
    return hashed_char_ngram_csr(
        _code_points(texts), np.asarray(text_row, dtype=np.int64), len(rows), int(hash_dim), lo, hi
    )


def _byte_classes() -> np.ndarray:
    # the CLS_* flags of every byte, for `ascii_text_counts`
    t = np.zeros(256, dtype=np.uint8)
    for flag, chars in (
        # what str.split() splits ASCII text on (it includes the \x1c-\x1f separators)
        (CLS_SPACE, " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"),
        (CLS_WORD, string.ascii_letters + string.digits + "_"),  # \w on ASCII
        (CLS_LETTER, string.ascii_letters),
        (CLS_UPPER, string.ascii_uppercase),
        (CLS_DIGIT, string.digits),
        (CLS_PUNCT, string.punctuation),
    ):
        t[list(chars.encode("ascii"))] |= flag
    return t


def _word_list(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    # lowercase ASCII words, concatenated, and their offsets (for `ascii_text_counts`)
    data = np.frombuffer("".join(words).encode("ascii"), dtype=np.uint8)
    offsets = np.concatenate(([0], np.cumsum([len(w) for w in words]))).astype(np.int64)
    return data, offsets


_CLASSES = _byte_classes()
_LOWER = np.frombuffer(bytes(range(256)).lower(), dtype=np.uint8)
_SPAM_LIST = _word_list(sorted(SPAM_WORDS))
_PHRASE_FIRST_LIST = _word_list(sorted(_PHRASE_FIRST_WORDS))
_COUNT = {name: j for j, name in enumerate(ASCII_COUNT_NAMES)}


# Distinct texts whose statistics `text_stats_recent` keeps.
TEXT_STATS_CACHE = 16_384


@functools.lru_cache(maxsize=TEXT_STATS_CACHE)
def text_stats_recent(text: str, tag_list: bool) -> tuple[float, ...]:
    """`text_stats(text, tag_list=tag_list)` from a bounded least-recently-used cache.

    The statistics are a pure function of the text and an immutable tuple, so a cached
    answer is the computed one. The single-record path uses it: every read of an item's
    live snapshot (GET score) sees the same caption and hashtags, and the same comment text
    until a comment arrives."""
    return text_stats(text, tag_list=tag_list)


def text_stats_many(texts: Sequence[str | None], *, tag_list: bool = False) -> np.ndarray:
    """`text_stats` of many texts as an (n, len(TEXT_STAT_NAMES)) float array, equal row by
    row (tested): the batch path of the transform.

    Non-empty ASCII texts (the common case) are concatenated and counted in one compiled
    pass over their bytes (`features.kernels.ascii_text_counts`: character classes, words,
    tokens, distinct tokens, hashtags, mentions, runs, spam words); only the rare spam
    phrases and URLs stay per text, on the texts the pass marks. Other texts (None, empty,
    non-ASCII) go through `text_stats` itself.
    """
    n = len(texts)
    out = np.empty((n, len(TEXT_STAT_NAMES)), dtype=np.float64)
    fast: list[int] = []
    for i, text in enumerate(texts):
        if text and text.isascii():
            fast.append(i)
        else:
            out[i] = text_stats(text, tag_list=tag_list)
    if not fast:
        return out
    chosen: list[str] = [texts[i] for i in fast]  # type: ignore[misc]
    buf = np.frombuffer("".join(chosen).encode("ascii"), dtype=np.uint8)
    lengths = np.fromiter(map(len, chosen), dtype=np.int64, count=len(chosen))
    first = np.zeros(len(chosen), dtype=np.int64)
    np.cumsum(lengths[:-1], out=first[1:])
    counts = ascii_text_counts(
        buf, first, lengths, _CLASSES, _LOWER, *_SPAM_LIST, *_PHRASE_FIRST_LIST
    )
    col = counts.T.astype(np.float64)
    c = _COUNT
    n_words, n_tok, spam = col[c["n_words"]], col[c["n_tok"]], col[c["spam"]]
    # Spam phrases, on the texts holding a phrase's first word (as `text_stats` does).
    for k in np.flatnonzero(counts[:, c["phrase_first"]]).tolist():
        spam[k] += _phrase_hits(tokens(chosen[k]))
    urls = np.zeros(len(chosen))
    for k in np.flatnonzero(counts[:, c["url_mark"]]).tolist():
        urls[k] = len(_URL.findall(chosen[k]))
    m = len(chosen)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(m), where=den > 0)

    n_chars = lengths.astype(np.float64)
    zeros = np.zeros(m)
    out[fast] = np.column_stack(
        [
            (n_words > 0).astype(np.float64),  # has_text
            n_chars,
            n_words,
            urls,
            n_words if tag_list else col[c["hashtags"]],
            col[c["mentions"]],
            col[c["exclaims"]],
            ratio(col[c["upper"]], col[c["letters"]]),
            col[c["digits"]] / n_chars,
            col[c["punct"]] / n_chars,
            zeros,  # non_ascii_ratio: ASCII texts only here
            zeros,  # emoji_ratio
            col[c["max_run"]],
            ratio(col[c["distinct"]], n_tok),
            ratio(spam, n_tok),
        ]
    )
    return out
