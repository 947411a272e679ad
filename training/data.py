"""Training inputs from a raw dataset folder or a flat dataset spec, in one shape.

A raw folder becomes point-in-time snapshots with `label_<issue>` columns; a flat spec
becomes one row per item with the spec's issues as label columns. Either way the result
carries what training needs next: the issue types, the feature transform to fit, the
segment dimensions to report on, latent truth when the data was simulated, and a
fingerprint of the input bytes (same bytes, same fingerprint: the idempotency key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.schema import DEFAULT_HORIZONS_H
from features.transform import FeatureTransform
from models.issues import DEFAULT_ISSUES, IssueType, flat_issues
from training.evaluate import label_column
from training.labels import attach_labels
from training.split import ItemSample, item_sample

RAW_SEGMENTS: tuple[str, ...] = ("region", "format", "category", "horizon_h")
TRUTH_FILE = "truth.parquet"


@dataclass
class TrainingData:
    """Rows to learn from (features + label_<issue>), and how to treat them."""

    frame: pd.DataFrame
    issues: tuple[IssueType, ...]
    kind: str  # "raw" or "flat"
    transform: FeatureTransform  # unfitted, configured for these columns
    segment_dims: tuple[str, ...]
    truth: pd.DataFrame | None  # item_id + p_<issue>, when the data was simulated
    fingerprint: str
    source: str
    timed: bool  # rows have an as_of: split by time, capacity per day makes sense
    # what loading did to the input (`surfacer train` reports it): rows_read, dropped
    # (reason -> rows), repaired, rows (training rows); see `intake_lines`
    intake: dict[str, Any] = field(default_factory=dict)
    # the dataset's own name (a spec's `name`, a dataset folder's declared name), or None
    name: str | None = None


def fingerprint_files(paths: Sequence[Path]) -> str:
    """SHA-256 over the names and bytes of `paths` (sorted), in 1 MiB chunks."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def load_training_data(
    data: str | Path,
    *,
    horizons_h: Sequence[float] = DEFAULT_HORIZONS_H,
    issues: Sequence[IssueType] | None = None,
    progress: bool = False,
    engine: str = "pandas",
    scheduler: str | None = None,
    max_rows: int = 0,
    random_state: int = 0,
    sample_issues: Sequence[str] | None = None,
) -> TrainingData:
    """A dataset folder (raw tables) or a flat TOML spec -> `TrainingData`.

    `engine="dask"` builds a folder's snapshots on a Dask cluster, the events read by the
    workers (features.snapshot_dask.snapshots_from_folder); a flat spec is read here either way.
    There, past `max_rows` rows, only `sample_rows`'s sample (labels of `sample_issues`, by
    default every issue) comes back from the workers: the client never holds every row.
    Elsewhere every row is loaded and `max_rows` is left to `sample_rows`.
    """
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(
            f"training data {str(path)!r} does not exist; expected a dataset folder or a .toml spec"
        )
    if path.is_dir():
        return _load_raw(
            path,
            horizons_h=horizons_h,
            issues=issues,
            progress=progress,
            engine=engine,
            scheduler=scheduler,
            max_rows=max_rows,
            random_state=random_state,
            sample_issues=sample_issues,
        )
    if path.suffix.lower() == ".toml":
        return _load_flat(path)
    raise ValueError(
        f"training data {str(path)!r} is neither a dataset folder nor a .toml flat dataset spec"
    )


