"""Compiled (numba) loops over text bytes, for the batch twins in `features.text`.

Python code per n-gram or per character is what made a 1,000-item batch slow; numpy
could only replace it with several passes and a global sort. These kernels walk the bytes
once, in machine code. They take and return numpy arrays only, so `features.text` keeps
every decision about what a token is (the tokenisers stay there) and these only count.

`cache=True` stores the machine code next to this file (or in NUMBA_CACHE_DIR): a new
process loads it (~0.8 s with numba's import) instead of compiling again (~8 s for both
kernels, measured once on this 2-core machine).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SPACE = 32
_NUL = 0
_FNV_PRIME = np.uint64(16777619)
_MASK32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def _sort_segment(a: np.ndarray, lo: int, hi: int) -> None:
    # a[lo:hi] sorted in place: insertion sort for a row's usual tens of buckets, else numpy's
    if hi - lo > 64:
        a[lo:hi] = np.sort(a[lo:hi])
        return
    for i in range(lo + 1, hi):
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@njit(cache=True, nogil=True)
def hashed_ngram_csr(
    buf: np.ndarray,
    text_row: np.ndarray,
    n_rows: int,
    hash_dim: int,
    lo: int,
    hi: int,
    table: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashed word n-grams as CSR (indptr, indices, data), rows l2-normalised.

    `buf` holds tokens separated by runs of spaces; a NUL byte ends a text (text k is the
    k-th, its row `text_row[k]`). An n-gram is n consecutive tokens of one text joined by
    single spaces; its bucket is CRC-32 (`table`: the reflected 0xEDB88320 byte table, as
    zlib) of those bytes, mod `hash_dim`. Counts per (row, bucket), then each row divided
    by its l2 norm (sum of squares in ascending bucket order).
    """
    n = buf.shape[0]
    # tokens: start, end, text
    starts = np.empty(n // 2 + 1, dtype=np.int64)
    ends = np.empty(n // 2 + 1, dtype=np.int64)
    texts = np.empty(n // 2 + 1, dtype=np.int64)
    n_tok = 0
    text = 0
    i = 0
    while i < n:
        b = buf[i]
        if b == _NUL:
            text += 1
            i += 1
        elif b == _SPACE:
            i += 1
        else:
            j = i + 1
            while j < n and buf[j] != _SPACE and buf[j] != _NUL:
                j += 1
            starts[n_tok] = i
            ends[n_tok] = j
            texts[n_tok] = text
            n_tok += 1
            i = j
    # n-gram buckets, grouped by row afterwards
    width = hi - lo + 1
    rows = np.empty(n_tok * width, dtype=np.int64)
    buckets = np.empty(n_tok * width, dtype=np.int64)
    m = 0
    for t in range(n_tok):
        crc = np.uint32(0xFFFFFFFF)
        for size in range(1, hi + 1):
            last = t + size - 1
            if last >= n_tok or texts[last] != texts[t]:
                break
            if size > 1:
                crc = table[(crc ^ np.uint32(_SPACE)) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
            for p in range(starts[last], ends[last]):
                crc = table[(crc ^ np.uint32(buf[p])) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
            if size >= lo:
                rows[m] = text_row[texts[t]]
                buckets[m] = np.int64(crc ^ np.uint32(0xFFFFFFFF)) % hash_dim
                m += 1
    return _rows_to_csr(rows, buckets, m, n_rows)


@njit(cache=True, nogil=True)
def _rows_to_csr(
    rows: np.ndarray, buckets: np.ndarray, m: int, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # (row, bucket) pairs -> CSR counts per (row, bucket), each row l2-normalised
    # counting sort by row, then each row's buckets sorted and run-length counted
    per_row = np.zeros(n_rows + 1, dtype=np.int64)
    for k in range(m):
        per_row[rows[k] + 1] += 1
    for r in range(n_rows):
        per_row[r + 1] += per_row[r]
    fill = per_row[:-1].copy()
    grouped = np.empty(m, dtype=np.int64)
    for k in range(m):
        r = rows[k]
        grouped[fill[r]] = buckets[k]
        fill[r] += 1
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    indices = np.empty(m, dtype=np.int32)
    data = np.empty(m, dtype=np.float64)
    out = 0
    for r in range(n_rows):
        a, b = per_row[r], per_row[r + 1]
        _sort_segment(grouped, a, b)
        first = out
        sq = 0.0
        k = a
        while k < b:
            v = grouped[k]
            c = 1
            while k + c < b and grouped[k + c] == v:
                c += 1
            indices[out] = v
            data[out] = c
            sq += float(c) * float(c)
            out += 1
            k += c
        if out > first:
            norm = np.sqrt(sq)
            for q in range(first, out):
                data[q] = data[q] / norm
        indptr[r + 1] = out
    return indptr, indices[:out], data[:out]


@njit(cache=True, nogil=True)
def hashed_char_ngram_csr(
    buf: np.ndarray, text_row: np.ndarray, n_rows: int, hash_dim: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashed character n-grams as CSR (indptr, indices, data), rows l2-normalised.

    `buf` holds code points (uint32); a 0 ends a text (text k is the k-th, its row
    `text_row[k]`). An n-gram is n consecutive code points of one text (never across two);
    its bucket is the 32-bit FNV-1a hash of its code points (each mixed in as one value,
    then the length n) mod `hash_dim`. Counts per (row, bucket), each row divided by its
    l2 norm, as `hashed_ngram_csr`. The caller normalises the text (see
    `features.text.char_text`).
    """
    n = buf.shape[0]
    width = hi - lo + 1
    rows = np.empty(max(n * width, 1), dtype=np.int64)
    buckets = np.empty(max(n * width, 1), dtype=np.int64)
    m = 0
    text = 0
    i = 0
    while i < n:
        if buf[i] == 0:
            text += 1
            i += 1
            continue
        j = i
        while j < n and buf[j] != 0:
            j += 1
        row = text_row[text]
        for s in range(i, j):
            # 32-bit arithmetic in uint64 with a mask: numba widens small integer products
            h = np.uint64(2166136261)
            for size in range(1, hi + 1):
                e = s + size - 1
                if e >= j:
                    break
                h = ((h ^ np.uint64(buf[e])) * _FNV_PRIME) & _MASK32
                if size >= lo:
                    g = ((h ^ np.uint64(size)) * _FNV_PRIME) & _MASK32
                    rows[m] = row
                    buckets[m] = np.int64(g) % hash_dim
                    m += 1
        i = j
    return _rows_to_csr(rows, buckets, m, n_rows)


@njit(cache=True, nogil=True)
def tfidf_dot_row(
    ind: np.ndarray,
    val: np.ndarray,
    first: int,
    idf: np.ndarray,
    coef: np.ndarray,
    starts: np.ndarray,
) -> float:
    """x . coef for one hashed row, x its TF-IDF l2-normalised per block (a linear text model).

    `ind` (sorted) and `val` are the row's non-zeros; the model covers columns
    [first, first + len(idf)), cut into blocks at `starts` (relative to `first`, ascending,
    the first 0). Columns outside are skipped. The single-item twin of
    `models.bundle.TextModel.features` followed by a dot product, in one pass.
    """
    width = idf.shape[0]
    nb = starts.shape[0]
    z = 0.0
    b = 0
    sq = 0.0
    dot = 0.0
    for k in range(ind.shape[0]):
        j = ind[k] - first
        if j < 0:
            continue
        if j >= width:
            break
        while b + 1 < nb and j >= starts[b + 1]:
            if sq > 0.0:
                z += dot / np.sqrt(sq)
            sq = 0.0
            dot = 0.0
            b += 1
        v = val[k] * idf[j]
        sq += v * v
        dot += v * coef[j]
    if sq > 0.0:
        z += dot / np.sqrt(sq)
    return z


@njit(cache=True, nogil=True)
def dense_linear_row(
    row: np.ndarray,
    num_cols: np.ndarray,
    fill: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    clip: float,
    cat_cols: np.ndarray,
    cat_sizes: np.ndarray,
    cat_offsets: np.ndarray,
    coef: np.ndarray,
) -> float:
    """One row's z of `models.bundle.DenseLinear` (its batch `z`, in one compiled pass):
    numeric features filled where not finite, standardised, clipped to +-clip, times their
    coefficients; plus the coefficient of each known category code."""
    z = 0.0
    for k in range(num_cols.shape[0]):
        v = row[num_cols[k]]
        if not np.isfinite(v):
            v = fill[k]
        s = (v - mean[k]) / scale[k]
        if s > clip:
            s = clip
        elif s < -clip:
            s = -clip
        z += s * coef[k]
    for k in range(cat_cols.shape[0]):
        c = row[cat_cols[k]]
        if np.isfinite(c) and c >= 0 and c < cat_sizes[k]:
            z += coef[cat_offsets[k] + np.int64(c)]
    return z


@njit(cache=True, nogil=True)
def dense_linear_rows(
    x: np.ndarray,
    num_cols: np.ndarray,
    fill: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    clip: float,
    cat_cols: np.ndarray,
    cat_sizes: np.ndarray,
    cat_offsets: np.ndarray,
    coef: np.ndarray,
) -> np.ndarray:
    """`dense_linear_row` of every row of x (bit for bit the same numbers)."""
    out = np.empty(x.shape[0])
    for r in range(x.shape[0]):
        out[r] = dense_linear_row(
            x[r], num_cols, fill, mean, scale, clip, cat_cols, cat_sizes, cat_offsets, coef
        )
    return out


@njit(cache=True, nogil=True)
def tfidf_probs(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    first: int,
    idf: np.ndarray,
    coef: np.ndarray,
    starts: np.ndarray,
    intercept: float,
    extra: np.ndarray,
) -> np.ndarray:
    """sigmoid(`tfidf_dot_row` + intercept + extra) of every CSR row: one scalar code path
    for a batch and for one row, so both give the same probabilities bit for bit."""
    n = indptr.shape[0] - 1
    out = np.empty(n)
    for r in range(n):
        a, b = indptr[r], indptr[r + 1]
        z = tfidf_dot_row(indices[a:b], data[a:b], first, idf, coef, starts) + intercept
        z += extra[r]
        out[r] = 1.0 / (1.0 + np.exp(-z))
    return out


# Columns of `ascii_text_counts`, in order.
ASCII_COUNT_NAMES: tuple[str, ...] = (
    "n_words",  # str.split() words
    "n_tok",  # word tokens: maximal [A-Za-z0-9_] runs
    "letters",
    "upper",
    "digits",
    "punct",
    "exclaims",
    "hashtags",  # "#" followed by a word character
    "mentions",  # "@" followed by a word character
    "max_run",  # longest run of one repeated byte
    "distinct",  # distinct lowercased tokens
    "spam",  # tokens that are one of the lexicon's words
    "phrase_first",  # 1 if some token is the first word of a spam phrase
    "url_mark",  # 1 if the text holds "://", "w." or "W." (a URL is possible)
)

# Byte classes of `ascii_text_counts`'s `classes` table (bit flags).
CLS_SPACE, CLS_WORD, CLS_LETTER, CLS_UPPER, CLS_DIGIT, CLS_PUNCT = 1, 2, 4, 8, 16, 32


@njit(cache=True, nogil=True)
def _token_in(
    buf: np.ndarray, lower: np.ndarray, s: int, e: int, words: np.ndarray, offsets: np.ndarray
) -> bool:
    # is the lowercased token buf[s:e] one of `words` (concatenated, cut by `offsets`)?
    n = e - s
    for w in range(offsets.shape[0] - 1):
        a = offsets[w]
        if offsets[w + 1] - a != n:
            continue
        same = True
        for k in range(n):
            if lower[buf[s + k]] != words[a + k]:
                same = False
                break
        if same:
            return True
    return False


@njit(cache=True, nogil=True)
def _same_token(buf: np.ndarray, lower: np.ndarray, s1: int, e1: int, s2: int, e2: int) -> bool:
    if e1 - s1 != e2 - s2:
        return False
    for k in range(e1 - s1):  # noqa: SIM110 - numba compiles loops, not generator expressions
        if lower[buf[s1 + k]] != lower[buf[s2 + k]]:
            return False
    return True


@njit(cache=True, nogil=True)
def ascii_text_counts(
    buf: np.ndarray,
    first: np.ndarray,
    lengths: np.ndarray,
    classes: np.ndarray,
    lower: np.ndarray,
    spam_words: np.ndarray,
    spam_offsets: np.ndarray,
    phrase_words: np.ndarray,
    phrase_offsets: np.ndarray,
) -> np.ndarray:
    """Per text (ASCII bytes `buf[first[k]:first[k]+lengths[k]]`, none empty) the counts
    named by `ASCII_COUNT_NAMES`, as an (n_texts, 14) int64 array.

    `classes` maps a byte to its CLS_* flags, `lower` to its lowercase; the spam and phrase
    words are lowercase, concatenated, cut by their offsets. Distinct tokens are counted
    exactly: tokens sorted by a 64-bit FNV-1a hash, equal hashes compared byte by byte.
    """
    m = first.shape[0]
    out = np.zeros((m, 14), dtype=np.int64)
    cap = 1
    for k in range(m):
        cap = max(cap, lengths[k] // 2 + 1)
    tok_s = np.empty(cap, dtype=np.int64)
    tok_e = np.empty(cap, dtype=np.int64)
    tok_h = np.empty(cap, dtype=np.uint64)
    for k in range(m):
        a = first[k]
        b = a + lengths[k]
        n_words = n_tok = letters = upper = digits = punct = exclaims = 0
        hashtags = mentions = spam = phrase = url = 0
        run = 0
        best = 0
        prev_space = True
        prev_word = False
        prev = -1
        for i in range(a, b):
            c = buf[i]
            cl = classes[c]
            is_space = (cl & CLS_SPACE) != 0
            is_word = (cl & CLS_WORD) != 0
            if not is_space and prev_space:
                n_words += 1
            if is_word and not prev_word:
                tok_s[n_tok] = i
                n_tok += 1
            if prev_word and not is_word:
                tok_e[n_tok - 1] = i
            if cl & CLS_LETTER:
                letters += 1
            if cl & CLS_UPPER:
                upper += 1
            if cl & CLS_DIGIT:
                digits += 1
            if cl & CLS_PUNCT:
                punct += 1
            if c == 33:  # !
                exclaims += 1
            if (c == 35 or c == 64) and i + 1 < b and (classes[buf[i + 1]] & CLS_WORD) != 0:
                if c == 35:
                    hashtags += 1
                else:
                    mentions += 1
            if c == 58 and i + 2 < b and buf[i + 1] == 47 and buf[i + 2] == 47:  # ://
                url = 1
            if (c | 32) == 119 and i + 1 < b and buf[i + 1] == 46:  # w. or W.
                url = 1
            run = run + 1 if c == prev else 1
            if run > best:
                best = run
            prev = c
            prev_space = is_space
            prev_word = is_word
        if prev_word:
            tok_e[n_tok - 1] = b
        # tokens: spam words, phrase first words, distinct (sorted by hash, ties checked)
        for t in range(n_tok):
            s, e = tok_s[t], tok_e[t]
            h = np.uint64(14695981039346656037)
            for p in range(s, e):
                h = (h ^ np.uint64(lower[buf[p]])) * np.uint64(1099511628211)
            tok_h[t] = h
            if e - s <= 16:
                if _token_in(buf, lower, s, e, spam_words, spam_offsets):
                    spam += 1
                if phrase == 0 and _token_in(buf, lower, s, e, phrase_words, phrase_offsets):
                    phrase = 1
        distinct = 0
        if n_tok:
            order = np.argsort(tok_h[:n_tok])
            run_start = 0
            for q in range(n_tok):
                t = order[q]
                if q == 0 or tok_h[t] != tok_h[order[q - 1]]:
                    run_start = q
                    distinct += 1
                    continue
                # same hash as the run so far: distinct unless equal to one before it
                new = True
                for r in range(run_start, q):
                    u = order[r]
                    if _same_token(buf, lower, tok_s[t], tok_e[t], tok_s[u], tok_e[u]):
                        new = False
                        break
                if new:
                    distinct += 1
        row = out[k]
        row[0] = n_words
        row[1] = n_tok
        row[2] = letters
        row[3] = upper
        row[4] = digits
        row[5] = punct
        row[6] = exclaims
        row[7] = hashtags
        row[8] = mentions
        row[9] = best
        row[10] = distinct
        row[11] = spam
        row[12] = phrase
        row[13] = url
    return out
