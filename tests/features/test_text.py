"""Text features of one string: known statistics, lexicon hits, deterministic hashed n-grams."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from features.text import TEXT_STAT_NAMES, hashed_ngrams, text_stats, tokens


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
