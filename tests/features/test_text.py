"""Text features of one string: known statistics, lexicon hits, deterministic hashed n-grams."""

from __future__ import annotations

import itertools
import math
import os
import re
import string
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.text import (
    EMOJI_PATTERN,
    SPAM_PHRASES,
    SPAM_WORDS,
    TEXT_STAT_NAMES,
    char_text,
    hashed_char_ngrams,
    hashed_char_ngrams_rows,
    hashed_ngrams,
    hashed_ngrams_rows,
    text_stats,
    text_stats_many,
    text_stats_recent,
    tokens,
)


def _stats(text: str | None, **kw: bool) -> dict[str, float]:
    values = text_stats(text, **kw)
    assert len(values) == len(TEXT_STAT_NAMES)
    return dict(zip(TEXT_STAT_NAMES, values, strict=True))


def test_known_statistics_of_a_spammy_caption() -> None:
    text = "WIN 100$ now!!! link in bio https://bit.ly/x #giveaway @bob"
    s = _stats(text)
    assert s["has_text"] == 1.0
    assert s["n_chars"] == len(text)
    assert s["n_words"] == 9
    assert s["n_urls"] == 1
    assert s["n_hashtags"] == 1
    assert s["n_mentions"] == 1
    assert s["n_exclaims"] == 3
    assert s["max_char_run"] == 3  # "!!!"
    letters = sum(c.isalpha() for c in text)
    assert s["upper_ratio"] == 3 / letters  # W, I, N
    assert s["digit_ratio"] == 3 / len(text)
    # ASCII punctuation: $ !!! : / / . / # @
    assert s["punct_ratio"] == 11 / len(text)
    assert s["non_ascii_ratio"] == 0.0
    toks = tokens(text)
    # "win" and "giveaway" from the word lexicon, "link in bio" from the phrases
    assert s["spam_share"] == 3 / len(toks)
    assert s["unique_token_ratio"] == 1.0


def test_emoji_non_ascii_and_runs() -> None:
    s = _stats("sooooo café 😍😍")
    assert s["max_char_run"] == 5  # "ooooo"
    assert s["emoji_ratio"] == 2 / 14
    assert s["non_ascii_ratio"] == 3 / 14  # é and two emoji


def test_null_and_empty_text() -> None:
    absent = _stats(None)
    assert absent["has_text"] == 0.0
    assert all(math.isnan(v) for k, v in absent.items() if k != "has_text")
    assert set(_stats("").values()) == {0.0}
    blank = _stats("   ")
    assert blank["has_text"] == 0.0 and blank["n_chars"] == 3.0 and blank["n_words"] == 0.0


def test_tag_list_counts_every_word_as_a_hashtag() -> None:
    assert _stats("fyp viral cats", tag_list=True)["n_hashtags"] == 3
    assert _stats("fyp viral cats")["n_hashtags"] == 0
    assert _stats("#fyp #viral plain")["n_hashtags"] == 2


def test_hostile_text_does_not_crash() -> None:
    for text in ["\ud800 lone surrogate", "\x00" * 50, "🏳️‍🌈" * 20, "a" * 10_000, "\u202e\u200b"]:
        assert len(text_stats(text)) == len(TEXT_STAT_NAMES)
        hashed_ngrams([text], 1 << 10, (1, 2))


def test_hashed_term_frequencies_are_l2_normalised() -> None:
    idx, val = hashed_ngrams(["x x y"], 1 << 20, (1, 1))
    assert len(idx) == 2 and idx == sorted(idx)
    assert sorted(val) == [1 / math.sqrt(5), 2 / math.sqrt(5)]
    assert math.isclose(sum(v * v for v in val), 1.0)
    assert hashed_ngrams([None, "", "  "], 1 << 10, (1, 2)) == ([], [])


def test_ngrams_never_span_two_texts() -> None:
    idx_joined, _ = hashed_ngrams(["alpha beta"], 1 << 20, (1, 2))
    idx_split, _ = hashed_ngrams(["alpha", "beta"], 1 << 20, (1, 2))
    assert len(idx_joined) == 3  # alpha, beta, "alpha beta"
    assert len(idx_split) == 2
    assert set(idx_split) < set(idx_joined)
    assert len(hashed_ngrams(["alpha beta"], 1 << 20, (2, 2))[0]) == 1


