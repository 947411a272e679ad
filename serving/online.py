"""The service's online path: the online store, scoring by item id and background re-scoring.

`OnlineService.ingest` applies contract rows (the API and the in-service stream consumer
call it); every applied batch marks its items as touched. `Rescorer` then scores touched
items at most once per `online_rescore_s` per item, and again when the store clock crosses
one of the item's horizons (so a quiet item is re-judged at 1 h, 6 h, 24 h as batch
snapshots are). An item whose score newly crosses an issue's threshold is queued for review
once per (item, issue): the store remembers which issues it was queued for (a Redis set in
the shared backend, so several workers never queue it twice), and the flagged item, with
its reason codes and the snapshot that triggered it, goes through the durable spool like
the scoring routes' flags.

Each pass first scores the pending moderation anchors (`OnlineService.rescore_anchors`):
every remove / restrict applied to the store, once, on the snapshot `build_snapshots` makes
for that moderation row, so `wrongful_enforcement` is scored and queued online too (once per
(item, issue, action)). The archived scores of both kinds are `models.batch.scored_frame`'s,
the function `surfacer score` writes with.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from features.online.errors import Batch, BatchRejected, StoreUnavailable
from features.schema import DEFAULT_HORIZONS_H
from serving.flag_writer import flagged_item, to_json
from serving.scoring import TOP_K
from serving.spool import SpoolError

log = logging.getLogger("serving.online")
NS_PER_H = 3_600 * 1_000_000_000
# Outcomes of an ingest batch: applied (all or some of its rows), duplicate (its batch id was
# applied before, so nothing was applied again), rejected (failed the contract, nothing
# applied), unavailable (the store could not be reached; the client retries).
INGEST_OUTCOMES = ("applied", "duplicate", "rejected", "unavailable")


def json_record(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot with Python datetimes (what the spool and JSON answers carry)."""
    return {
        k: v.to_pydatetime(warn=False) if hasattr(v, "to_pydatetime") else v
        for k, v in snapshot.items()
    }


