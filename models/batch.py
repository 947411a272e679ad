"""Batch scoring of snapshot rows with a ScoringBundle, on pandas or Dask.

The Dask engine maps the very same pandas function over partitions (the bundle is shipped
to the workers once), so both engines give identical scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from models.bundle import ScoringBundle
from models.flags import flag_matrix

ENGINES = ("pandas", "dask")
ID_COLUMNS = ("item_id", "as_of", "anchor", "horizon_h")


def scored_frame(ids: pd.DataFrame, probs: np.ndarray, bundle: ScoringBundle) -> pd.DataFrame:
    """The rows `surfacer score` writes, from the id columns of the scored rows (`item_id`,
    `as_of`, `anchor` and, when known, `horizon_h`) and their probabilities (n, n_issues) in
    `issue_names` order: one probability column per issue, `flagged` (comma-separated issues
    at or above their thresholds, "" when none) and `disabled`.

    The one builder of scored frames: batch scoring (`score_partition`) and the online
    re-scorer's archive (`serving.online.score_rows`) both call it, so the live archive's
    scores and a `surfacer score` file cannot drift apart.

    A disabled issue's column is NaN on every row; `disabled` names the disabled issues
    (comma-separated, "" when none) on every row so that a consumer of the file alone (e.g.
    `surfacer discover`) can tell "disabled" from "not applicable", and the frame's
    `attrs["disabled"]` (kept in Parquet metadata by pandas) says why.
    """
    names = bundle.issue_names
    probs = np.asarray(probs, dtype=np.float64).reshape(len(ids), len(names))
    ids = ids.reset_index(drop=True)
    out = pd.DataFrame(index=ids.index)
    out["item_id"] = ids["item_id"].astype("str")
    out["as_of"] = pd.to_datetime(ids["as_of"], utc=True)
    out["anchor"] = ids["anchor"].astype("str")
    if "horizon_h" in ids.columns:
        out["horizon_h"] = ids["horizon_h"].astype("float64")
    for k, name in enumerate(names):
        out[name] = probs[:, k]
    labels = np.array(names, dtype=object)
    out["flagged"] = pd.Series(
        [",".join(labels[row]) for row in flag_matrix(bundle, probs)], index=out.index, dtype="str"
    )
    out["disabled"] = pd.Series(
        ",".join(n for n in names if n in bundle.disabled), index=out.index, dtype="str"
    )
    out.attrs["disabled"] = dict(bundle.disabled)
    return out


def score_partition(part: pd.DataFrame, bundle: ScoringBundle) -> pd.DataFrame:
    """Score one frame: id columns, one probability column per issue, `flagged` and `disabled`
    (see `scored_frame`). A frame without `as_of` gets NaT, without `anchor` "post"."""
    ids = pd.DataFrame(index=part.index)
    ids["item_id"] = part["item_id"]
    ids["as_of"] = (
        pd.to_datetime(part["as_of"], utc=True)
        if "as_of" in part.columns
        else pd.Series(pd.NaT, index=part.index, dtype="datetime64[ns, UTC]")
    )
    ids["anchor"] = (
        part["anchor"] if "anchor" in part.columns else pd.Series("post", index=part.index)
    )
    if "horizon_h" in part.columns:
        ids["horizon_h"] = part["horizon_h"]
    probs = bundle.score_frame(part)
    return scored_frame(ids, probs[list(bundle.issue_names)].to_numpy(dtype=np.float64), bundle)


def check_shares_inputs(bundle: ScoringBundle, columns: Iterable[object]) -> None:
    """Refuse rows that hold none of the bundle's input columns (item_id aside).

    A column absent at transform time reads as unknown (NaN), which is right for a dataset
    lacking an optional table; rows sharing no input column at all come from another problem
    (a flat spec scored with a raw-table model, or the reverse), and every score on them would
    be the model's prior presented as an answer.
    """
    inputs = [c for c in bundle.input_fields if c != "item_id"]
    present = {str(c) for c in columns}
    if inputs and not any(c in present for c in inputs):
        others = sorted(present - {"item_id", *ID_COLUMNS})
        raise ValueError(
            f"the data holds none of the model's {len(inputs)} input columns "
            f"(e.g. {', '.join(inputs[:5])}), so every score would be a guess; "
            f"the data's columns are {', '.join(others[:8]) or '(none)'}"
            f"{', ...' if len(others) > 8 else ''}: score it with a model trained on this "
            f"kind of data (model issues: {', '.join(bundle.issue_names)})"
        )


def score_dataset(
    bundle: ScoringBundle,
    snapshots: pd.DataFrame,
    engine: Literal["pandas", "dask"] = "pandas",
    *,
    npartitions: int | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score every snapshot row: item_id, as_of, anchor, a probability per issue, flagged,
    disabled (see `score_partition`).

    engine "dask" splits the rows into partitions and scores them in parallel: on the client
    a command has open (common.cluster.dask_client) or the scheduler at `scheduler`, else
    on local threads; the result is the same frame. `progress` reports partitions done on
    a cluster (stderr).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is not one of {list(ENGINES)}")
    if "item_id" not in snapshots.columns:
        raise ValueError(
            f"snapshots need an 'item_id' column; got columns {list(snapshots.columns)[:10]}"
        )
    check_shares_inputs(bundle, snapshots.columns)
    if engine == "pandas" or len(snapshots) == 0:
        return score_partition(snapshots, bundle)
    from common.cluster import current_client, dask_client, gather_with_progress

    n = npartitions or max(1, min(32, len(snapshots) // 20_000 + 1))
    if scheduler or current_client() is not None:
        # Partitions are scattered as data and the bundle is shipped once, rather than
        # embedding the rows in the task graph (which goes through the scheduler).
        rows = snapshots.reset_index(drop=True)
        bounds = np.linspace(0, len(rows), n + 1).astype(int)
        chunks = [rows.iloc[a:b] for a, b in pairwise(bounds) if b > a]
        with dask_client(scheduler) as client:
            [bundle_future] = client.scatter([bundle], broadcast=True, hash=False)
            parts = client.scatter(chunks, hash=False)
            futures = client.map(score_partition, parts, bundle=bundle_future)
            scored = gather_with_progress(
                client, futures, "score (dask)", progress=progress, unit="partition"
            )
        out = pd.concat(scored, ignore_index=True)
        out.attrs["disabled"] = dict(bundle.disabled)
        return out
    import dask.dataframe as dd

    ddf = dd.from_pandas(snapshots.reset_index(drop=True), npartitions=n, sort=False)
    meta = score_partition(snapshots.iloc[:0], bundle)
    scored = ddf.map_partitions(score_partition, bundle, meta=meta)
    result = scored.compute(scheduler="threads").reset_index(drop=True)
    result.attrs["disabled"] = dict(bundle.disabled)
    return result


def score_folder_dask(
    bundle: ScoringBundle,
    folder: str | Path,
    horizons_h: Sequence[float],
    *,
    scheduler: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """`score_dataset` of a dataset folder's snapshots, scored on the Dask workers where
    they are made (`features.snapshot_dask.PartStep`): only the scores come back, so the
    client never holds the snapshot rows (at 1M items some 3M rows and 2 GB). The bundle is
    sent to each worker once. Same frame, in the same order, as scoring the rows of
    `snapshots_from_folder` with either engine.
    """
    from common.cluster import dask_client
    from features.schema import SNAPSHOT_COLUMNS
    from features.snapshot_dask import PartStep, snapshots_from_folder

    check_shares_inputs(bundle, SNAPSHOT_COLUMNS)  # before the (long) snapshot build
    with dask_client(scheduler, announce=progress) as client:
        [model] = client.scatter([bundle], broadcast=True, hash=False)
        scored, _ = snapshots_from_folder(
            folder,
            horizons_h,
            scheduler=scheduler,
            progress=progress,
            step=PartStep(score_partition, {"bundle": model}),
        )
    scored.attrs["disabled"] = dict(bundle.disabled)
    return scored