@pytest.mark.parametrize("seed", ["1", "2"])
def test_hash_is_stable_across_processes(seed: str) -> None:
    code = (
        "from features.text import hashed_ngrams;"
        "print(hashed_ngrams(['Free giveaway 東京 #fyp'], 2**18, (1, 2))[0])"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == str(hashed_ngrams(["Free giveaway 東京 #fyp"], 2**18, (1, 2))[0])


def _reference_stats(text: str, tag_list: bool = False) -> tuple[float, ...]:
    """The definitions, written plainly (no fast paths), to check text_stats against."""
    n = len(text)
    if n == 0:
        return (0.0,) * len(TEXT_STAT_NAMES)
    words = text.split()
    letters = [c for c in text if c.isalpha()]
    toks = re.findall(r"\w+", text.lower())
    run, best = 1, 1
    for prev, cur in itertools.pairwise(text):
        run = run + 1 if cur == prev else 1
        best = max(best, run)
    spam = sum(t in SPAM_WORDS for t in toks)
    spam += sum(
        toks[i : i + len(p.split())] == p.split() for p in SPAM_PHRASES for i in range(len(toks))
    )
    return (
        1.0 if words else 0.0,
        float(n),
        float(len(words)),
        float(len(re.findall(r"(?:https?://|www\.)\S+", text, re.IGNORECASE))),
        float(len(words) if tag_list else len(re.findall(r"#\w+", text))),
        float(len(re.findall(r"@\w+", text))),
        float(text.count("!")),
        sum(c.isupper() for c in letters) / len(letters) if letters else 0.0,
        sum(c.isdigit() for c in text) / n,
        sum(c in string.punctuation for c in text) / n,
        sum(ord(c) > 127 for c in text) / n,
        len(re.findall(EMOJI_PATTERN, text)) / n,
        float(best),
        len(set(toks)) / len(toks) if toks else 0.0,
        spam / len(toks) if toks else 0.0,
    )


_words = st.sampled_from(
    ["free", "link", "in", "bio", "WWW.x.io", "http://a.b", "#tag", "@me", "!!!", "😍", "é", "Ab1"]
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
        st.lists(_words, max_size=12).map(" ".join),
        st.text(st.characters(max_codepoint=127), max_size=40),
    ),
    tag_list=st.booleans(),
)
def test_fast_paths_match_the_plain_definitions(text: str, tag_list: bool) -> None:
    assert text_stats(text, tag_list=tag_list) == pytest.approx(
        _reference_stats(text, tag_list), abs=0, rel=1e-12
    )


# Texts mixing ASCII words, punctuation, other scripts, Greek capitals (final sigma), NULs,
# lone surrogates, emoji and whitespace runs: where a batch tokeniser could drift.
_TEXT = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from([*"ab AB_9!#@\x00\t\n.-", "ΣΑ", "東京", "é", "\ud800", "🏳️‍🌈"]), max_size=40
    ).map("".join),
    st.text(max_size=30),
)


def _row_of(indptr: np.ndarray, idx: np.ndarray, val: np.ndarray, i: int):
    return list(idx[indptr[i] : indptr[i + 1]]), list(val[indptr[i] : indptr[i + 1]])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(_TEXT, min_size=0, max_size=3), max_size=8),
    ngram_range=st.sampled_from([(1, 1), (1, 2), (2, 2), (1, 3), (2, 4)]),
    hash_dim=st.sampled_from([1, 7, 1 << 10, 1 << 18]),
)
def test_batch_hashing_equals_the_single_text_hasher_bit_for_bit(
    rows: list[list[str | None]], ngram_range: tuple[int, int], hash_dim: int
) -> None:
    indptr, idx, val = hashed_ngrams_rows(rows, hash_dim, ngram_range)
    assert len(indptr) == len(rows) + 1 and indptr[-1] == len(idx) == len(val)
    for i, row in enumerate(rows):
        assert _row_of(indptr, idx, val, i) == hashed_ngrams(row, hash_dim, ngram_range)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(_TEXT, min_size=0, max_size=3), max_size=8),
    char_range=st.sampled_from([(3, 5), (1, 1), (2, 4)]),
    hash_dim=st.sampled_from([1, 7, 1 << 18]),
)
def test_batch_char_hashing_equals_the_single_item_hasher_bit_for_bit(
    rows: list[list[str | None]], char_range: tuple[int, int], hash_dim: int
) -> None:
    indptr, idx, val = hashed_char_ngrams_rows(rows, hash_dim, char_range)
    assert len(indptr) == len(rows) + 1 and indptr[-1] == len(idx) == len(val)
    for i, row in enumerate(rows):
        assert _row_of(indptr, idx, val, i) == hashed_char_ngrams(row, hash_dim, char_range)


