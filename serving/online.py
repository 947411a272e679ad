"""The service's online path: the online store, scoring by item id and background re-scoring.

`OnlineService.ingest` applies contract rows (the API and the in-service stream consumer
call it); every applied batch marks its items as touched. `Rescorer` then scores touched
items at most once per `online_rescore_s` per item, and again when the store clock crosses
one of the item's horizons (so a quiet item is re-judged at 1 h, 6 h, 24 h as batch
snapshots are). An item whose score newly crosses an issue's threshold is queued for review
once per (item, issue): the store remembers which issues it was queued for (a Redis set in
the shared backend, so several workers never queue it twice), and the flagged item, with
its reason codes and the snapshot that triggered it, goes through the durable spool like
the scoring routes' flags. The mark is two-phase: a leased claim before the spool append,
final after it, so a worker killed in between leaves a claim that ends, not a flag lost.

Each pass first scores the pending moderation anchors (`OnlineService.rescore_anchors`):
every remove / restrict applied to the store, once, on the snapshot `build_snapshots` makes
for that moderation row, so `wrongful_enforcement` is scored and queued online too (once per
(item, issue, action)). The archived scores of both kinds are `models.batch.scored_frame`'s,
the function `surfacer score` writes with.

Re-scoring is at least once: what a pass takes stays leased to it in the store until its
flags are in the spool, and a lease that ends unreleased (its worker died) gives the item
to any worker; each scored item's next horizon is kept in the store too (docs/architecture.md,
"Re-scoring is at least once").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from features.online.errors import Batch, BatchRejected, StoreUnavailable
from features.schema import DEFAULT_HORIZONS_H
from serving.flag_writer import flagged_item, to_json
from serving.scoring import TOP_K

if TYPE_CHECKING:
    from features.online.store import Lease

log = logging.getLogger("serving.online")
NS_PER_H = 3_600 * 1_000_000_000
# An item taken for re-scoring stays leased to its taker in the store for
# max(LEASE_MIN_S, LEASE_PASSES * online_rescore_s): well past its debounce plus a pass.
# A taker that dies (or loses the take's reply) leaves it there, and any re-scorer takes it
# again once the lease has ended.
LEASE_MIN_S = 60.0
LEASE_PASSES = 4
# How many uvicorn workers `surfacer serve` started (set for them in the environment): with
# the in-process store, each worker would hold its own part of the online state.
ENV_WORKERS = "SURFACER_SERVE_WORKERS"
# Outcomes of an ingest batch: applied (all or some of its rows), duplicate (its batch id was
# applied before, so nothing was applied again), rejected (failed the contract, nothing
# applied), unavailable (the store could not be reached; the client retries).
INGEST_OUTCOMES = ("applied", "duplicate", "rejected", "unavailable")


def split_store_problem(settings: Any) -> str | None:
    """Why this worker must not use its online store: the in-process store under a server of
    several workers (each would hold the rows it happened to receive, so GET score would
    answer 404 or a partial snapshot depending on the worker); None when it may."""
    workers = int(os.environ.get(ENV_WORKERS, "1") or 1)
    if str(settings.online_store).strip().lower() != "memory" or workers <= 1:
        return None
    return (
        f"the online store is in-process (SURFACER_ONLINE_STORE=memory) and this service runs "
        f"{workers} workers, each of which would hold only the rows it received: ingest and "
        "score by id are off; set SURFACER_ONLINE_STORE=redis://HOST:PORT/DB or serve with "
        "--workers 1"
    )


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
        self.horizons_ns = sorted(round(h * NS_PER_H) for h in DEFAULT_HORIZONS_H)
        self.lease_s = max(LEASE_MIN_S, LEASE_PASSES * self.rescore_s)
        self.wall: Callable[[], float] = time.time  # the clock of leases (tests move it)
        self._touched: dict[str, float] = {}  # item -> monotonic time it was first touched
        self._last: dict[str, float] = {}  # item -> monotonic time of its last score
        # item -> the end (wall ms) of this worker's lease on it: its token to release it
        self._leases: dict[str, int] = {}
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
        self.split = split_store_problem(settings) if store is None else None
        # Why the service's own stream consumer stopped (`serving.stream.consume_in_service`
        # restarts it); None while it runs or when there is none.
        self.consumer_problem: str | None = None

    @property
    def store(self) -> Any:
        """The online store (`features.online.OnlineStore`), opened on first use so that a
        worker starts without pandas. StoreUnavailable when it would be split between
        workers (`split`): the online routes answer 503 saying so."""
        if self.split is not None:
            raise StoreUnavailable(self.split)
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

    def _lease(self) -> Lease:
        from features.online.store import Lease

        return Lease.starting(self.wall(), self.lease_s)

    def due(self, limit: int = 2000) -> list[str]:
        """Items to score now: changed (by any ingester: the store keeps the touched set)
        and not scored within rescore_s, or past one of their horizons (the store keeps
        each scored item's next one). Taken items stay leased to this worker in the store
        until `rescore` has queued their flags; taking first gives back the items whose
        lease ended (a worker that took them died)."""
        now = time.monotonic()
        lease = self._lease()
        for item in self.store.take_touched(limit, lease):
            self._touched.setdefault(item, now)
            self._leases[item] = lease.until_ms
        out = [
            item for item in self._touched if now - self._last.get(item, -1e18) >= self.rescore_s
        ][:limit]
        for item in out:
            del self._touched[item]
        for item in self.store.take_horizons(limit, lease):
            self._leases[item] = lease.until_ms
            if item not in out:
                out.append(item)
        if len(self._last) > 200_000:  # forget items not scored for a long while
            cutoff = now - 3600 * float(self.settings.online_horizon_h)
            self._last = {k: v for k, v in self._last.items() if v >= cutoff}
            self._flagged = {k: v for k, v in self._flagged.items() if k in self._last}
        return out

    def backlog(self) -> int:
        """Items due now and not yet scored: those in the store's touched set, those whose
        lease ended unscored (their taker died), those past their next horizon, and those
        this worker took whose debounce (rescore_s) has ended. Staying under a pass
        (`due`'s limit) means re-scoring keeps up; growing means it falls behind."""
        now = time.monotonic()
        waiting = sum(
            1 for item in self._touched if now - self._last.get(item, -1e18) >= self.rescore_s
        )
        return self.store.touched_count(self._lease().now_ms) + waiting

    def _next_horizon(self, snapshot: dict[str, Any]) -> int | None:
        """The first of the item's horizons (store-clock ns) after the snapshot's as_of;
        None past its last."""
        created, as_of = int(snapshot["created_at"].value), int(snapshot["as_of"].value)
        return next((created + h for h in self.horizons_ns if created + h > as_of), None)

    def rescore(self, model: Any, spool: Any, items: list[str]) -> int:
        """Score `items` at the store's now; queue new (item, issue) flags. Returns queued.

        Each item whose flags are queued (or that had none, or no state) is finished in the
        store: its next horizon set and this worker's lease on it released. An item not
        finished (the spool or the store failed) is retried by this worker's next pass
        and, should this worker die first, by any once its lease ends. An item with a flag
        another worker's claim holds (`_queue_once`) is not finished either: it stays
        leased, so that should that worker die before its flag is final, the item is
        scored again after the lease and the flag claimed and queued."""
        if not items or model is None:
            return 0
        snaps_by_id: dict[str, Any] = {}
        done: list[str] = []
        try:
            snaps = self.store.snapshots(items)
            snaps_by_id = {s["item_id"]: s for s in snaps if s is not None}
            done += [item for item in items if item not in snaps_by_id]  # expired or unknown
            queued = self._score_and_queue(model, spool, snaps_by_id, done)
        except Exception:
            now = time.monotonic()
            for item in set(items) - set(done):
                self._touched.setdefault(item, now)
            with contextlib.suppress(StoreUnavailable):
                self._finish(done, snaps_by_id)
            raise
        self._finish(done, snaps_by_id)
        return queued

    def _score_and_queue(
        self, model: Any, spool: Any, snaps_by_id: dict[str, Any], done: list[str]
    ) -> int:
        """Score the snapshots and queue their new flags, appending each item to `done`
        once its flags are in the spool."""
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
            self._touched.pop(item, None)  # this score read every touch taken so far
            known = self._flagged.get(item, ())
            hit = [iss for iss, h in zip(issues, hits[k], strict=True) if h and iss not in known]
            if hit:
                sent, held = self._queue_once(spool, model, record, {iss: iss for iss in hit})
                queued += sent
                # final in the store now (by this call or another's), but for the held ones
                self._flagged.setdefault(item, set()).update(i for i in hit if i not in held)
                if held:  # finished once another's claim is final: left leased till then
                    self._leases.pop(item, None)
                    continue
            done.append(item)
        self.scored += len(records)
        self.queued += queued
        return queued

    def _finish(self, items: list[str], snaps_by_id: dict[str, Any]) -> None:
        """Finish scored items in the store (`OnlineStore.finish_touched`)."""
        if not items:
            return
        self.store.finish_touched(
            [
                (
                    item,
                    self._leases.pop(item, None),
                    self._next_horizon(snaps_by_id[item]) if item in snaps_by_id else None,
                )
                for item in items
            ]
        )

    def rescore_anchors(self, model: Any, spool: Any, limit: int = 2000) -> int:
        """Score the pending moderation anchors of up to `limit` items; returns flags queued.

        Each remove / restrict applied online left a pending anchor on its item (see
        `features.online.ops.moderation_ops`); here each is scored once, on the snapshot
        `build_snapshots` makes for that moderation row (`OnlineStore.anchor_snapshots`),
        archived with anchor "moderation", and its flags queued for review once per
        (item, issue, action): the store's flag set holds ``<issue>@<action key>``, so a
        second remove of the same item is judged, and queued, on its own (a different
        decision that can be wrong on its own), while re-scoring one action never queues it
        twice. An anchor is forgotten only once its flags are in the spool and final
        (`_queue_once`): when the spool fails, its item goes back to the pending set and
        the next pass retries (and archives that anchor's score row a second time: the
        pass's rows are archived before its flags are queued, as in `rescore`); when
        another pass's claim holds its flag, it stays pending and its item leased."""
        if model is None:
            return 0
        lease = self._lease()
        items = self.store.take_anchored(limit, lease)
        if not items:
            return 0
        try:
            pairs = self.store.anchor_snapshots(items)
        except Exception:
            self._requeue_anchors(items)
            raise
        if not pairs:  # items not upserted yet: their `items` row queues them again
            self.store.release_anchored(items, lease.until_ms)
            return 0
        bundle = model.bundle
        issues = list(bundle.issue_names)
        records = [json_record(snap) for _, snap in pairs]
        probs, hits = _probs_and_hits(bundle, records)
        if self.archive is not None:
            self.archive.record_scores(score_rows(records, bundle, probs, str(model.version)))
        queued = 0
        done = 0
        held: set[str] = set()  # items with an action whose flag another claim holds
        try:
            for k, ((key, _), record) in enumerate(zip(pairs, records, strict=True)):
                item = record["item_id"]
                marks = {f"{iss}@{key}": iss for iss, h in zip(issues, hits[k], strict=True) if h}
                sent, others = self._queue_once(spool, model, record, marks) if marks else (0, [])
                queued += sent
                if others:  # pending, and its item leased, until that claim is final
                    held.add(item)
                else:
                    self.store.done_anchors(item, [key])
                done = k + 1
        except Exception:
            rest = {r["item_id"] for r in records[done:]}
            self._requeue_anchors(sorted(rest))
            with contextlib.suppress(StoreUnavailable):
                self.store.release_anchored(
                    [i for i in items if i not in rest and i not in held], lease.until_ms
                )
            raise
        finally:
            self.anchors_scored += done
            self.queued += queued
        self.store.release_anchored([i for i in items if i not in held], lease.until_ms)
        return queued

    def _requeue_anchors(self, items: list[str]) -> None:
        """Give items whose anchors were taken but not scored back to the pending set (best
        effort: with the store unreachable they stay leased, and any re-scorer takes them
        again once the lease has ended)."""
        with contextlib.suppress(StoreUnavailable):
            for item in items:
                self.store.requeue_anchored(item)

    def _queue_once(
        self, spool: Any, model: Any, record: dict[str, Any], marks: dict[str, str]
    ) -> tuple[int, list[str]]:
        """Queue the record's flags once whoever scores its item, losing none if this
        process dies at any point. `marks` maps each flag set mark (an issue, or
        ``<issue>@<action key>``) to its issue. Two phases: claim the marks in the store
        (leased like a take, `OnlineStore.claim_flags`), append the claimed ones' entry to
        the spool, then make them final (`mark_flagged`). A failed append gives the claims
        back; a death leaves them to end with their lease, and the item's lease brings it
        back to be scored and claimed again. Returns (1 if an entry was queued else 0, the
        marks another claim holds: not final yet, so the caller must not finish the
        item)."""
        item = record["item_id"]
        lease = self._lease()
        claimed, held = self.store.claim_flags(item, list(marks), lease)
        if not claimed:
            return 0, held
        try:
            self._queue(spool, model, record, [marks[m] for m in claimed])
        except Exception:  # not queued: the next score of the item must claim it again
            with contextlib.suppress(StoreUnavailable):  # else the claim ends with its lease
                self.store.release_flags(item, claimed, lease.until_ms)
            raise
        self.store.mark_flagged(item, claimed)
        return 1, held

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
