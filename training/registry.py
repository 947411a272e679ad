"""Model registry: the promotion gate, aliases (`champion`, `challenger`), listing and rollback.

The gate compares a candidate with the current champion on the candidate's own holdout rows:
both bundles re-score the same `test_frame` and are judged against the same labels, so a
champion trained on another window is not flattered (or punished) by its own test split.

Rules (`decide_promotion`):
- a candidate whose every issue is disabled by the quality gate (`training.gate`) is refused:
  it would flag nothing, and replacing a champion with it hides that;
- a candidate whose issue set differs from the champion's is refused: it models another
  problem (another dataset trains its own registered model, see `training.naming`);
- an issue the champion scores but the candidate disables is a regression (refused);
- no champion yet: the first valid candidate (a defined PR-AUC for at least one issue) wins;
- per issue, the candidate's PR-AUC may not drop by more than `tolerance` below the champion's;
- the primary metric (mean PR-AUC over the issues both score, or `primary_issue`'s PR-AUC)
  may not get worse;
- an issue the champion does not score (unknown issue, or it cannot score these rows, e.g.
  different features make its transform fail) counts as an improvement;
- an issue the champion scores but the candidate does not is a regression (rejected);
- a champion that cannot be loaded at all blocks promotion (a transient registry error must
  not silently replace it); `surfacer promote` can still move the alias by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from common.mlflow_store import prepare_mlflow_store
from common.settings import Settings
from training.evaluate import PRIMARY_METRIC, holdout_metrics

if TYPE_CHECKING:
    from models.bundle import ScoringBundle

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_TOLERANCE = 0.02
# Version tag naming the version that held `champion` before this one took it (for rollback).
TAG_PREVIOUS_CHAMPION = "surfacer.previous_champion"
# Run metrics shown by `surfacer models` when present.
KEY_METRIC_SUFFIX = f".{PRIMARY_METRIC}"
# Float noise from re-scoring the same model must not count as "worse".
_EPS = 1e-9


# --- the gate ------------------------------------------------------------------------------


@dataclass
class PromotionDecision:
    """What the gate decided and why; logged to the run as decision.json and tags."""

    promote: bool
    reasons: list[str]
    candidate_version: str | None = None
    champion_version: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    primary: str = f"mean.{PRIMARY_METRIC}"
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    candidate_primary: float | None = None
    champion_primary: float | None = None
    # Whether the champion was evaluated on this very split (None: unknown / no champion).
    same_holdout: bool | None = None
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # JSON has no NaN: undefined metrics become null.
        for key in ("candidate_metrics", "champion_metrics"):
            out[key] = {k: _json_float(v) for k, v in out[key].items()}
        for key in ("candidate_primary", "champion_primary"):
            out[key] = _json_float(out[key])
        return out


def _json_float(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _pr_aucs(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {issue: float(m.get(PRIMARY_METRIC, math.nan)) for issue, m in metrics.items()}


def decide_promotion(
    candidate: ScoringBundle,
    test_frame: pd.DataFrame,
    *,
    champion: ScoringBundle | None,
    champion_version: str | None = None,
    champion_error: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    primary_issue: str | None = None,
) -> PromotionDecision:
    """Decide whether `candidate` takes `champion`, re-scoring both on `test_frame`.

    `champion_error` says the champion alias exists but its bundle could not be loaded.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance {tolerance!r} must be >= 0")
    if primary_issue is not None and primary_issue not in candidate.issue_names:
        raise ValueError(
            f"primary issue {primary_issue!r} is not scored by the candidate "
            f"(issues: {candidate.issue_names})"
        )
    cand = _pr_aucs(holdout_metrics(candidate, test_frame))
    primary_name = (
        f"{primary_issue}.{PRIMARY_METRIC}" if primary_issue else f"mean.{PRIMARY_METRIC}"
    )
    decision = PromotionDecision(
        promote=False,
        reasons=[],
        champion_version=champion_version,
        tolerance=tolerance,
        primary=primary_name,
        candidate_metrics=cand,
    )
    reasons = decision.reasons
    disabled = dict(getattr(candidate, "disabled", None) or {})
    if candidate.issue_names and all(i in disabled for i in candidate.issue_names):
        reasons.append(
            "no issue passed the quality gate, every issue is disabled ("
            + "; ".join(f"{i}: {why}" for i, why in disabled.items())
            + "); a model that flags nothing does not replace the champion"
        )
        return decision
    if not any(math.isfinite(v) for v in cand.values()):
        reasons.append(
            "candidate is not valid: no issue has a defined PR-AUC on the holdout "
            "(no labelled positives, or no rows of the issue's anchor)"
        )
        return decision
    if champion_error is not None:
        reasons.append(
            f"champion v{champion_version} could not be loaded ({champion_error}); "
            "not replacing it automatically — use `surfacer promote` to move the alias"
        )
        return decision
    if champion is not None and set(champion.issue_names) != set(candidate.issue_names):
        ours, theirs = set(candidate.issue_names), set(champion.issue_names)
        reasons.append(
            f"issue set differs from champion v{champion_version}'s: candidate "
            f"{sorted(ours)}, champion {sorted(theirs)} (only in the candidate: "
            f"{sorted(ours - theirs) or 'none'}; only in the champion: "
            f"{sorted(theirs - ours) or 'none'}); a model of another problem does not "
            "replace it — train it under its own registered model name (--model-name)"
        )
        return decision
    if champion is None:
        decision.promote = True
        decision.candidate_primary = _primary(cand, cand, primary_issue)
        reasons.append("no champion yet: the first valid model becomes champion")
        return decision

    try:
        champ = _pr_aucs(holdout_metrics(champion, test_frame))
    except Exception as exc:  # any failure means "cannot score these rows"
        reasons.append(
            f"champion v{champion_version} cannot score the candidate's holdout "
            f"({type(exc).__name__}: {exc}); every issue counts as an improvement"
        )
        champ = {}
    decision.champion_metrics = champ

    ok = True
    champ_disabled = dict(getattr(champion, "disabled", None) or {})
    for issue, why in disabled.items():
        if issue in champ_disabled:
            reasons.append(f"{issue}: disabled in the candidate and the champion ({why})")
        elif math.isfinite(champ.get(issue, math.nan)):
            ok = False
            reasons.append(
                f"{issue}: disabled in the candidate ({why}) but scored by the champion "
                f"(PR-AUC {champ[issue]:.4f} on this holdout)"
            )
    for issue, new in cand.items():
        old = champ.get(issue, math.nan)
        if not math.isfinite(old):
            why = "not scored by the champion" if issue not in champ else "undefined for champion"
            reasons.append(f"{issue}: improvement ({why}); candidate PR-AUC {new:.4f}")
            continue
        if not math.isfinite(new):
            ok = False
            reasons.append(f"{issue}: candidate PR-AUC undefined, champion {old:.4f}")
            continue
        drop = old - new
        if drop > tolerance + _EPS:
            ok = False
            reasons.append(
                f"{issue}: PR-AUC dropped {drop:.4f} ({old:.4f} -> {new:.4f}), "
                f"more than the tolerance {tolerance:.4f}"
            )
        else:
            verdict = "improved" if new > old + _EPS else "within tolerance"
            reasons.append(f"{issue}: PR-AUC {old:.4f} -> {new:.4f} ({verdict})")
    for issue, old in champ.items():
        if issue not in cand and issue not in disabled and math.isfinite(old):
            ok = False
            reasons.append(f"{issue}: scored by the champion ({old:.4f}) but not by the candidate")

    new_primary = _primary(cand, champ, primary_issue)
    old_primary = _primary(champ, cand, primary_issue)
    decision.candidate_primary = new_primary
    decision.champion_primary = old_primary
    if math.isfinite(new_primary) and math.isfinite(old_primary):
        if new_primary < old_primary - _EPS:
            ok = False
            reasons.append(
                f"primary metric {primary_name} got worse: {old_primary:.4f} -> {new_primary:.4f}"
            )
        else:
            reasons.append(
                f"primary metric {primary_name} not worse: {old_primary:.4f} -> {new_primary:.4f}"
            )
    else:
        reasons.append(f"primary metric {primary_name}: no common issue to compare; not blocking")
    decision.promote = ok
    return decision