def test_char_ngrams_of_known_texts() -> None:
    assert char_text("  Hi\tTHERE\x00you ") == " hi there you "
    assert char_text(None) == char_text("   ") == ""
    idx, val = hashed_char_ngrams(["ab"], 1 << 20, (3, 5))  # " ab ": 2 trigrams, 1 4-gram
    assert len(idx) == 3 and math.isclose(sum(v * v for v in val), 1.0)
    # case and spacing do not matter; n-grams never span two texts
    assert hashed_char_ngrams(["Free  WIN"], 1 << 20, (3, 5)) == hashed_char_ngrams(
        ["free win"], 1 << 20, (3, 5)
    )
    joined, _ = hashed_char_ngrams(["ab cd"], 1 << 20, (3, 3))
    split, _ = hashed_char_ngrams(["ab", "cd"], 1 << 20, (3, 3))
    assert joined != split
    assert hashed_char_ngrams([None, ""], 1 << 10, (3, 5)) == ([], [])


def test_batch_hashing_of_known_rows() -> None:
    rows = [["!!!"], [None, ""], ["Alpha\x00beta", "é!"], [], ["x x y"]]
    indptr, idx, val = hashed_ngrams_rows(rows, 1 << 20, (1, 2))
    # alpha, beta, "alpha beta", é | x, y, "x x", "x y"
    assert list(np.diff(indptr)) == [0, 0, 4, 0, 4]
    assert _row_of(indptr, idx, val, 4) == hashed_ngrams(["x x y"], 1 << 20, (1, 2))
    assert hashed_ngrams_rows([], 8, (1, 2))[0].tolist() == [0]


def test_batch_hashing_of_long_texts() -> None:
    # Rows with hundreds of n-grams (the kernel sorts those with numpy, short rows by
    # insertion), repeated words (counts above 1) and a non-ASCII text in the same row.
    rng = np.random.default_rng(3)
    words = ["spam", "free", "Été", "naïve", "x", "link", "in", "bio", "42", "über_cool"]
    rows = [
        [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(0, 400, size=3)]
        for _ in range(6)
    ]
    for ngram_range in [(1, 1), (1, 3), (2, 2)]:
        indptr, idx, val = hashed_ngrams_rows(rows, 1 << 12, ngram_range)
        assert max(np.diff(indptr)) > (64 if ngram_range == (1, 3) else 1)
        for i, row in enumerate(rows):
            assert _row_of(indptr, idx, val, i) == hashed_ngrams(row, 1 << 12, ngram_range)


# ASCII-heavy texts with the characters each batch statistic keys on: separators str.split
# knows (\x1c-\x1f), "#"/"@" before and after word characters, runs, URLs, spam phrases.
_ASCII_TEXT = st.lists(
    st.sampled_from(
        [*"aA_9 !#@\t\x1c\x1f.:/wW", "www.", "http://x.io", "link in bio", "FREE", "dm", "é"]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.one_of(st.none(), _ASCII_TEXT, st.text(max_size=20)), max_size=12),
    tag_list=st.booleans(),
)
def test_batch_text_stats_equal_the_scalar_kernel(texts: list[str | None], tag_list: bool) -> None:
    got = text_stats_many(texts, tag_list=tag_list)
    assert got.shape == (len(texts), len(TEXT_STAT_NAMES))
    for row, text in zip(got.tolist(), texts, strict=True):
        want = text_stats(text, tag_list=tag_list)
        assert [("nan" if v != v else v) for v in row] == [
            ("nan" if v != v else v) for v in want
        ], text


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.one_of(_ASCII_TEXT, st.text(max_size=20)), max_size=8), tag_list=st.booleans()
)
def test_cached_text_stats_equal_the_computed_ones(texts: list[str], tag_list: bool) -> None:
    """`text_stats_recent` (the single-record path's cache) answers what `text_stats`
    computes, on the first call (computed) and on a repeat (from the cache), and keeps the
    two tag_list variants of one text apart."""
    for text in [*texts, *texts]:
        want = text_stats(text, tag_list=tag_list)
        for got in (text_stats_recent(text, tag_list), text_stats_recent(text, tag_list)):
            assert [("nan" if v != v else v) for v in got] == [
                ("nan" if v != v else v) for v in want
            ], text
    tagged = text_stats_recent("fyp #fyp", True)
    assert tagged == text_stats("fyp #fyp", tag_list=True)
    assert text_stats_recent("fyp #fyp", False) == text_stats("fyp #fyp", tag_list=False)