def _load_raw(
    path: Path,
    *,
    horizons_h: Sequence[float],
    issues: Sequence[IssueType] | None,
    progress: bool,
    engine: str = "pandas",
    scheduler: str | None = None,
    max_rows: int = 0,
    random_state: int = 0,
    sample_issues: Sequence[str] | None = None,
) -> TrainingData:
    from features.io import dataset_files, ignored_files, load_dataset, part_files
    from features.snapshot import build_snapshots
    from features.timespan import TimeOutliers, drop_late

    issues = tuple(issues) if issues is not None else DEFAULT_ISSUES
    found: list[TimeOutliers | None] = []  # the rows ignored as the end of data

    def labeled(rows: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        # late rows count for nothing: not for the end of data, not as a label (an appeal)
        label_tables = {n: tables[n] for n in ("labels", "appeals") if n in tables}
        return attach_labels(rows, drop_late(label_tables, found[0] if found else None), issues)

    counted: dict[str, Any] = {}  # of every row, when only a sample comes back
    if engine == "dask":
        from features.snapshot_dask import snapshots_from_folder

        def select(keys: pd.DataFrame, small: Mapping[str, pd.DataFrame]) -> np.ndarray | None:
            # every row's item, instant and anchor, in order: the labels, then the sample
            counted["post"] = _post_rows(keys)
            chosen = [i for i in issues if sample_issues is None or i.name in sample_issues]
            sample = _sample_keep(labeled(keys, small), chosen, max_rows, random_state)
            if sample is None:
                return None
            counted["sampled"] = _sampled(len(keys), sample, max_rows)
            mask = np.zeros(len(keys), dtype=bool)
            mask[sample.rows] = True
            return mask

        # labels come from the small tables (labels, appeals, moderation), not the events
        snaps, tables = snapshots_from_folder(
            path,
            horizons_h,
            scheduler=scheduler,
            progress=progress,
            on_outliers=found.append,
            on_event_rows=lambda n: counted.update(events=n),
            select=select if max_rows > 0 else None,
        )
    else:
        tables = load_dataset(path)
        snaps = build_snapshots(tables, horizons_h, progress=progress, on_outliers=found.append)
    outliers = found[0] if found else None
    frame = labeled(snaps, tables)
    files = [f for table in dataset_files(path).values() for f in part_files(table)]
    post = counted.get("post", _post_rows(frame))
    expected_post = len(tables["items"]) * len(tuple(horizons_h)) if "items" in tables else post
    dropped = {}
    if outliers is not None:
        for table, n in outliers.rows.items():
            dropped[f"{table} rows dated far beyond the rest, {outliers.describe()}"] = n
    if expected_post > post:
        dropped["item horizons whose window ends after the data (not complete yet)"] = (
            expected_post - post
        )
    intake = {
        "rows_read": _rows_read(tables, counted.get("events")),
        "dropped": dropped,
        "repaired": 0,
        "rows": len(frame),
        **({"sampled": counted["sampled"]} if "sampled" in counted else {}),
        "unknown_label_issues": unknown_label_issues(tables.get("labels"), issues),
        "label_conflicts": conflicting_labels(tables.get("labels")),
        "ignored_files": ignored_files(path),
    }
    truth = None
    truth_path = path / TRUTH_FILE
    if truth_path.exists():
        truth = pd.read_parquet(truth_path)
        files.append(truth_path)
    return TrainingData(
        frame=frame,
        issues=issues,
        kind="raw",
        transform=FeatureTransform.for_snapshots(),
        segment_dims=tuple(c for c in RAW_SEGMENTS if c in frame.columns),
        truth=truth,
        fingerprint=fingerprint_files(files),
        source=str(path),
        timed=True,
        intake=intake,
        name=declared_name(path),
    )


def _load_flat(spec_path: Path) -> TrainingData:
    from features.flat import load_flat, load_spec

    spec = load_spec(spec_path)
    ds = load_flat(spec)
    ds.check_usable()
    frame = ds.frame.copy()
    names = list(spec.labels)
    issues = flat_issues(names)
    labels = ds.labels
    for name in names:
        lab = labels.loc[labels["issue"].astype("object") == name, ["item_id", "label"]]
        mapping = pd.Series(
            lab["label"].astype("float64").to_numpy(), index=lab["item_id"].astype("object")
        )
        frame[label_column(name)] = (
            frame["item_id"].astype("object").map(mapping).astype("float64").to_numpy()
        )
    timed = spec.time is not None and "as_of" in frame.columns and frame["as_of"].notna().all()
    transform = FeatureTransform(
        numeric=tuple(spec.numeric),
        categorical=tuple(spec.categorical),
        text=tuple(spec.text),
        min_category_count=5,
    )
    data_path = Path(spec.path)
    if not data_path.is_absolute():
        data_path = (spec_path.parent / data_path).resolve()
    files = [spec_path] + ([data_path] if data_path.exists() else [])
    return TrainingData(
        frame=frame,
        issues=issues,
        kind="flat",
        transform=transform,
        segment_dims=tuple(c for c in spec.categorical if c in frame.columns),
        truth=None,
        fingerprint=fingerprint_files(files),
        source=str(spec_path),
        timed=bool(timed),
        intake={
            "rows_read": {"rows": int(ds.n_source_rows)},
            "dropped": ds.drop_reasons(),
            "dropped_rows": len(ds.dropped),
            "label_rule_misses": ds.rule_misses(),
            "repaired": int(ds.repaired),
            "missing": dict(ds.missing),
            "rows": len(frame),
        },
        name=spec.name,
    )


def sample_rows(td: TrainingData, max_rows: int, random_state: int) -> TrainingData:
    """`td` on a seeded sample of about `max_rows` rows of whole items when it has more
    (`training.split.item_sample`: the same share of the items with a positive label, in
    any issue, as of the others, so every issue keeps its positive rate); `td` itself when
    it has no more rows, `max_rows` is 0 (no limit), or loading already sampled it (the Dask
    engine brings back only the sample, see `load_training_data`).

    What it bounds is training's memory, which grows with its rows (the design matrix and
    each issue's copies of it: about 10 KB a row on the default world), not the data's:
    batch scoring and discovery still read every row. The intake says so (`sampled`).
    """
    if "sampled" in td.intake:
        return td
    sample = _sample_keep(td.frame, td.issues, max_rows, random_state)
    if sample is None:
        return td
    frame = td.frame.iloc[sample.rows].reset_index(drop=True)
    intake = dict(td.intake)
    intake["sampled"] = _sampled(len(td.frame), sample, max_rows)
    intake["rows"] = len(frame)
    return replace(td, frame=frame, intake=intake)


def _sample_keep(
    frame: pd.DataFrame, issues: Sequence[IssueType], max_rows: int, random_state: int
) -> ItemSample | None:
    """`sample_rows`'s sample of the labeled rows `frame`, or None for all of them."""
    if max_rows <= 0 or len(frame) <= max_rows:
        return None
    labels = [label_column(i.name) for i in issues if label_column(i.name) in frame]
    positive = (frame[labels].to_numpy(dtype=float) == 1).any(axis=1).astype(np.int8)
    items = frame["item_id"].astype("object").to_numpy()
    return item_sample(positive, items, max_rows, random_state)


def _sampled(of_rows: int, sample: ItemSample, max_rows: int) -> dict[str, int]:
    """The intake's `sampled` entry: rows and items kept of all, and the bound."""
    return {
        "rows": len(sample.rows),
        "of_rows": of_rows,
        "items": sample.items,
        "of_items": sample.of_items,
        "max_rows": int(max_rows),
    }


def _rows_read(tables: Mapping[str, pd.DataFrame], events: int | None) -> dict[str, int]:
    """Rows read per table, in table order; `events` counts the events read elsewhere (by
    Dask workers: they are not among `tables`)."""
    from features.contract import TABLE_ORDER

    read = {name: len(t) for name, t in tables.items()}
    if events is not None:
        read["events"] = events
    rank = {name: k for k, name in enumerate(TABLE_ORDER)}
    return {n: read[n] for n in sorted(read, key=lambda n: rank.get(n, len(rank)))}


def _post_rows(frame: pd.DataFrame) -> int:
    """Rows anchored at a post horizon (all of them when the frame has no anchor)."""
    if "anchor" not in frame:
        return len(frame)
    return int((frame["anchor"].astype("object") == "post").sum())


def first_label_strata(frame: pd.DataFrame, issues: Sequence[IssueType]) -> np.ndarray:
    """Strata for a stratified split: the first issue's label (missing labels form a stratum)."""
    col = frame[label_column(issues[0].name)].to_numpy(dtype=float)
    return np.where(np.isnan(col), -1, col).astype(int)


def declared_name(path: str | Path) -> str | None:
    """The name a dataset declares for itself, or None when it declares none: a flat spec's
    `name`, a dataset folder's manifest name (`features.io.dataset_name`)."""
    path = Path(path)
    if path.suffix.lower() == ".toml" and path.is_file():
        from features.flat import load_spec

        return load_spec(path).name
    if not path.is_dir():
        return None
    from features.io import dataset_name

    return dataset_name(path)


def unknown_label_issues(
    labels: pd.DataFrame | None, issues: Sequence[IssueType]
) -> dict[str, int]:
    """Rows of the labels table per issue name that is neither trained nor a default issue
    (a typo such as "lowquality" would otherwise leave its labels unused without a word)."""
    if labels is None or not len(labels) or "issue" not in labels.columns:
        return {}
    known = {i.name for i in issues} | {i.name for i in DEFAULT_ISSUES}
    counts = labels["issue"].astype("str").value_counts()
    return {str(k): int(v) for k, v in counts.items() if k not in known}


def conflicting_labels(labels: pd.DataFrame | None) -> dict[str, int]:
    """Label rows per issue whose item, issue and labeled_at also carry the other label
    (read as 1: `features.validate.label_conflicts`)."""
    from features.validate import label_conflicts

    conflicts = label_conflicts(labels)
    if labels is None or not conflicts.any():
        return {}
    counts = labels["issue"].astype("str")[conflicts].value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def intake_lines(intake: dict[str, Any]) -> list[str]:
    """What loading read, dropped (with reasons) and repaired, as report lines."""
    if not intake:
        return []
    read = intake.get("rows_read") or {}
    read_text = (
        f"{read['rows']:,} source rows"
        if set(read) == {"rows"}
        else ", ".join(f"{k} {v:,}" for k, v in read.items())
    )
    dropped = intake.get("dropped") or {}
    n_dropped = intake.get("dropped_rows", sum(dropped.values()))
    lines = [
        f"data: read {read_text}; {intake.get('rows', 0):,} training rows; "
        f"dropped {n_dropped:,}; repaired {intake.get('repaired', 0):,}"
    ]
    lines += [f"  dropped {n:,}: {why}" for why, n in dropped.items()]
    missing = intake.get("missing") or {}
    if missing:
        lines.append(
            "  kept as missing values (blank): "
            + ", ".join(f"{column} {n:,}" for column, n in missing.items())
        )
    sampled = intake.get("sampled")
    if sampled:
        lines.append(
            f"  trained on a sample: {sampled['rows']:,} of {sampled['of_rows']:,} rows "
            f"({sampled['items']:,} of {sampled['of_items']:,} whole items, the positive share "
            f"kept), as the data has more than --max-rows {sampled['max_rows']:,}"
        )
    ignored = intake.get("ignored_files") or []
    if ignored:
        lines.append(f"  not read (no contract table): {', '.join(ignored)}")
    unknown = intake.get("unknown_label_issues") or {}
    if unknown:
        lines.append(
            f"  ignored {sum(unknown.values()):,} labels of issue(s) no model trains: "
            + ", ".join(f"{name!r} ({n:,})" for name, n in unknown.items())
        )
    conflicts = intake.get("label_conflicts") or {}
    if conflicts:
        lines.append(
            f"  {sum(conflicts.values()):,} labels conflict (same item, issue and labeled_at, "
            "both 0 and 1; read as 1): "
            + ", ".join(f"{name} ({n:,})" for name, n in conflicts.items())
        )
    return lines
