"""Text features of one string: dense statistics and hashed word n-grams.

Every function here works on a single Python string (or None) and returns plain Python
values, so the batch path (a loop over a column) and the online path (one record) run the
very same code and cannot drift. Nothing here is learned: the lexicons are fixed, the hash
is deterministic across processes (CRC32, not Python's salted ``hash()``).
"""

from __future__ import annotations

import math
import re
import string
import zlib
from collections.abc import Sequence

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
_ASCII_LETTERS = string.ascii_letters.encode()
_ASCII_UPPER = string.ascii_uppercase.encode()
_ASCII_DIGITS = string.digits.encode()
_ASCII_PUNCT = string.punctuation.encode()
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+")
_PADDED_PHRASES = tuple(f" {p} " for p in SPAM_PHRASES)

_NAN = math.nan
# Null or missing text: nothing is known about it except that there is none.
_ABSENT_STATS: tuple[float, ...] = (0.0,) + (_NAN,) * (len(TEXT_STAT_NAMES) - 1)


def tokens(text: str) -> list[str]:
    """Lowercased word tokens (unicode ``\\w+``); "#tag" yields "tag", URLs split into parts."""
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
    spam = sum(map(SPAM_WORDS.__contains__, toks))
    if n_tok:
        joined = " " + " ".join(toks) + " "
        spam += sum(map(joined.count, _PADDED_PHRASES))
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
        len(set(toks)) / n_tok if n_tok else 0.0,
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
