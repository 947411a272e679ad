"""Benchmark: surfacer's scorer against strong baselines, per dataset and issue, with intervals.

    uv run python bench/quality.py --quick          # small sizes, 2 drawn worlds (minutes)
    uv run python bench/quality.py                  # the full set (long: run on a quiet machine)
    uv run python bench/quality.py --worlds 8 --sizes 20000 --out /tmp/quality

For each dataset x issue, on the same test rows, surfacer's model (trained by the project's
pipeline, as `surfacer train` would) is compared with the three baselines of
`training.baselines` (logistic regression on tabular features, TF-IDF + logistic regression on
text and tabular features, LightGBM on tabular features). The baselines are fitted on the
rows surfacer saw (train + validation) and scored on its test rows. Reported, each with a
bootstrap interval (resampling items, percentile): PR-AUC, ROC-AUC, F1 at the threshold and
the flagged share. Baselines have no threshold of their own: theirs flags the same share of
the test rows as surfacer's does, so F1 compares at equal review volume.

Datasets: `tiktok_claims` through its flat spec (claim, author_ban), random subsamples of it
(500 and 2,000 rows), the default simulation at `--sizes` items (20k and 100k) and
`--worlds` drawn worlds (simulator.worlds) at `--world-items` (20k). Simulations are cached
under the output folder, keyed by (items, days, world seed), so a rerun only trains.
Any other data joins with `--spec PATH` (a flat TOML spec, under its `name`) and `--data DIR`
(a contract dataset folder, under its declared name or else the folder's), both repeatable;
`--no-tiktok --no-sim` leaves only those:

    uv run python bench/quality.py --no-tiktok --no-sim --spec /tmp/flat/sms_spam.toml

Prints one table row per dataset x issue x scorer, the worst and mean ratio of surfacer's
PR-AUC to the best baseline's, and PASS/FAIL for the targets of issue #10:
- worst ratio >= 0.98, mean ratio >= 1.0;
- surfacer's PR-AUC >= the best baseline's minus that baseline's interval half-width, on
  every dataset x issue;
- no enabled issue whose ROC-AUC interval includes 0.5;
- no issue flagging more than the cap (share of all its test rows);
- the default simulation's harmful_interactions PR-AUC >= 0.8 of the latent-state oracle.
An issue the bundle marks disabled is reported as disabled (with its reason), not scored.
Writes `quality.csv` (every row) and `quality.json` (rows, summary, targets) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Run as `python bench/quality.py`, this folder comes first on sys.path and bench/features.py
# would shadow the features package: put the project root there instead.
_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_ROOT))

from common.settings import get_settings  # noqa: E402
from simulator.config import SimConfig  # noqa: E402
from simulator.core import simulate, write_simulation  # noqa: E402
from simulator.worlds import draw_world  # noqa: E402
from training.baselines import BASELINES, baseline_scores  # noqa: E402
from training.data import TrainingData, load_training_data  # noqa: E402
from training.evaluate import label_column  # noqa: E402
from training.fit import BoosterParams  # noqa: E402
from training.pipeline import _anchor_mask, _split, fit_and_evaluate  # noqa: E402

SPEC = _ROOT / "features" / "specs" / "tiktok_claims.toml"
SURFACER = "surfacer"
SCORERS = (SURFACER, *BASELINES)
METRICS = ("pr_auc", "roc_auc", "f1", "flagged")
DEFAULT_CAP = 0.20  # largest share of an issue's rows it may flag (issue #10: "such as 20%")
ORACLE_SHARE = 0.8
WORST_RATIO, MEAN_RATIO = 0.98, 1.0
SUBSAMPLES = (500, 2000)  # rows of the tiktok_claims subsamples


# --------------------------------------------------------------------------- bootstrap


def _weighted_curves(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per distinct score (descending): weighted cumulative true and false positives.

    `w` is (B, n): one row of row weights per bootstrap resample (all ones = the sample).
    """
    order = np.argsort(-p, kind="stable")
    ps, ys, ws = p[order], y[order], w[:, order]
    ends = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]  # last row of each tie
    tp = np.cumsum(ws * ys, axis=1)[:, ends]
    fp = np.cumsum(ws * (1 - ys), axis=1)[:, ends]
    return tp, fp


