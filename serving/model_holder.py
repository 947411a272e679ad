"""Keeps the champion ScoringBundle loaded: registry lookup, local cache, reload on alias moves.

`models:/<name>@champion` is resolved with `MlflowClient.get_model_version_by_alias`; the
version's folder is downloaded into `<model_cache_dir>/<version>/` and `current.json` records
which version served last, so the service starts from the cache when MLflow is unreachable.
A reload loads and warms the new bundle completely before one reference assignment swaps it
in: requests read `holder.current` once and keep that model, so none fail during the swap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from common.locks import exclusive_file_lock
from common.settings import Settings

log = logging.getLogger(__name__)

CURRENT_FILE = "current.json"
COMPLETE_MARKER = ".complete"
RELOAD_REQUEST_FILE = "reload-request"
KEEP_VERSIONS = 3


class Bundle(Protocol):
    """What serving needs of `models.bundle.ScoringBundle`."""

    metadata: dict[str, Any]

    @property
    def issue_names(self) -> list[str]: ...

    @property
    def thresholds(self) -> dict[str, float]: ...

    def score_explain_one(self, record: Any, top_k: int = 5) -> tuple[Any, list[str], Any]: ...

    def design_records(self, records: Any) -> Any: ...

    def score_design(self, design: Any) -> Any: ...

    def explain_design(self, records: Any, design: Any, issue: str, top_k: int = 5) -> Any: ...

    def input_example(self) -> dict[str, Any]: ...

    @property
    def input_fields(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class LoadedModel:
    """A loaded, warmed bundle and where it came from; immutable so it can be shared freely."""

    bundle: Bundle
    name: str
    version: str
    alias: str
    source: str  # "mlflow" or "cache"
    path: Path
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # What snapshots must and may carry for this bundle (serving.scoring.InputContract).
    contract: Any = None


def _default_loader(path: Path) -> Bundle:
    from models.pyfunc import load_bundle_from_dir

    return load_bundle_from_dir(path)


class ModelHolder:
    """Owns the current `LoadedModel`; `check()` (sync) and `refresh()` (async) reload it."""

    def __init__(
        self,
        settings: Settings,
        *,
        alias: str = "champion",
        loader: Callable[[Path], Bundle] = _default_loader,
        on_swap: Callable[[LoadedModel], None] | None = None,
        mlflow_timeout_s: float = 120.0,
    ) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.alias = alias
        self.loader = loader
        self.on_swap = on_swap
        self.mlflow_timeout_s = mlflow_timeout_s
        self.cache_dir = Path(settings.model_cache_dir)
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()  # one load at a time; reads never take it
        self.last_error: str | None = None
        self.last_check: datetime | None = None
        self._seen_request = self._reload_request()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    # -- registry ------------------------------------------------------------------------------

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        from common.mlflow_store import prepare_mlflow_store

        # Other processes may open a new store now too (the workers of one server, a training
        # job): create it under the lock rather than inside MLflow's first call (no-op once done).
        prepare_mlflow_store(self.settings)
        return MlflowClient(
            tracking_uri=self.settings.tracking_uri,
            registry_uri=self.settings.registry_uri,
        )

    def resolve_version(self) -> str:
        """The registry version the alias points to now (raises when MLflow is unreachable)."""
        mv = self._client().get_model_version_by_alias(self.name, self.alias)
        return str(mv.version)

    def _version_dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"model version {version!r} is not a plain version string")
        return self.cache_dir / version

    def download(self, version: str) -> Path:
        """The local folder of `version`, downloading it unless the cache already has it whole.

        The workers of one server share the cache and load a new champion at the same time:
        an flock per version lets one download while the others wait and then find it whole.
        Without it a later worker replaced the folder (rmtree, then rename) while an earlier
        one was loading from it.
        """
        target = self._version_dir(version)
        if (target / COMPLETE_MARKER).exists():
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_file_lock(self.cache_dir / f".{version}.lock"):
            if not (target / COMPLETE_MARKER).exists():  # not fetched while we waited
                self._fetch(version, target)
        return target

    def _fetch(self, version: str, target: Path) -> None:
        """Download `version` into `target`, whole or not at all (the caller holds its lock)."""
        import mlflow.artifacts

        from models.pyfunc import model_storage_uri

        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.cache_dir))
        try:
            source = model_storage_uri(
                f"models:/{self.name}/{version}",
                tracking_uri=self.settings.tracking_uri,
                registry_uri=self.settings.registry_uri,
            )
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(tmp), tracking_uri=self.settings.tracking_uri
            )
            local_path = Path(local)
            (local_path / COMPLETE_MARKER).write_text(version)
            if target.exists():  # an incomplete earlier attempt
                shutil.rmtree(target)
            # Rename is atomic: a folder under its version name is always complete.
            os.replace(local_path, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _forget(self, version: str) -> None:
        """Drop the cached copy of `version` (it failed to load): the next check downloads
        it again. Under the version's lock, so no worker is downloading it meanwhile."""
        target = self._version_dir(version)
        with exclusive_file_lock(self.cache_dir / f".{version}.lock"):
            (target / COMPLETE_MARKER).unlink(missing_ok=True)  # first: never half-complete
            shutil.rmtree(target, ignore_errors=True)
        log.warning("dropped the cached copy of version %s, which failed to load", version)

    # -- cache pointer -------------------------------------------------------------------------

    def _write_current(self, model: LoadedModel) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "name": model.name,
            "version": model.version,
            "alias": model.alias,
            "path": str(model.path),
            "saved_at": datetime.now(UTC).isoformat(),
        }
        # A temp file per writer: the workers that loaded one version write it together.
        tmp = self.cache_dir / f".{CURRENT_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, self.cache_dir / CURRENT_FILE)

    def cached_version(self) -> str | None:
        """The version `current.json` names, if its folder is complete."""
        p = self.cache_dir / CURRENT_FILE
        if not p.exists():
            return None
        try:
            info = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", p, exc)
            return None
        if info.get("name") != self.name:
            log.warning("cache %s holds model %r, not %r", p, info.get("name"), self.name)
            return None
        version = str(info.get("version"))
        if not (self._version_dir(version) / COMPLETE_MARKER).exists():
            return None
        return version

    def _prune(self, keep: str) -> None:
        versions = [
            d
            for d in self.cache_dir.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name != keep
        ]
        versions.sort(key=lambda d: d.stat().st_mtime, reverse=True)
        for old in versions[KEEP_VERSIONS - 1 :]:
            shutil.rmtree(old, ignore_errors=True)

    # -- loading -------------------------------------------------------------------------------

    def _load(self, version: str, path: Path, source: str) -> LoadedModel:
        bundle = self.loader(path)
        # Warm-up: the first call pays lazy initialisation; do it before any request can.
        example = bundle.input_example() or {}
        if example:
            _, flagged, _ = bundle.score_explain_one(example)  # single item, reasons included
            design = bundle.design_records([example])  # and the batch path
            bundle.score_design(design)
            for issue in flagged[:1]:
                bundle.explain_design([example], design, issue)
        from serving.scoring import InputContract

        return LoadedModel(
            bundle=bundle,
            name=self.name,
            version=version,
            alias=self.alias,
            source=source,
            path=path,
            contract=InputContract(bundle),
        )

    def _swap(self, model: LoadedModel) -> None:
        self._current = model  # one reference assignment: readers see old or new, never half
        if self.on_swap is not None:
            self.on_swap(model)
        log.info("serving %s version %s (from %s)", model.name, model.version, model.source)

    def load_from_cache(self) -> LoadedModel | None:
        """Load the version `current.json` names; None when the cache has none."""
        version = self.cached_version()
        if version is None:
            return None
        model = self._load(version, self._version_dir(version), "cache")
        self._swap(model)
        return model

    def check(self) -> bool:
        """Resolve the alias and reload when it moved; True when a new model was swapped in.

        Raises when MLflow is unreachable or the new version fails to load; the model serving
        before stays in place.
        """
        with self._lock:
            self.last_check = datetime.now(UTC)
            version = self.resolve_version()
            cur = self._current
            if cur is not None and cur.version == version and cur.source == "mlflow":
                return False
            if cur is not None and cur.version == version:
                # Serving this version from the cache already; now confirmed by the registry.
                self._swap(replace(cur, source="mlflow"))
                return False
            path = self.download(version)
            try:
                model = self._load(version, path, "mlflow")
            except Exception:
                # A corrupt or incomplete artifact downloaded whole is cached as complete:
                # without this, every later check loaded that copy again, so the version
                # never loaded even once the registry's artifact was fixed.
                self._forget(version)
                raise
            self._swap(model)
            self._write_current(model)
            self._prune(keep=version)
            return True

    # -- async face for the app ----------------------------------------------------------------

    async def startup(self) -> None:
        """Load the champion from MLflow, else from the cache (with a warning); never raises."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self.check), self.mlflow_timeout_s)
            self.last_error = None
            return
        except Exception as exc:  # MLflow down, alias missing, bad model: fall back to the cache
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "could not load %s@%s from MLflow (%s); trying the local cache %s",
                self.name,
                self.alias,
                self.last_error,
                self.cache_dir,
            )
        try:
            model = await asyncio.to_thread(self.load_from_cache)
        except Exception:
            log.exception("cached model in %s failed to load", self.cache_dir)
            return
        if model is None:
            log.warning(
                "no cached model in %s; not ready until the registry answers", self.cache_dir
            )
        else:
            log.warning("serving cached version %s while MLflow is unreachable", model.version)

    async def refresh(self) -> bool:
        """`check()` off the event loop, bounded by the MLflow timeout."""
        try:
            swapped = await asyncio.wait_for(asyncio.to_thread(self.check), self.mlflow_timeout_s)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = None
        return swapped

    # -- reload requests shared by the worker processes of one server -----------------------

    @property
    def reload_request_file(self) -> Path:
        return self.cache_dir / RELOAD_REQUEST_FILE

    def _reload_request(self) -> str | None:
        try:
            return self.reload_request_file.read_text()
        except OSError:
            return None

    def announce_reload(self) -> None:
        """Tell the other workers of this server to check the alias now (`POST /v1/admin/reload`
        reaches one worker). A token in the shared cache folder, written atomically."""
        token = f"{os.getpid()}-{time.time_ns()}"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.reload_request_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(token)
        os.replace(tmp, self.reload_request_file)
        self._seen_request = token  # this worker has just checked

    async def follow_reload_requests(
        self, interval_s: float = 1.0, on_result: Callable[[str], None] | None = None
    ) -> None:
        """Until cancelled: when another worker announces a reload, check the alias too.

        One small file read per interval; a failed check is logged and retried at the next
        announcement or poll, as in `poll`.
        """
        while True:
            await asyncio.sleep(interval_s)
            token = self._reload_request()
            if token is None or token == self._seen_request:
                continue
            self._seen_request = token
            await self._check_logged("announced reload", on_result)

    async def poll(
        self,
        interval_s: float,
        on_result: Callable[[str], None] | None = None,
        *,
        until_loaded: bool = False,
    ) -> None:
        """Check the alias every `interval_s` until cancelled; errors are logged, not raised.

        With `until_loaded`, stop once a model is loaded (retrying a failed startup when
        periodic checks are off).
        """
        while True:
            if until_loaded and self._current is not None:
                return
            await asyncio.sleep(interval_s)
            await self._check_logged("alias check", on_result)

    async def _check_logged(self, what: str, on_result: Callable[[str], None] | None) -> str:
        """`refresh()` for a background task: the outcome (swapped, unchanged or failed) goes
        to `on_result` and the log; errors are not raised."""
        t0 = time.perf_counter()
        try:
            swapped = await self.refresh()
            outcome = "swapped" if swapped else "unchanged"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = "failed"
            log.warning("%s failed: %s", what, exc)
        if on_result is not None:
            on_result(outcome)
        log.debug("%s %s in %.3fs", what, outcome, time.perf_counter() - t0)
        return outcome