def _primary(mine: dict[str, float], other: dict[str, float], primary_issue: str | None) -> float:
    """Primary metric over the issues both sides score (so a new issue doesn't skew the mean)."""
    if primary_issue is not None:
        return mine.get(primary_issue, math.nan)
    common = [
        mine[i] for i in mine if math.isfinite(mine[i]) and math.isfinite(other.get(i, math.nan))
    ]
    return float(np.mean(common)) if common else math.nan


# --- registry access -----------------------------------------------------------------------


def client_for(settings: Settings) -> MlflowClient:
    """A client on the settings' tracking/registry URIs (creating the local data dir if used).

    The store's database is created (or upgraded) first under a lock, not by MLflow's first
    call: a server starting beside this job may be creating it at the same moment.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_mlflow_store(settings)
    return MlflowClient(
        tracking_uri=settings.tracking_uri,
        registry_uri=settings.registry_uri,
    )


def _not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None (no such alias or no such model)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> str | None:
    """Point `alias` at `version`; returns the version it held before (None if unset).

    When `champion` moves, the new holder is tagged with the previous one so a rollback knows
    where to go back to.
    """
    before = alias_version(client, name, alias)
    previous = None if before is None else str(before.version)
    if previous == str(version):
        return previous
    client.set_registered_model_alias(name, alias, str(version))
    if alias == CHAMPION and previous is not None:
        client.set_model_version_tag(name, str(version), TAG_PREVIOUS_CHAMPION, previous)
    return previous


def restore_alias(client: MlflowClient, name: str, alias: str, version: str | None) -> None:
    """Put `alias` back on `version` (or remove it when it was unset) — used to undo a failure."""
    if version is None:
        try:
            client.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
    else:
        client.set_registered_model_alias(name, alias, version)


@dataclass(frozen=True)
class AliasMove:
    """An explicit alias move: which alias, and the version it pointed at before and after."""

    alias: str
    before: str | None
    after: str


def promote(settings: Settings, version: str | int, *, alias: str = CHAMPION) -> AliasMove:
    """Move `alias` of settings.model_name to `version` by hand (bypasses the gate)."""
    client = client_for(settings)
    name = settings.model_name
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _not_found(exc):
            raise LookupError(
                f"model {name!r} has no version {str(version)!r} at {settings.tracking_uri}"
            ) from exc
        raise
    before = set_alias(client, name, alias, str(version))
    return AliasMove(alias=alias, before=before, after=str(version))


def rollback(settings: Settings, *, alias: str = CHAMPION) -> AliasMove:
    """Move `alias` back to the version that held it before the current one."""
    client = client_for(settings)
    name = settings.model_name
    current = alias_version(client, name, alias)
    if current is None:
        raise LookupError(f"model {name!r} has no {alias!r} alias to roll back")
    previous = current.tags.get(TAG_PREVIOUS_CHAMPION) if alias == CHAMPION else None
    if not previous:
        raise LookupError(
            f"{name}@{alias} (version {current.version}) records no previous version to roll back to"
        )
    try:
        client.get_model_version(name, previous)
    except MlflowException as exc:
        if _not_found(exc):
            raise LookupError(f"previous version {previous} of {name!r} no longer exists") from exc
        raise
    # A plain set: tagging `previous` with the current version would make a second rollback
    # undo the first one instead of going further back.
    client.set_registered_model_alias(name, alias, previous)
    return AliasMove(alias=alias, before=str(current.version), after=previous)


def registered_models(settings: Settings) -> list[str]:
    """Names of every registered model in the registry, sorted."""
    client = client_for(settings)
    try:
        found = client.search_registered_models()
    except MlflowException as exc:
        if _not_found(exc):
            return []
        raise
    return sorted(m.name for m in found)


@dataclass(frozen=True)
class VersionRow:
    """One registered version as `surfacer models` shows it."""

    version: str
    aliases: list[str]
    run_id: str | None
    created: datetime
    status: str
    metrics: dict[str, float]


def list_versions(settings: Settings) -> list[VersionRow]:
    """All versions of settings.model_name, newest first, with aliases and key run metrics."""
    client = client_for(settings)
    name = settings.model_name
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        if _not_found(exc):
            return []
        raise
    aliases: dict[str, list[str]] = {}
    try:
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                run_metrics = client.get_run(mv.run_id).data.metrics
            except MlflowException:
                run_metrics = {}
            metrics = {k: v for k, v in run_metrics.items() if k.endswith(KEY_METRIC_SUFFIX)}
        rows.append(
            VersionRow(
                version=str(mv.version),
                aliases=sorted(aliases.get(str(mv.version), [])),
                run_id=mv.run_id,
                created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
                status=str(mv.status),
                metrics=metrics,
            )
        )
    return rows


def format_versions(rows: list[VersionRow]) -> str:
    """A fixed-width table of versions for the terminal."""
    if not rows:
        return "no model versions registered"
    metric_names = sorted(
        {k for r in rows for k in r.metrics}, key=lambda k: (k != "mean.pr_auc", k)
    )
    header = ["version", "aliases", "run_id", "created", *metric_names]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r.version,
                ",".join(r.aliases) or "-",
                r.run_id or "-",
                r.created.strftime("%Y-%m-%d %H:%M:%S"),
                *(f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metric_names),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