def weighted_metrics(
    y: np.ndarray, p: np.ndarray, w: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """PR-AUC (average precision), ROC-AUC, F1 and flagged share at `threshold`, per weight row.

    NaN where a resample lacks a class. Average precision is sklearn's step sum, ROC-AUC the
    trapezoid over distinct thresholds (ties count half), both with the weights as counts.
    """
    y = y.astype(float)
    tp, fp = _weighted_curves(y, p, w)
    pos, neg = tp[:, -1], fp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / np.maximum(tp + fp, 1e-12)
        recall = tp / pos[:, None]
        d_recall = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
        ap = np.sum(d_recall * precision, axis=1)
        tpr = tp / pos[:, None]
        fpr = fp / neg[:, None]
        z = np.zeros((len(w), 1))
        tpr0, fpr0 = np.concatenate([z, tpr], axis=1), np.concatenate([z, fpr], axis=1)
        auc = np.sum(np.diff(fpr0, axis=1) * (tpr0[:, 1:] + tpr0[:, :-1]) / 2, axis=1)
        flag = p >= threshold
        tp_t = w[:, flag] @ y[flag]
        n_flag = w[:, flag].sum(axis=1)
        prec_t = np.where(n_flag > 0, tp_t / np.maximum(n_flag, 1e-12), 0.0)
        rec_t = tp_t / pos
        f1 = np.where(prec_t + rec_t > 0, 2 * prec_t * rec_t / (prec_t + rec_t), 0.0)
        share = n_flag / w.sum(axis=1)
    bad = (pos <= 0) | (neg <= 0)
    for arr in (ap, auc, f1):
        arr[bad] = np.nan
    return {"pr_auc": ap, "roc_auc": auc, "f1": f1, "flagged": share}


def item_weights(items: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(1 + n_boot, n) row weights: the sample itself, then resamples of items (an item's rows
    move together, since its snapshots are not independent)."""
    _, code = np.unique(items.astype(str), return_inverse=True)
    n_items = int(code.max()) + 1 if len(code) else 0
    rng = np.random.default_rng(seed)
    w = np.ones((1 + n_boot, len(items)))
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n_items, n_items), minlength=n_items)
        w[1 + b] = counts[code]
    return w


def volume_threshold(p: np.ndarray, share: float) -> float:
    """The threshold flagging at most `share` of the rows (the top ones): a baseline's F1 is
    taken at surfacer's flagged share, so both are compared at the same review volume. Ties
    at the cut are left out rather than let in (a near-constant scorer flags few, not all)."""
    k = math.floor(share * len(p) + 1e-9)
    if k <= 0:
        return math.inf
    ranked = np.sort(p)[::-1]
    if k >= len(ranked):
        return float(ranked[-1])
    thr = float(ranked[k - 1])
    return thr if ranked[k] < thr else float(np.nextafter(thr, np.inf))


def summarize(values: np.ndarray) -> tuple[float, float, float]:
    """(point, low, high): the first value is the sample's, the rest the resamples' 2.5-97.5%."""
    point, rest = float(values[0]), values[1:]
    rest = rest[np.isfinite(rest)]
    if not len(rest):
        return point, math.nan, math.nan
    lo, hi = np.percentile(rest, [2.5, 97.5])
    return point, float(lo), float(hi)


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    name: str
    path: Path
    simulated: bool
    default_world: bool


def given_datasets(specs: list[Path], folders: list[Path]) -> list[Dataset]:
    """The datasets named on the command line (`--spec`, `--data`), checked before any run.

    Raises ValueError naming the option and path when a spec is missing or unreadable, its
    data file is missing, a folder is no dataset folder, or two datasets share a name.
    """
    from features.flat import load_spec
    from features.io import dataset_files, dataset_name

    out: list[Dataset] = []
    for path in specs:
        try:
            spec = load_spec(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--spec {path}: {exc}") from None
        if not spec.path.is_file():
            raise ValueError(f"--spec {path}: its data file {str(spec.path)!r} does not exist")
        out.append(Dataset(spec.name, path, False, False))
    for folder in folders:
        try:
            tables = dataset_files(folder)
            name = dataset_name(folder) or Path(folder).resolve().name
        except (OSError, ValueError) as exc:
            raise ValueError(f"--data {folder}: {exc}") from None
        if "items" not in tables:
            raise ValueError(f"--data {folder}: no items table; expected a dataset folder")
        out.append(Dataset(name, folder, False, False))
    names = [d.name for d in out]
    built_in = {"tiktok_claims", *(f"tiktok_claims_{rows}" for rows in SUBSAMPLES)}
    twice = sorted({n for n in names if names.count(n) > 1} | (built_in & set(names)))
    if twice:
        raise ValueError(
            f"dataset name(s) {twice} given twice or taken by a built-in dataset; "
            "rename one (a spec's `name`, a folder's dataset.json)"
        )
    return out


def subsample_spec(rows: int, seed: int, workdir: Path) -> Path:
    """A copy of the tiktok spec pointing at a random `rows`-row sample of its CSV."""
    text = SPEC.read_text(encoding="utf-8")
    source = re.search(r'^path\s*=\s*"([^"]+)"', text, flags=re.M)
    if source is None:
        raise ValueError(f"{SPEC}: no path = line")
    csv = (SPEC.parent / source.group(1)).resolve()
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    sample = frame.sample(n=min(rows, len(frame)), random_state=seed).sort_index()
    folder = workdir / f"tiktok_claims_{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    sample.to_csv(folder / "data.csv", index=False)
    text = re.sub(r"^path\s*=.*$", f'path = "{(folder / "data.csv").as_posix()}"', text, flags=re.M)
    text = re.sub(r"^name\s*=.*$", f'name = "tiktok_claims_{rows}"', text, count=1, flags=re.M)
    spec = folder / "spec.toml"
    spec.write_text(text, encoding="utf-8")
    return spec


def simulated(cache: Path, items: int, days: int, world: int | None, log) -> Path:
    """A cached simulation folder (simulated and written on the first call)."""
    key = f"sim-{'default' if world is None else f'world{world}'}-{items}-d{days}"
    folder = cache / key
    if (folder / "simulation.json").is_file() and (folder / "items.parquet").is_file():
        return folder
    t0 = time.perf_counter()
    if world is None:
        config = SimConfig(n_items=items, days=days, seed=0)
    else:
        config = draw_world(world).config(n_items=items, days=days, seed=0)
    write_simulation(simulate(config), folder, overwrite=True)
    log(f"simulated {key} in {time.perf_counter() - t0:.0f}s")
    return folder


def datasets(args: argparse.Namespace, cache: Path, log) -> list[Dataset]:
    """The datasets of this run (only those `args.only` selects are built or simulated)."""
    wanted = [w for w in args.only.split(",") if w]

    def keep(name: str, simulated_: bool) -> bool:
        if (args.no_tiktok and not simulated_) or (args.no_sim and simulated_):
            return False
        return not wanted or any(w in name for w in wanted)

    out = [d for d in args.given if not wanted or any(w in d.name for w in wanted)]
    if keep("tiktok_claims", False):
        out.append(Dataset("tiktok_claims", SPEC, False, False))
    for rows in args.subsamples:
        name = f"tiktok_claims_{rows}"
        if keep(name, False):
            out.append(Dataset(name, subsample_spec(rows, args.seed, cache), False, False))
    for n in args.sizes:
        name = f"sim-default-{n}"
        if keep(name, True):
            out.append(Dataset(name, simulated(cache, n, args.days, None, log), True, True))
    for k in range(1, args.worlds + 1):
        name = f"sim-world-{k}-{args.world_items}"
        if keep(name, True):
            path = simulated(cache, args.world_items, args.days, k, log)
            out.append(Dataset(name, path, True, False))
    return out


# --------------------------------------------------------------------------- one dataset


def disabled_issues(bundle: Any) -> dict[str, str]:
    """Issues the bundle ships disabled, with reasons (absent before gates recorded them)."""
    found = getattr(bundle, "disabled", None)
    if found is None:
        found = bundle.metadata.get("disabled") if isinstance(bundle.metadata, dict) else None
    if not found:
        return {}
    if isinstance(found, dict):
        return {str(k): str(v) for k, v in found.items()}
    return {str(k): "disabled" for k in found}


def evaluate_dataset(ds: Dataset, args: argparse.Namespace, log) -> list[dict[str, Any]]:
    """Train surfacer and the baselines on one dataset; one row per issue x scorer."""
    settings = get_settings()
    t0 = time.perf_counter()
    td: TrainingData = load_training_data(ds.path)
    bundle, report = fit_and_evaluate(
        td,
        random_state=args.seed,
        capacity_per_day=int(settings.review_capacity_per_day),
        params=BoosterParams(),
    )
    t_train = time.perf_counter() - t0
    _, split = _split(td, args.seed)
    frame = td.frame
    transform = bundle.transform
    x_all = transform.transform(frame)
    items = frame["item_id"].astype("object").to_numpy()
    disabled = disabled_issues(bundle)
    default_cap = float(getattr(settings, "flag_share_cap", DEFAULT_CAP) or DEFAULT_CAP)
    gate = report.extra.get("gate", {}) if isinstance(report.extra, dict) else {}
    rows: list[dict[str, Any]] = []
    for issue in td.issues:
        name = issue.name
        base = {"dataset": ds.name, "issue": name, "train_s": round(t_train, 1)}
        y_all = frame[label_column(name)].to_numpy(dtype=float)
        anchor = _anchor_mask(frame, issue.anchor)
        labelled = np.isfinite(y_all)
        fit_rows = np.flatnonzero(anchor & (split.train | split.valid) & labelled)
        test_all = np.flatnonzero(anchor & split.test)
        te = np.flatnonzero(anchor & split.test & labelled)
        y = y_all[te].astype(int)
        # the issue's own cap (training.thresholds: the configured cap, raised where known
        # positives are common), as its threshold was chosen under it
        chosen = (gate.get(name) or {}).get("checks", {}).get("threshold") or {}
        cap = float(chosen.get("max_share") or default_cap)
        base.update(n=len(te), positives=int(y.sum()), cap=cap)
        if name in disabled or name not in bundle.issues:
            rows.append({**base, "scorer": SURFACER, "status": "disabled",
                         "note": disabled.get(name, "not in bundle")})  # fmt: skip
            continue
        # surfacer: the bundle's batch path, as batch scoring and the API use it
        p_all = bundle.score_frame(frame.iloc[test_all])[name].to_numpy(dtype=float)
        if np.isnan(p_all).all():
            rows.append({**base, "scorer": SURFACER, "status": "disabled",
                         "note": "null scores"})  # fmt: skip
            continue
        if len(np.unique(y)) < 2:
            rows.append({**base, "scorer": SURFACER, "status": "untestable",
                         "note": f"test rows hold one class ({len(y)} rows, {int(y.sum())} positive)"})  # fmt: skip
            continue
        threshold = float(bundle.issues[name].threshold)
        position = {r: i for i, r in enumerate(test_all)}
        p_surf = p_all[[position[r] for r in te]]
        flagged_all = float(np.nanmean(p_all >= threshold))
        t1 = time.perf_counter()
        scores = baseline_scores(
            frame.iloc[fit_rows],
            x_all[fit_rows],
            y_all[fit_rows].astype(int),
            frame.iloc[te],
            x_all[te],
            text_columns=list(transform.text_columns_),
            categorical=list(transform.categorical_indices_),
            random_state=args.seed,
        )
        t_base = time.perf_counter() - t1
        share = float(np.mean(p_surf >= threshold))
        weights = item_weights(items[te], args.boot, args.seed)
        metrics = report.overall.get(name, {})
        oracle = metrics.get("oracle_state_pr_auc", metrics.get("oracle_pr_auc", math.nan))
        for scorer, p in [(SURFACER, p_surf), *scores.items()]:
            if scorer == SURFACER:
                thr = threshold
            else:
                thr = volume_threshold(np.asarray(p, dtype=float), share)
            values = weighted_metrics(y, np.asarray(p, dtype=float), weights, thr)
            row = {**base, "scorer": scorer, "status": "ok", "baseline_s": round(t_base, 1)}
            for metric in METRICS:
                point, lo, hi = summarize(values[metric])
                row.update({metric: point, f"{metric}_lo": lo, f"{metric}_hi": hi})
            if scorer == SURFACER:
                row.update(
                    threshold=threshold,
                    flagged_all=flagged_all,
                    oracle_pr_auc=oracle,
                    variant=getattr(bundle.issues[name], "variant", ""),
                    selection=" ".join(
                        f"{k.removeprefix('selection_')} {v:.3f}"
                        for k, v in metrics.items()
                        if k.startswith("selection_")
                    ),
                    refit=bool(metrics.get("refit_on_seen", 0.0)),
                )
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- summary


def compare(rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x issue: surfacer vs the best baseline (by PR-AUC)."""
    out = []
    for (ds, issue), g in rows.groupby(["dataset", "issue"], sort=False):
        surf = g[g["scorer"] == SURFACER]
        rec: dict[str, Any] = {"dataset": ds, "issue": issue}
        if surf.empty or surf["status"].iloc[0] != "ok":
            rec["status"] = surf["status"].iloc[0] if not surf.empty else "missing"
            rec["note"] = surf["note"].iloc[0] if not surf.empty and "note" in surf else ""
            out.append(rec)
            continue
        s = surf.iloc[0]
        bases = g[(g["scorer"] != SURFACER) & (g["status"] == "ok") & g["pr_auc"].notna()]
        best = bases.loc[bases["pr_auc"].idxmax()] if len(bases) else None
        rec.update(
            status="ok",
            surfacer_pr_auc=s["pr_auc"],
            surfacer_roc_lo=s["roc_auc_lo"],
            flagged_all=s["flagged_all"],
            cap=s["cap"],
            oracle_pr_auc=s.get("oracle_pr_auc", math.nan),
            variant=s.get("variant", ""),
            selection=s.get("selection", ""),
            refit=s.get("refit", False),
        )
        if best is not None:
            half = (best["pr_auc_hi"] - best["pr_auc_lo"]) / 2
            rec.update(
                best_baseline=best["scorer"],
                best_pr_auc=best["pr_auc"],
                best_half_width=half,
                ratio=s["pr_auc"] / best["pr_auc"] if best["pr_auc"] > 0 else math.nan,
                within_interval=bool(s["pr_auc"] >= best["pr_auc"] - half),
                slack=float(s["pr_auc"] - (best["pr_auc"] - half)),
            )
        out.append(rec)
    return pd.DataFrame(out)


def _where(r: Any) -> str:
    return f"{r['dataset']} {r['issue']}"


def targets(
    cmp: pd.DataFrame, errors: list[dict[str, str]], datasets_: list[Dataset]
) -> list[tuple[str, bool, str]]:
    """(target, passed, detail) per target of issue #10; every detail names the worst
    dataset x issue for that target, whether it passed or not, so a PASS shows its margin."""
    ok = cmp[cmp["status"] == "ok"].reset_index(drop=True) if len(cmp) else cmp
    scored = ok[ok["ratio"].notna()].reset_index(drop=True) if "ratio" in ok else ok.iloc[:0]
    out: list[tuple[str, bool, str]] = []
    err = f"; {len(errors)} dataset(s) failed to train" if errors else ""
    if len(scored):
        worst = scored.loc[scored["ratio"].idxmin()]
        vs = f"vs {worst['best_baseline']} {worst['best_pr_auc']:.3f}"
        out.append(
            (
                f"worst ratio to the best baseline >= {WORST_RATIO}",
                bool(worst["ratio"] >= WORST_RATIO) and not errors,
                f"{worst['ratio']:.3f}, worst {_where(worst)} ({worst['variant']}) {vs}{err}",
            )
        )
        mean = float(scored["ratio"].mean())
        out.append(
            (
                f"mean ratio to the best baseline >= {MEAN_RATIO}",
                mean >= MEAN_RATIO and not errors,
                f"{mean:.3f} over {len(scored)} dataset x issue, worst {_where(worst)} "
                f"{worst['ratio']:.3f}{err}",
            )
        )
        tight = scored.loc[scored["slack"].idxmin()]
        losing = scored[~scored["within_interval"].astype(bool)]
        out.append(
            (
                "surfacer PR-AUC >= best baseline - its half-width on every dataset x issue",
                losing.empty and not errors,
                f"{len(losing)} of {len(scored)} rows below"
                + (": " + ", ".join(_where(r) for _, r in losing.iterrows()) if len(losing) else "")
                + f"; worst {_where(tight)}: {tight['surfacer_pr_auc']:.3f} vs "
                f"{tight['best_pr_auc']:.3f} - {tight['best_half_width']:.3f}{err}",
            )
        )
    else:
        out.append(("ratios to the best baseline", False, f"no dataset x issue was scored{err}"))
    if len(ok):
        noisy = ok[~(ok["surfacer_roc_lo"] > 0.5)]
        low = ok.loc[ok["surfacer_roc_lo"].fillna(-math.inf).idxmin()]
        out.append(
            (
                "no enabled issue with ROC-AUC interval including 0.5",
                noisy.empty,
                f"{len(noisy)} of {len(ok)} enabled rows include 0.5; worst {_where(low)} "
                f"(ROC-AUC lower bound {low['surfacer_roc_lo']:.3f})",
            )
        )
        excess = ok["flagged_all"] - ok["cap"]
        over = ok[excess > 1e-9]
        top = ok.loc[excess.idxmax()]
        out.append(
            (
                "no issue flags more than its cap on the test rows",
                over.empty,
                f"{len(over)} of {len(ok)} enabled rows over"
                + (
                    ": " + ", ".join(
                        f"{_where(r)} {100 * r['flagged_all']:.1f}%" for _, r in over.iterrows()
                    )
                    if len(over)
                    else ""
                )
                + f"; worst {_where(top)} flags {100 * top['flagged_all']:.1f}% of test rows "
                f"(cap {100 * top['cap']:.0f}%)",
            )
        )  # fmt: skip
    default_names = {d.name for d in datasets_ if d.default_world}
    hi = (
        ok[(ok["issue"] == "harmful_interactions") & ok["dataset"].isin(default_names)]
        if len(ok)
        else ok
    )
    if len(hi):
        share = (hi["surfacer_pr_auc"] / hi["oracle_pr_auc"]).reset_index(drop=True)
        hi = hi.reset_index(drop=True)
        w = hi.loc[share.fillna(-math.inf).idxmin()]
        out.append(
            (
                f"default simulation harmful_interactions >= {ORACLE_SHARE} of the latent-state oracle",
                bool((share >= ORACLE_SHARE).all()),
                f"worst {_where(w)}: {share.min():.2f} of the oracle"
                + (f" ({', '.join(f'{d}: {v:.2f}' for d, v in zip(hi['dataset'], share, strict=True))})"
                   if len(hi) > 1 else ""),
            )
        )  # fmt: skip
    return out


def _fmt(row: pd.Series, metric: str) -> str:
    v = row.get(metric, math.nan)
    if v is None or not np.isfinite(v):
        return f"{'-':>21}"
    return f"{v:.3f} [{row[f'{metric}_lo']:.3f},{row[f'{metric}_hi']:.3f}]".rjust(21)


def print_table(rows: pd.DataFrame) -> None:
    head = f"{'dataset':<26}{'issue':<22}{'scorer':<16}{'n':>7}{'pos':>7}" + "".join(
        f"{m:>21}" for m in METRICS
    )
    print(head)
    print("-" * len(head))
    for _, r in rows.iterrows():
        lead = f"{r['dataset']:<26}{r['issue']:<22}{r['scorer']:<16}{int(r.get('n', 0) or 0):>7}{int(r.get('positives', 0) or 0):>7}"
        if r["status"] != "ok":
            print(f"{lead}  {r['status']}: {r.get('note', '')}")
            continue
        print(lead + "".join(_fmt(r, m) for m in METRICS))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path | Dataset):
        return str(value.path if isinstance(value, Dataset) else value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 worlds (smoke run)")
    parser.add_argument(
        "--worlds", type=int, default=None, help="drawn worlds (default 5; quick 2)"
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(v) for v in s.split(",") if v], default=None,
        help="default-simulation sizes in items, comma-separated (default 20000,100000; '' none)",
    )  # fmt: skip
    parser.add_argument("--world-items", type=int, default=None, help="items per drawn world")
    parser.add_argument("--days", type=int, default=None, help="simulated days (default 28)")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data draws and fits")
    parser.add_argument(
        "--out", type=Path, default=_ROOT / ".surfacer" / "bench" / "quality",
        help="folder for quality.csv / quality.json and the simulation cache",
    )  # fmt: skip
    parser.add_argument(
        "--no-tiktok", action="store_true", help="leave out the tiktok_claims datasets"
    )
    parser.add_argument("--no-sim", action="store_true", help="leave out the simulations")
    parser.add_argument(
        "--spec", type=Path, action="append", default=[], metavar="PATH",
        help="a flat dataset spec (.toml) to bench too, under its name (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--data", type=Path, action="append", default=[], metavar="DIR",
        help="a contract dataset folder to bench too, under its declared name (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated substrings: run only datasets whose name has one",
    )
    args = parser.parse_args(argv)
    try:
        args.given = given_datasets(args.spec, args.data)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quick = args.quick
    args.worlds = args.worlds if args.worlds is not None else (2 if quick else 5)
    if args.sizes is None:
        args.sizes = [5000] if quick else [20_000, 100_000]
    args.world_items = args.world_items or (5000 if quick else 20_000)
    args.days = args.days or (21 if quick else 28)
    args.subsamples = list(SUBSAMPLES)
    if min([*args.sizes, args.world_items]) < 50 or args.worlds < 0 or args.boot < 10:
        print(
            "error: sizes and --world-items must be >= 50, --worlds >= 0, --boot >= 10",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    cache.mkdir(exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    all_sets = datasets(args, cache, log)
    if not all_sets:
        print(
            "error: no dataset selected (see --only, --no-tiktok, --no-sim, --spec and --data)",
            file=sys.stderr,
        )
        return 2
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for ds in all_sets:
        t0 = time.perf_counter()
        try:
            found = evaluate_dataset(ds, args, log)
        except Exception as exc:
            errors.append({"dataset": ds.name, "error": f"{type(exc).__name__}: {exc}"})
            log(f"{ds.name}: FAILED {type(exc).__name__}: {exc}")
            log(traceback.format_exc(limit=3))
            continue
        rows.extend(found)
        log(f"{ds.name}: done in {time.perf_counter() - t0:.0f}s")
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "quality.csv", index=False)
    print(f"\nquality: surfacer vs baselines, {args.boot} item bootstrap resamples, 95% intervals")
    if len(table):
        print_table(table)
    for e in errors:
        print(f"{e['dataset']:<26}error: {e['error']}")
    cmp = compare(table) if len(table) else pd.DataFrame(columns=["status"])
    checks = targets(cmp, errors, all_sets)
    ok = cmp[cmp["status"] == "ok"] if len(cmp) else cmp
    if "ratio" in ok and ok["ratio"].notna().any():
        print("\nsurfacer PR-AUC / best baseline PR-AUC per dataset x issue:")
        for r in ok.itertuples():
            print(
                f"  {r.dataset:<26}{r.issue:<22}{r.ratio:>7.3f}  (best: {r.best_baseline} {r.best_pr_auc:.3f} +- {r.best_half_width:.3f})"
                f"  ships {r.variant}{' refit' if r.refit else ''}; selection: {r.selection}"
            )
        worst = ok.loc[ok["ratio"].idxmin()]
        print(
            f"worst: {worst['dataset']} {worst['issue']} ratio {worst['ratio']:.3f}; mean ratio {ok['ratio'].mean():.3f}"
        )
    unscored = cmp[cmp["status"] != "ok"] if len(cmp) else cmp
    for r in unscored.itertuples():
        print(f"{r.status}: {r.dataset} {r.issue}: {getattr(r, 'note', '')}")
    print()
    print("targets (issue #10):")
    for name, passed, detail in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
    print(f"{sum(p for _, p, _ in checks)} of {len(checks)} targets pass")
    payload = {
        "args": {k: _jsonable(v) for k, v in vars(args).items()},
        "rows": json.loads(table.to_json(orient="records")) if len(table) else [],
        "comparison": json.loads(cmp.to_json(orient="records")) if len(cmp) else [],
        "errors": errors,
        "targets": [{"target": n, "pass": p, "detail": d} for n, p, d in checks],
    }
    (args.out / "quality.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out / 'quality.csv'} and {args.out / 'quality.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
