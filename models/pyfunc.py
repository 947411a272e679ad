"""The `ScoringBundle` as one MLflow pyfunc model: log it, load it back as the real bundle.

The bundle itself is pickled into the model's `artifacts/` folder; the pyfunc wrapper holds
nothing but a reference to it, so `load_bundle` returns the real `ScoringBundle` (serving needs
its `score_one`/`explain_one`, not just `predict`) and `mlflow.pyfunc.load_model` works too.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import Model, ModelInfo
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

if TYPE_CHECKING:
    from models.bundle import ScoringBundle

# Name of the model inside a run, of the bundle's artifact key and of its pickle file.
MODEL_NAME_IN_RUN = "model"
BUNDLE_ARTIFACT = "bundle"
BUNDLE_FILE = "bundle.pkl"
# Packages the pickled bundle needs; pinned to what trained it so a loader can rebuild the env.
_REQUIREMENTS = ("mlflow", "lightgbm", "scikit-learn", "scipy", "numpy", "pandas", "pyarrow")


class ScoringBundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of a ScoringBundle: snapshot rows in, one probability column per issue out.

    NaN in a column means the issue does not apply to that row's anchor (e.g. a moderation
    issue on a post-anchored row).
    """

    # No predict type hints, and no MLflow wrapping/validation from them: MLflow would turn
    # hints into a schema stricter than the loose signature logged with the model (and warns
    # at class creation when they are missing). The logged signature still applies.
    _skip_type_hint_validation = True

    def __init__(self, bundle: ScoringBundle | None = None) -> None:
        self.bundle = bundle

    def __getstate__(self) -> dict[str, Any]:
        # The bundle travels as its own artifact; pickling it here too would store it twice.
        return {**self.__dict__, "bundle": None}

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.bundle = _read_bundle(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input,
        params=None,
    ) -> pd.DataFrame:
        if self.bundle is None:
            raise ValueError("ScoringBundleModel has no bundle: load it with mlflow.pyfunc")
        frame = _as_frame(model_input)
        return self.bundle.score_frame(frame)


def _as_frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, Mapping):
        return pd.DataFrame([dict(model_input)])
    if isinstance(model_input, Sequence) and not isinstance(model_input, str | bytes):
        return pd.DataFrame([dict(r) for r in model_input])
    raise ValueError(
        f"model input of type {type(model_input).__name__} is not a DataFrame, a record or "
        "a list of records"
    )


def example_frame(bundle: ScoringBundle) -> pd.DataFrame:
    """The bundle's input example as a one-row DataFrame (what the signature is inferred from)."""
    record = bundle.input_example()
    if not record:
        raise ValueError("bundle.input_example() is empty; a logged model needs an example record")
    frame = pd.DataFrame([record])
    # The signature declares numbers as double (counts arrive as floats with NaN); MLflow
    # refuses to convert an int64 example column to double, so the example says double too.
    for col in frame.columns:
        if pd.api.types.is_integer_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]):
            frame[col] = frame[col].astype("float64")
    return frame


def bundle_signature(bundle: ScoringBundle) -> ModelSignature:
    """Signature inferred from the example record and the bundle's output on it.

    Loosened on purpose: every input column is optional (feature groups whose table is missing
    are absent, and the transform treats missing columns as NaN); integers are declared as
    double (counts arrive as floats with NaN); timestamps as `any`, because MLflow's datetime
    type only accepts timezone-naive values and our times are UTC-aware.
    """
    example = example_frame(bundle)
    # Inference only: MLflow reads tz-aware columns through a deprecated pandas path, and
    # the datetime type is replaced by `any` below anyway.
    naive = example.copy()
    for col in naive.columns:
        if isinstance(naive[col].dtype, pd.DatetimeTZDtype):
            naive[col] = naive[col].dt.tz_convert(None)
    inferred = infer_signature(naive, bundle.score_frame(example))
    cols = []
    for spec in inferred.inputs.inputs:
        kind = spec.type
        if kind == DataType.datetime:
            kind = AnyType()
        elif kind in (DataType.integer, DataType.long, DataType.float):
            kind = DataType.double
        cols.append(ColSpec(kind, spec.name, required=False))
    # Outputs: every issue is a double column; NaN where the issue does not apply.
    outputs = Schema(
        [ColSpec(DataType.double, name, required=False) for name in bundle.issue_names]
    )
    return ModelSignature(inputs=Schema(cols), outputs=outputs)