class OnlineService:
    """The online store of this worker plus the touched-item bookkeeping of re-scoring."""

    def __init__(self, settings: Any, store: Any = None, archive: Any = None) -> None:
        self.settings = settings
        self._store = store
        self._archive = archive
        self.rescore_s = float(settings.online_rescore_s)
        self.horizons_ns = [round(h * NS_PER_H) for h in DEFAULT_HORIZONS_H]
        self._touched: dict[str, float] = {}  # item -> monotonic time it was first touched
        self._last: dict[str, float] = {}  # item -> monotonic time of its last score
        self._horizons: list[tuple[int, str]] = []  # (as_of ns of a horizon, item)
        self._created: dict[str, int] = {}
        # (item -> issues) this process knows the store has marked flagged: re-scoring an
        # item still over its threshold asks the store again only for issues not in here
        # (that round trip per flagged item was a quarter of a pass's CPU).
        self._flagged: dict[str, set[str]] = {}
        self.queued = 0
        self.scored = 0
        self.anchors_scored = 0
        # What this service's own ingestion did (the API and its in-service consumer):
        # batches by outcome and rows applied or dropped as expired; /metrics exports them.
        self.ingest_batches = dict.fromkeys(INGEST_OUTCOMES, 0)
        self.ingest_rows = {"applied": 0, "expired": 0}
        self._count_lock = threading.Lock()
        # Why the service's own stream consumer stopped (`serving.stream.consume_in_service`
        # restarts it); None while it runs or when there is none.
        self.consumer_problem: str | None = None

    @property
    def store(self) -> Any:
        """The online store (`features.online.OnlineStore`), opened on first use so that a
        worker starts without pandas."""
        if self._store is None:
            from features.online import store_from_settings

            self._store = store_from_settings(self.settings)
        return self._store

    @property
    def archive(self) -> Any:
        """The live archive (`features.online.archive.LiveArchive`) when settings.archive_dir
        is set, else None; opened on first use."""
        if self._archive is None and getattr(self.settings, "archive_dir", None) is not None:
            from features.online.archive import archive_from_settings

            self._archive = archive_from_settings(self.settings)
        return self._archive

    def close_archive(self) -> None:
        """Stop the archive's writer and write what it holds."""
        if self._archive is not None:
            self._archive.close()

    def close(self) -> None:
        """Write what the archive holds, then release the store."""
        try:
            self.close_archive()
        finally:
            if self._store is not None:
                self._store.close()

    async def aclose(self) -> None:
        """Close what the store opened on this event loop (before `close`)."""
        if self._store is not None:
            await self._store.aclose()

    def problem(self) -> str | None:
        """Why the online store cannot be used now (None when it can)."""
        if self._store is None and self.settings.online_store == "memory":
            return None  # in-process: nothing to reach
        try:
            self.store.ping()
        except StoreUnavailable as exc:
            return str(exc)
        return None

    def archive_problem(self) -> str | None:
        """Why the live archive cannot be written now (None when it can, or there is none)."""
        return None if self._archive is None else self._archive.problem

    def _check_archive(self) -> None:
        """ArchiveUnavailable while the archive's last write failed: a batch is then neither
        applied nor acknowledged. Applied and answered, its rows only waited in memory for
        an archive that could not take them (the answer says stored; a restart lost them
        from the archive, however long the failure had lasted)."""
        problem = self.archive_problem()
        if problem is not None:
            from features.online.archive import ArchiveUnavailable

            raise ArchiveUnavailable(f"{problem}; batch not applied")

    def ingest(
        self, batches: Sequence[Batch], batch_id: str | None, *, redelivered: bool = False
    ) -> Any:
        """Contract-check, apply and archive (`features.online.ingest.ingest`): an
        ApplyResult."""
        from features.online.ingest import ingest

        try:
            self._check_archive()
            result = ingest(
                self.store, batches, batch_id, archive=self.archive, redelivered=redelivered
            )
        except BatchRejected:
            self._count(["rejected"])
            raise
        except StoreUnavailable:  # the archive's ArchiveUnavailable too
            self._count(["unavailable"])
            raise
        self._count([result])
        return result

    def ingest_many(
        self, messages: Sequence[tuple[Sequence[Batch], str | None]], *, redelivered: bool = False
    ) -> list[Any]:
        """Several messages in one round trip (`features.online.ingest.ingest_many`)."""
        from features.online.ingest import ingest_many

        try:
            self._check_archive()
            results = ingest_many(
                self.store, messages, archive=self.archive, redelivered=redelivered
            )
        except StoreUnavailable:
            self._count(["unavailable"] * len(messages))
            raise
        self._count(["rejected" if isinstance(r, BatchRejected) else r for r in results])
        return results

    def _count(self, outcomes: Sequence[Any]) -> None:
        """Add batches to the ingest counts: each an ApplyResult or an outcome's name."""
        with self._count_lock:
            for r in outcomes:
                if isinstance(r, str):
                    self.ingest_batches[r] += 1
                    continue
                self.ingest_batches["duplicate" if r.duplicate else "applied"] += 1
                self.ingest_rows["applied"] += r.rows - r.expired
                self.ingest_rows["expired"] += r.expired

    def flush_archive(self) -> None:
        """Write the archive's buffered rows now (a stream consumer, before it acknowledges)."""
        if self.archive is not None:
            self.archive.flush()

    def due(self, limit: int = 2000) -> list[str]:
        """Items to score now: changed (by any ingester: the store keeps the touched set)
        and not scored within rescore_s, or past one of their horizons."""
        now = time.monotonic()
        for item in self.store.take_touched(limit):
            self._touched.setdefault(item, now)
        out = [
            item for item in self._touched if now - self._last.get(item, -1e18) >= self.rescore_s
        ][:limit]
        for item in out:
            del self._touched[item]
        clock = self.store.clock_ns()
        while clock is not None and self._horizons and self._horizons[0][0] <= clock:
            _, item = heapq.heappop(self._horizons)
            if item not in out:
                out.append(item)
        if len(self._last) > 200_000:  # forget items not scored for a long while
            cutoff = now - 3600 * float(self.settings.online_horizon_h)
            self._last = {k: v for k, v in self._last.items() if v >= cutoff}
            self._created = {k: v for k, v in self._created.items() if k in self._last}
            self._flagged = {k: v for k, v in self._flagged.items() if k in self._last}
        return out

    def backlog(self) -> int:
        """Touched items due now and not yet scored: those still in the store's touched
        set and those taken whose debounce (rescore_s) has ended. Staying under a pass
        (`due`'s limit) means re-scoring keeps up; growing means it falls behind."""
        now = time.monotonic()
        waiting = sum(
            1 for item in self._touched if now - self._last.get(item, -1e18) >= self.rescore_s
        )
        return self.store.touched_count() + waiting

    def _plan_horizons(self, item: str, created_ns: int) -> None:
        if item in self._created:
            return
        self._created[item] = created_ns
        for h in self.horizons_ns:
            heapq.heappush(self._horizons, (created_ns + h, item))

    def rescore(self, model: Any, spool: Any, items: list[str]) -> int:
        """Score `items` at the store's now; queue new (item, issue) flags. Returns queued."""
        if not items or model is None:
            return 0
        snaps = self.store.snapshots(items)
        snaps_by_id = {s["item_id"]: s for s in snaps if s is not None}
        records = [json_record(s) for s in snaps_by_id.values()]
        if not records:
            return 0
        now = time.monotonic()
        bundle = model.bundle
        issues = list(bundle.issue_names)
        probs, hits = _probs_and_hits(bundle, records)
        if self.archive is not None:
            self.archive.record_scores(score_rows(records, bundle, probs, str(model.version)))
        queued = 0
        for k, record in enumerate(records):
            item = record["item_id"]
            self._last[item] = now
            self._plan_horizons(item, int(snaps_by_id[item]["created_at"].value))
            known = self._flagged.get(item, ())
            hit = [iss for iss, h in zip(issues, hits[k], strict=True) if h and iss not in known]
            if not hit:
                continue
            new = self.store.mark_flagged(item, hit)
            if new:
                try:
                    self._queue(spool, model, record, new)
                except SpoolError:
                    # Not durable: forget the mark so the next score of the item queues it.
                    self.store.unmark_flagged(item, new)
                    self._touched.setdefault(item, now)
                    raise
                queued += 1
            # marked in the store now (by this call or, for the rest of `hit`, another's)
            self._flagged.setdefault(item, set()).update(hit)
        self.scored += len(records)
        self.queued += queued
        return queued

    def rescore_anchors(self, model: Any, spool: Any, limit: int = 2000) -> int:
        """Score the pending moderation anchors of up to `limit` items; returns flags queued.

        Each remove / restrict applied online left a pending anchor on its item (see
        `features.online.ops.moderation_ops`); here each is scored once, on the snapshot
        `build_snapshots` makes for that moderation row (`OnlineStore.anchor_snapshots`),
        archived with anchor "moderation", and its flags queued for review once per
        (item, issue, action): the store's flag set holds ``<issue>@<action key>``, so a
        second remove of the same item is judged, and queued, on its own (a different
        decision that can be wrong on its own), while re-scoring one action never queues it
        twice. An anchor is forgotten only once its flags are in the spool; when the spool
        fails, its item goes back to the pending set and the next pass retries (and
        archives that anchor's score row a second time: the pass's rows are archived
        before its flags are queued, as in `rescore`)."""
        if model is None:
            return 0
        items = self.store.take_anchored(limit)
        if not items:
            return 0
        try:
            pairs = self.store.anchor_snapshots(items)
        except Exception:
            self._requeue_anchors(items)
            raise
        if not pairs:
            return 0  # items not upserted yet: their `items` row queues them again
        bundle = model.bundle
        issues = list(bundle.issue_names)
        records = [json_record(snap) for _, snap in pairs]
        probs, hits = _probs_and_hits(bundle, records)
        if self.archive is not None:
            self.archive.record_scores(score_rows(records, bundle, probs, str(model.version)))
        queued = 0
        done = 0
        try:
            for k, ((key, _), record) in enumerate(zip(pairs, records, strict=True)):
                item = record["item_id"]
                marks = [f"{iss}@{key}" for iss, h in zip(issues, hits[k], strict=True) if h]
                new_marks = self.store.mark_flagged(item, marks) if marks else []
                if new_marks:
                    new = [m.rsplit("@", 1)[0] for m in new_marks]
                    try:
                        self._queue(spool, model, record, new)
                    except Exception:  # not queued: the retry must be able to queue it
                        self.store.unmark_flagged(item, new_marks)
                        raise
                    queued += 1
                self.store.done_anchors(item, [key])
                done = k + 1
        except Exception:
            self._requeue_anchors(sorted({r["item_id"] for r in records[done:]}))
            raise
        finally:
            self.anchors_scored += done
            self.queued += queued
        return queued

    def _requeue_anchors(self, items: list[str]) -> None:
        """Give items whose anchors were taken but not scored back to the pending set (best
        effort: with the store unreachable the anchors stay pending in the item's state,
        and the item's next `items` row queues them again)."""
        with contextlib.suppress(StoreUnavailable):
            for item in items:
                self.store.requeue_anchored(item)

    def _queue(self, spool: Any, model: Any, record: dict[str, Any], issues: list[str]) -> None:
        """Append the review-queue entry of a record flagged for `issues` to the spool, with
        the reason codes of each issue."""
        p, _, reasons = model.bundle.score_explain_one(record, top_k=TOP_K)
        entry = flagged_item(
            record,
            p,
            issues,
            {i: reasons.get(i, []) for i in issues},
            model.version,
            datetime.now(UTC),
        )
        spool.append_item(to_json(entry))


