"""Compiled (numba) loops over text bytes, for the batch twins in `features.text`.

Python code per n-gram or per character is what made a 1,000-item batch slow; numpy
could only replace it with several passes and a global sort. These kernels walk the bytes
once, in machine code. They take and return numpy arrays only, so `features.text` keeps
every decision about what a token is (the tokenisers stay there) and these only count.

`cache=True` stores the machine code next to this file (or in NUMBA_CACHE_DIR): a new
process loads it instead of compiling again (~1-2 s per kernel the first time).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SPACE = 32
_NUL = 0


@njit(cache=True, nogil=True)
def _sort_segment(a: np.ndarray, lo: int, hi: int) -> None:  # pragma: no cover - compiled
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
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