def _requirements() -> list[str]:
    reqs = []
    for name in _REQUIREMENTS:
        try:
            reqs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(name)
    return reqs


def _surfacer_version() -> str:
    try:
        return importlib.metadata.version("surfacer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def log_bundle(
    bundle: ScoringBundle,
    *,
    registered_model_name: str | None = None,
    name: str = MODEL_NAME_IN_RUN,
) -> ModelInfo:
    """Log `bundle` as one pyfunc model (signature + input example) in the active run.

    With `registered_model_name`, MLflow also registers it as a new model version; the
    training job passes None and registers itself so it can undo a half-done registration.
    Requirements are pinned explicitly: MLflow's inference would re-import the model in a
    subprocess, which costs seconds and adds nothing.
    """
    signature = bundle_signature(bundle)
    example = example_frame(bundle)
    with tempfile.TemporaryDirectory(prefix="surfacer-bundle-") as tmp:
        path = Path(tmp) / BUNDLE_FILE
        with path.open("wb") as fh:
            pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=ScoringBundleModel(),
            artifacts={BUNDLE_ARTIFACT: str(path)},
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=registered_model_name,
            metadata={
                "issues": bundle.issue_names,
                "thresholds": bundle.thresholds,
                "surfacer_version": _surfacer_version(),
            },
        )


def _read_bundle(path: Path) -> ScoringBundle:
    from models.bundle import ScoringBundle

    with path.open("rb") as fh:
        bundle = pickle.load(fh)  # the registry is trusted: it only holds bundles we logged
    if not isinstance(bundle, ScoringBundle):
        raise ValueError(f"{path} holds a {type(bundle).__name__}, expected a ScoringBundle")
    return bundle


def load_bundle_from_dir(path: str | Path) -> ScoringBundle:
    """The ScoringBundle inside a downloaded pyfunc model folder (the one holding `MLmodel`)."""
    root = Path(path)
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        raise FileNotFoundError(f"{root} is not an MLflow model folder: no MLmodel file")
    flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
    artifacts = flavor.get("artifacts") or {}
    if BUNDLE_ARTIFACT not in artifacts:
        raise ValueError(
            f"{root} is not a surfacer model: its pyfunc flavour has no {BUNDLE_ARTIFACT!r} "
            f"artifact (found {sorted(artifacts)})"
        )
    return _read_bundle(root / artifacts[BUNDLE_ARTIFACT]["path"])


def load_bundle(
    model_uri: str,
    *,
    dst_path: str | Path | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
) -> ScoringBundle:
    """The real ScoringBundle behind `model_uri` (e.g. `models:/surfacer@champion`, `runs:/...`).

    Downloads the model folder (into `dst_path` if given, else a temporary folder) from the
    given tracking/registry URIs, or MLflow's current ones when not given.
    """
    source = model_storage_uri(model_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    if dst_path is not None:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(dst_path), tracking_uri=tracking_uri
        )
        return load_bundle_from_dir(local)
    with tempfile.TemporaryDirectory(prefix="surfacer-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri
        )
        return load_bundle_from_dir(local)


def model_storage_uri(
    model_uri: str, *, tracking_uri: str | None = None, registry_uri: str | None = None
) -> str:
    """Where a `models:/NAME@ALIAS` or `models:/NAME/VERSION` is stored; other URIs as given.

    Resolved with our own client: MLflow's download of a `models:/` URI looks the name up in
    the globally set registry, not the one passed to it.
    """
    if not model_uri.startswith("models:/"):
        return model_uri
    ref = model_uri.removeprefix("models:/").strip("/")
    client = mlflow.MlflowClient(
        tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri
    )
    if "@" not in ref and "/" not in ref:
        raise ValueError(
            f"model URI {model_uri!r} names no version or alias; expected "
            "models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias).version
        else:
            name, version = ref.rsplit("/", 1)
        return client.get_model_version_download_uri(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        registry = registry_uri or tracking_uri or mlflow.get_registry_uri()
        raise LookupError(
            f"model {model_uri!r} is not in the registry at {registry}: {exc.message} "
            "(`surfacer models` lists the registered versions and aliases)"
        ) from None