def _probs_and_hits(bundle: Any, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, n_issues) of snapshot records and which reach their thresholds
    (`models.flags.flag_matrix`, the rule `surfacer score` flags by)."""
    from models.flags import flag_matrix

    probs = np.asarray(bundle.score_records(records), dtype=np.float64)
    return probs, flag_matrix(bundle, probs)


def score_rows(
    records: list[dict[str, Any]], bundle: Any, probs: np.ndarray, model_version: str
) -> Any:
    """A re-scoring pass as the rows `surfacer score` writes (`models.batch.scored_frame`:
    item_id, as_of, anchor, horizon_h, one probability column per issue, flagged,
    disabled) plus model_version."""
    import pandas as pd

    from models.batch import scored_frame

    ids = pd.DataFrame(
        {
            "item_id": [str(r["item_id"]) for r in records],
            "as_of": pd.to_datetime([r["as_of"] for r in records], utc=True),
            "anchor": [r.get("anchor") or "post" for r in records],
            "horizon_h": np.array([r["horizon_h"] for r in records], dtype=np.float64),
        }
    )
    out = scored_frame(ids, probs, bundle)
    out["model_version"] = model_version
    return out


# After the store became unreachable, the next re-scoring pass waits this long.
RESCORE_PAUSE_S = 1.0


def rescore_due(online: OnlineService, model: Any, spool: Any) -> float:
    """One re-scoring pass: score the pending moderation anchors, then take the due items
    and score them. Blocking (Redis round trips, batch scoring): callers run it off any
    event loop. Never raises, so the loop calling it stays alive: a failure is logged and
    the next pass retries. Returns how long the caller should pause first
    (RESCORE_PAUSE_S while the store is unavailable, else 0)."""
    try:
        online.rescore_anchors(model, spool)  # first: an action is judged as of its time
        items = online.due()
        if items:
            online.rescore(model, spool, items)
    except StoreUnavailable as exc:
        log.warning("online re-scoring paused: %s", exc)
        return RESCORE_PAUSE_S
    except Exception:  # keep re-scoring alive; the next pass retries
        log.exception("online re-scoring failed")
    return 0.0


async def rescore_loop(svc: Any, online: OnlineService, interval_s: float = 0.2) -> None:
    """Background re-scoring of touched items (a task of the app's lifespan, when
    settings.online_rescore). The pass runs in a thread, its Redis reads included, so the
    event loop keeps serving requests meanwhile."""
    while True:
        await asyncio.sleep(interval_s)
        model = svc.holder.current
        if model is None:
            continue
        pause = await asyncio.to_thread(rescore_due, online, model, svc.spool)
        if pause:
            await asyncio.sleep(pause)


def run_rescorer(
    settings: Any,
    stop: threading.Event,
    *,
    interval_s: float = 0.2,
    retry_s: float = 5.0,
    holder: Any = None,
    store: Any = None,
    on_ready: Callable[[Any], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    status_s: float = 30.0,
) -> int:
    """Background re-scoring outside the serving workers (`surfacer ingest --rescore`).

    The same passes as `rescore_loop`, in a thread of another process: its own model holder
    (the registry's champion, re-checked every settings.reload_interval_s, else every
    `retry_s` until one loads) and its own spool segment in settings.spool_path, which the
    service's flag writer drains into the review store like a worker's. Runs until `stop`
    is set, then makes one last pass over the items due then. `on_ready(model)` is called
    once, when the first model has loaded (re-scoring starts then). `on_status(line)` gets,
    every `status_s` once re-scoring has started, the items (and moderation actions)
    scored and queued since the last line and the backlog of due items
    (`OnlineService.backlog`): whether re-scoring keeps up (on busy cores, an
    `ingest --idle` re-scorer may not).
    Returns the items queued for review.
    """
    from serving.model_holder import ModelHolder
    from serving.spool import SpoolWriter

    holder = holder or ModelHolder(settings)
    online = OnlineService(settings, store)
    spool = SpoolWriter(
        settings.spool_path,
        max_bytes=settings.spool_max_bytes,
        fsync_interval_s=settings.spool_fsync_interval_s,
    ).start()
    reload_s = float(settings.reload_interval_s)
    checked = -1e18
    # (monotonic time, items scored, actions scored, queued) at the last status line
    last_status: tuple[float, int, int, int] | None = None

    def status() -> None:
        nonlocal last_status
        now = time.monotonic()
        if last_status is None:
            last_status = (now, online.scored, online.anchors_scored, online.queued)
            return
        t0, scored0, anchors0, queued0 = last_status
        if now - t0 < status_s:
            return
        scored, secs = online.scored - scored0, now - t0
        if on_status is not None:
            on_status(
                f"re-scorer: {scored} items scored in {secs:.1f} s ({scored / secs:.0f}/s), "
                f"{online.anchors_scored - anchors0} moderation actions, "
                f"{online.queued - queued0} queued for review, backlog {online.backlog()} "
                "due items"
            )
        last_status = (now, online.scored, online.anchors_scored, online.queued)

    def load() -> None:
        nonlocal checked
        due = reload_s if holder.current is not None else retry_s
        if holder.current is not None and reload_s <= 0:
            return
        if time.monotonic() - checked < due:
            return
        checked = time.monotonic()
        try:
            holder.check()
        except Exception as exc:  # the registry is down: the cache, else wait
            log.warning("re-scorer: could not load the champion (%s)", exc)
            if holder.current is None:
                with contextlib.suppress(Exception):
                    holder.load_from_cache()

    try:
        while True:
            stopping = stop.wait(interval_s)
            load()
            model = holder.current
            if model is not None and on_ready is not None:
                on_ready(model)
                on_ready = None
            if model is not None:
                status()
                pause = rescore_due(online, model, spool)
                if pause:
                    stop.wait(pause)
            if stopping:
                return online.queued
    finally:
        spool.close()
        if store is None:  # opened here; a given store belongs to the caller
            online.close()
        else:
            online.close_archive()
