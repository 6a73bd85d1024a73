"""Model registry over MLflow: versions, aliases (`champion`), a promotion gate, rollback and model references.

A registered version's source is the checkpoint file logged by its training run (see mlops.tracking). The
promotion gate reads the test metrics that `mlops.evaluate --update-checkpoint` stores in the checkpoint itself
(`metrics["test"]`), so a model is compared on what it carries, not on a side table. Every alias move made here is
recorded in a registered-model tag (`alias_history.<alias>`: each move with the version, who made it, when and
why), which is what `rollback` walks back; the version an alias moves to also carries who moved it, when and why in
its own tags (`promoted_by`, `promoted_at`, `promotion_reason`, or `rolled_back_*` for a rollback). `describe`
gathers one version's facts: test metrics, training data fingerprint, aliases, and those moves.

Serving loads by reference: `resolve_model_reference("models:/cxr-pneumonia@champion")`, `"models:/NAME/3"`,
`"runs:/RUN_ID/checkpoint/pneumonia.pt"` or a plain file path (settings: `MODEL_ALIAS`, else `MODEL_PATH`).

CLI: `python -m mlops.registry list [NAME] | register FILE | promote NAME VERSION --reason WHY | rollback NAME
--reason WHY | show NAME VERSION | set-alias | resolve REF` (see `--help`); promote and rollback record the OS user
unless `--by` names someone else. Only aliases are used, never MLflow's deprecated stages.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from inference.checkpoint import CheckpointError, ModelCheckpoint, load_checkpoint

DEFAULT_ALIAS = "champion"
HISTORY_TAG = "alias_history.{alias}"  # registered-model tag: JSON list of the alias's moves, oldest first
HISTORY_LIMIT = 50
HISTORY_MAX_CHARS = 4900  # MLflow's SQL store keeps registered-model tag values in 5,000 characters
HISTORY_REASON_CHARS = 80  # a move's reason in the history; the full one (up to REASON_MAX_CHARS) is a version tag
REASON_MAX_CHARS = 500
# Version tags saying who moved an alias to the version, when and why, per kind of move.
MOVE_TAGS = {
    "promote": ("promoted_by", "promoted_at", "promotion_reason"),
    "rollback": ("rolled_back_by", "rolled_back_at", "rollback_reason"),
}
LOWER_IS_BETTER = frozenset({"brier", "ece"})
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistryError(ValueError):
    """A registry operation cannot be done (unknown model, version or alias, missing metrics); user-facing."""


class UnknownModelError(RegistryError):
    """No registered model, version or alias of that name."""


class InvalidReasonError(RegistryError):
    """A promotion or rollback without a usable reason (empty, or longer than REASON_MAX_CHARS)."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    aliases: list[str]
    run_id: str
    source: str
    checkpoint_version: str  # ModelCheckpoint.version of the registered file
    created: str  # ISO-8601, UTC
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    name: str
    candidate: int
    champion_before: int | None
    metric: str
    candidate_value: float | None
    champion_value: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def default_model_name(task: str) -> str:
    return f"cxr-{task}"


def mlflow_client() -> Any:
    """An MlflowClient on the configured tracking URI (settings), creating the local store on first use."""
    from mlops.tracking import configure_mlflow

    return configure_mlflow()


def _mlflow_error() -> type[Exception]:
    from mlflow.exceptions import MlflowException

    return MlflowException


def parse_model_uri(ref: str) -> tuple[str, str | None, int | None]:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS, None); `models:/NAME/3` -> (NAME, None, 3)."""
    match = _MODEL_URI.match(ref.strip())
    if not match:
        raise RegistryError(f"Not a model reference: {ref!r} (expected models:/NAME@ALIAS or models:/NAME/VERSION)")
    version = match.group("version")
    return match.group("name"), match.group("alias"), int(version) if version else None


# --- reading the registry ----------------------------------------------------------------------------------------


def _to_registered(mv: Any, aliases: Sequence[str] = ()) -> RegisteredVersion:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((mv.creation_timestamp or 0) / 1000))
    tags = dict(mv.tags or {})
    return RegisteredVersion(
        name=mv.name,
        version=int(mv.version),
        aliases=sorted(set(aliases) | set(mv.aliases or ())),
        run_id=mv.run_id or "",
        source=mv.source or "",
        checkpoint_version=tags.get("model_version", ""),
        created=created,
        tags=tags,
    )


def _registered_model(client: Any, name: str) -> Any:
    try:
        return client.get_registered_model(name)
    except _mlflow_error() as exc:
        raise UnknownModelError(f"No registered model named {name!r}.") from exc


def list_models() -> list[str]:
    return sorted(model.name for model in mlflow_client().search_registered_models())


def list_versions(name: str) -> list[RegisteredVersion]:
    """Every version of `name`, oldest first, with the aliases pointing at it."""
    client = mlflow_client()
    model = _registered_model(client, name)
    aliases_by_version: dict[int, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases_by_version.setdefault(int(version), []).append(alias)
    versions = client.search_model_versions(f"name = '{_quote(name)}'")
    return sorted(
        (_to_registered(mv, aliases_by_version.get(int(mv.version), ())) for mv in versions),
        key=lambda v: v.version,
    )


def get_version(name: str, version: int) -> RegisteredVersion:
    client = mlflow_client()
    try:
        mv = client.get_model_version(name, str(version))
    except _mlflow_error() as exc:
        raise UnknownModelError(f"Model {name!r} has no version {version}.") from exc
    return _to_registered(mv)


def get_alias(name: str, alias: str = DEFAULT_ALIAS) -> int | None:
    """Version the alias points to, or None when it is not set."""
    model = _registered_model(mlflow_client(), name)
    version = (model.aliases or {}).get(alias)
    return int(version) if version is not None else None


@dataclass(frozen=True)
class VersionDetails:
    """What an admin decides a promotion on: one version with its test metrics, the fingerprint of the data it was
    trained on (and of the test data its metrics come from), its aliases, and the last promotion and rollback to
    it (who, when, why)."""

    name: str
    version: int
    checkpoint_version: str
    aliases: list[str]
    created: str
    run_id: str
    source: str
    metrics: dict[str, float]
    data_fingerprint: str
    test_data_fingerprint: str
    promoted_by: str
    promoted_at: str
    promotion_reason: str
    rolled_back_by: str
    rolled_back_at: str
    rollback_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "aliases": list(self.aliases), "metrics": dict(self.metrics)}


def describe(name: str, version: int | None = None) -> list[VersionDetails]:
    """Every version of `name` (or only `version`), oldest first, with its facts. A version registered before its
    facts were tagged (by training's own registration) has them read from its checkpoint once and tagged."""
    versions = list_versions(name)
    if version is not None:
        versions = [v for v in versions if v.version == version]
        if not versions:
            raise UnknownModelError(f"Model {name!r} has no version {version}.")
    return [_details(_with_facts(v)) for v in versions]


def _with_facts(registered: RegisteredVersion) -> RegisteredVersion:
    if "data_fingerprint" in registered.tags:
        return registered
    checkpoint = _load(resolve_checkpoint(registered.name, registered.version))
    client = mlflow_client()
    _tag_facts(client, registered.name, registered.version, checkpoint)
    tags = dict(client.get_model_version(registered.name, str(registered.version)).tags or {})
    return RegisteredVersion(**{**registered.__dict__, "tags": tags})


def _details(registered: RegisteredVersion) -> VersionDetails:
    tags = registered.tags
    metrics = {
        key.removeprefix("test_"): float(value)
        for key, value in tags.items()
        if key.startswith("test_") and key != "test_data_fingerprint" and _is_number(value)
    }
    moves = {key: tags.get(key, "") for keys in MOVE_TAGS.values() for key in keys}
    return VersionDetails(
        name=registered.name,
        version=registered.version,
        checkpoint_version=registered.checkpoint_version,
        aliases=registered.aliases,
        created=registered.created,
        run_id=registered.run_id,
        source=registered.source,
        metrics=metrics,
        data_fingerprint=tags.get("data_fingerprint", ""),
        test_data_fingerprint=tags.get("test_data_fingerprint", ""),
        **moves,
    )


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def find_versions_of_checkpoint(checkpoint_version: str) -> list[RegisteredVersion]:
    """Registered versions (of any model) whose file is the checkpoint with this `ModelCheckpoint.version`."""
    client = mlflow_client()
    found = client.search_model_versions(f"tags.model_version = '{_quote(checkpoint_version)}'")
    return sorted((_to_registered(mv) for mv in found), key=lambda v: (v.name, v.version))


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


# --- files behind versions ---------------------------------------------------------------------------------------


def _local_file(uri: str) -> Path | None:
    """The local path of a file:// URI or plain path; None for remote URIs."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] == ":\\"):  # plain path (or Windows drive)
        return Path(uri)
    return None


def _download(uri: str, cache_key: str) -> Path:
    """Local path of an artifact URI: the file itself for a local store, else a cached download."""
    local = _local_file(uri)
    if local is not None:
        if not local.is_file():
            raise RegistryError(f"The registered checkpoint file is missing: {local}")
        return local
    import mlflow

    from settings import get_settings

    target = get_settings().var_dir / "registry-cache" / cache_key
    cached = target / Path(urlparse(uri).path).name
    if cached.is_file():
        return cached
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except _mlflow_error() as exc:
        raise RegistryError(f"Could not download {uri}: {exc}") from exc


def resolve_checkpoint(name: str, alias_or_version: str | int = DEFAULT_ALIAS) -> Path:
    """Local path of the checkpoint file of version `alias_or_version` (a version number or an alias) of `name`."""
    client = mlflow_client()
    ref = str(alias_or_version)
    try:
        mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except _mlflow_error() as exc:
        kind = "version" if ref.isdigit() else "alias"
        raise UnknownModelError(f"Model {name!r} has no {kind} {ref!r}.") from exc
    return _download(mv.source, f"{name}/{mv.version}")


def resolve_model_reference(ref: str | Path) -> Path:
    """A local checkpoint path for a registry reference (`models:/NAME@ALIAS`, `models:/NAME/N`, `runs:/...`)
    or a plain file path."""
    text = str(ref).strip()
    if not text:
        raise RegistryError("Empty model reference.")
    if text.startswith("models:/"):
        name, alias, version = parse_model_uri(text)
        return resolve_checkpoint(name, alias if alias is not None else str(version))
    if text.startswith("runs:/"):
        mlflow_client()  # the tracking URI must be configured before MLflow can resolve runs:/
        return _download(text, "runs/" + text.removeprefix("runs:/").replace("/", "_"))
    path = Path(text).expanduser()
    if not path.is_file():
        raise RegistryError(f"Model file not found: {path}")
    return path


def serving_model_reference(settings: Any = None) -> str:
    """What serving should load: `MODEL_ALIAS` when set, else `MODEL_PATH`."""
    if settings is None:
        from settings import get_settings

        settings = get_settings()
    return settings.model_alias or str(settings.model_path)


def resolve_serving_model(settings: Any = None) -> Path:
    """Local checkpoint path serving should load. A set alias that cannot be resolved is an error, never a silent
    fallback to another model."""
    return resolve_model_reference(serving_model_reference(settings))


# --- writing the registry ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: to which version, by whom, when (ISO-8601, UTC), why, and how (promote, rollback)."""

    version: int
    by: str = ""
    at: str = ""
    reason: str = ""
    action: str = "promote"

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _moves(client: Any, name: str, alias: str) -> list[AliasMove]:
    """The alias's recorded moves, oldest first (a bare version number is a move recorded before who/when/why)."""
    raw = (_registered_model(client, name).tags or {}).get(HISTORY_TAG.format(alias=alias), "[]")
    try:
        entries = json.loads(raw)
        return [AliasMove(int(e)) if isinstance(e, int | str) else AliasMove(**e) for e in entries]
    except (ValueError, TypeError):
        return []


def _write_moves(client: Any, name: str, alias: str, moves: list[AliasMove]) -> None:
    kept = moves[-HISTORY_LIMIT:]
    text = json.dumps([m.to_dict() for m in kept])
    while len(text) > HISTORY_MAX_CHARS and len(kept) > 1:
        kept = kept[1:]
        text = json.dumps([m.to_dict() for m in kept])
    client.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), text)


def alias_history(name: str, alias: str = DEFAULT_ALIAS) -> list[AliasMove]:
    return _moves(mlflow_client(), name, alias)


def os_user() -> str:
    """Who runs this process: the default `by` of a promotion or rollback made from the command line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


def checked_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise InvalidReasonError("Give a reason: it is kept with the model version and in the audit trail.")
    if len(text) > REASON_MAX_CHARS:
        raise InvalidReasonError(f"The reason is {len(text)} characters long; at most {REASON_MAX_CHARS} are kept.")
    return text


def _record_move(client: Any, name: str, alias: str, moves: list[AliasMove], move: AliasMove) -> None:
    """Point the alias, then write the version's who/when/why tags and the alias history."""
    client.set_registered_model_alias(name, alias, str(move.version))
    for key, value in zip(MOVE_TAGS[move.action], (move.by, move.at, move.reason), strict=True):
        client.set_model_version_tag(name, str(move.version), key, value)
    short = AliasMove(move.version, move.by, move.at, move.reason[:HISTORY_REASON_CHARS], move.action)
    _write_moves(client, name, alias, [*moves, short])


def set_alias(name: str, version: int, alias: str = DEFAULT_ALIAS, *, by: str = "", reason: str = "") -> None:
    """Point `alias` at `version` and remember the move, who made it (default: the OS user), when and why."""
    client = mlflow_client()
    get_version(name, version)  # clear error for an unknown version
    current = get_alias(name, alias)
    if current == version:
        return
    moves = _moves(client, name, alias)
    if current is not None and (not moves or moves[-1].version != current):
        moves.append(AliasMove(current, action="found"))  # set outside this module: kept as a rollback target
    _record_move(client, name, alias, moves, AliasMove(version, by or os_user(), _now(), reason[:REASON_MAX_CHARS]))


def promote(name: str, version: int, reason: str, by: str = "", alias: str = DEFAULT_ALIAS) -> RegisteredVersion:
    """An explicit promotion (an admin's decision, no metric gate): `alias` -> `version`, with who and why."""
    why = checked_reason(reason)
    set_alias(name, version, alias, by=by, reason=why)
    return get_version(name, version)


def rollback(
    name: str, alias: str = DEFAULT_ALIAS, to_version: int | None = None, *, by: str = "", reason: str = ""
) -> int:
    """Move `alias` back to the version it pointed to before (or to `to_version`); returns the new version.
    Recorded like a promotion (action "rollback"), so a rollback can itself be rolled back."""
    client = mlflow_client()
    current = get_alias(name, alias)
    if current is None:
        raise RegistryError(f"Model {name!r} has no {alias!r} alias to roll back.")
    target = to_version if to_version is not None else _previous_version(client, name, alias, current)
    if to_version is not None and to_version not in {v.version for v in list_versions(name)}:
        raise UnknownModelError(f"Model {name!r} has no version {to_version}.")
    moves = _moves(client, name, alias)
    if not moves or moves[-1].version != current:
        moves.append(AliasMove(current, action="found"))
    move = AliasMove(target, by or os_user(), _now(), reason[:REASON_MAX_CHARS], "rollback")
    _record_move(client, name, alias, moves, move)
    return target


def previous_version(name: str, alias: str = DEFAULT_ALIAS) -> int | None:
    """The version a rollback of `alias` would move it to now; None when none is recorded."""
    current = get_alias(name, alias)
    if current is None:
        return None
    try:
        return _previous_version(mlflow_client(), name, alias, current)
    except RegistryError:
        return None


def _previous_version(client: Any, name: str, alias: str, current: int) -> int:
    """The version the alias held before the current one: walk the history back, skipping deleted versions and
    moves already undone (a rollback's target stays; the versions rolled back from are passed over)."""
    existing = {v.version for v in list_versions(name)}
    stack: list[int] = []
    for move in _moves(client, name, alias):
        if move.action == "rollback" and move.version in stack:
            del stack[stack.index(move.version) + 1 :]  # back to an earlier holder: the later ones were undone
        else:
            stack.append(move.version)
    while stack and stack[-1] == current:
        stack.pop()
    while stack and (stack[-1] not in existing or stack[-1] == current):
        stack.pop()
    if not stack:
        raise RegistryError(f"No earlier {alias!r} of {name!r} is recorded; pass a version to roll back to.")
    return stack[-1]


def register_checkpoint_file(path: Path, name: str | None = None, run_name: str | None = None) -> int:
    """Register an existing checkpoint file as a new version (logged in its own MLflow run); returns the version."""
    import mlflow

    from mlops.tracking import CHECKPOINT_ARTIFACT_DIR, register_checkpoint

    checkpoint = _load(Path(path))
    client = mlflow_client()
    name = name or default_model_name(checkpoint.task)
    with mlflow.start_run(run_name=run_name or f"register-{checkpoint.version}") as run:
        mlflow.set_tags({"model_version": checkpoint.version, "task": checkpoint.task, "registered_from": str(path)})
        mlflow.log_artifact(str(path), artifact_path=CHECKPOINT_ARTIFACT_DIR)
        test = checkpoint.metrics.get("test", {}).get("metrics", {})
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in test.items() if _finite(v)})
    version = int(register_checkpoint(client, name, run.info.run_id, Path(path).name, checkpoint))
    _tag_facts(client, name, version, checkpoint)
    return version


def sync_checkpoint(path: Path, checkpoint: ModelCheckpoint) -> list[RegisteredVersion]:
    """After a checkpoint file was updated (e.g. test metrics added), copy it over the artifact of every registered
    version made from it, and tag those versions with its test metrics. Returns the versions updated."""
    client = mlflow_client()
    updated = []
    for registered in find_versions_of_checkpoint(checkpoint.version):
        target = _local_file(registered.source)
        if target is None or target.resolve() != Path(path).resolve():
            _overwrite_artifact(client, registered, Path(path))
        _tag_test_metrics(client, registered.name, registered.version, checkpoint)
        updated.append(registered)
    return updated


def _overwrite_artifact(client: Any, registered: RegisteredVersion, path: Path) -> None:
    marker = "/artifacts/"
    if not registered.run_id or marker not in registered.source:
        raise RegistryError(
            f"{registered.name} v{registered.version} has a source outside its run: {registered.source}"
        )
    relative = registered.source.split(marker, 1)[1]
    folder, _, file_name = relative.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / file_name  # the artifact keeps its registered file name
        staged.write_bytes(path.read_bytes())
        client.log_artifact(registered.run_id, str(staged), artifact_path=folder or None)


def _tag_facts(client: Any, name: str, version: int, checkpoint: ModelCheckpoint) -> None:
    """The version's test metrics and its training data fingerprint, as tags (listing reads no checkpoint)."""
    _tag_test_metrics(client, name, version, checkpoint)
    client.set_model_version_tag(name, str(version), "data_fingerprint", checkpoint.data_fingerprint or "unknown")


def _tag_test_metrics(client: Any, name: str, version: int, checkpoint: ModelCheckpoint) -> None:
    test = checkpoint.metrics.get("test") or {}
    for key, value in (test.get("metrics") or {}).items():
        if _finite(value):
            client.set_model_version_tag(name, str(version), f"test_{key}", f"{float(value):.4f}")
    if test.get("data_fingerprint"):
        client.set_model_version_tag(name, str(version), "test_data_fingerprint", str(test["data_fingerprint"]))


# --- promotion gate ----------------------------------------------------------------------------------------------


def _load(path: Path) -> ModelCheckpoint:
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise RegistryError(str(exc)) from exc


def stored_test_metrics(name: str, version: int, split: str = "test") -> dict[str, Any]:
    """The `metrics[split]` block stored in the checkpoint of a version (empty when it was never evaluated)."""
    return dict(_load(resolve_checkpoint(name, version)).metrics.get(split) or {})


def _metric_value(block: dict[str, Any], metric: str) -> float | None:
    value = (block.get("metrics") or {}).get(metric)
    return float(value) if _finite(value) else None


def promote_if_better(
    name: str,
    version: int,
    metric: str = "auroc",
    min_delta: float = 0.0,
    alias: str = DEFAULT_ALIAS,
    split: str = "test",
    force: bool = False,
    by: str = "",
) -> PromotionDecision:
    """Point `alias` at `version` only if its stored test `metric` beats the current holder's by more than
    `min_delta` (lower is better for brier/ece). Both must have been evaluated on the same test data (same
    fingerprint). With no current holder, a candidate that has test metrics is promoted; `force` skips the gate.
    A promotion is recorded with the gate's reason and `by` (default: the OS user)."""
    get_version(name, version)
    champion = get_alias(name, alias)
    candidate_block = stored_test_metrics(name, version, split)
    candidate_value = _metric_value(candidate_block, metric)

    def decide(promoted: bool, reason: str, champion_value: float | None = None) -> PromotionDecision:
        if promoted:
            set_alias(name, version, alias, by=by, reason=reason)
        return PromotionDecision(promoted, name, version, champion, metric, candidate_value, champion_value, reason)

    if champion == version:
        return decide(False, f"v{version} already holds {alias!r}")
    if force:
        return decide(True, "forced promotion (gate skipped)")
    if candidate_value is None:
        return decide(False, f"v{version} has no stored {split} {metric}: run mlops.evaluate --update-checkpoint")
    if champion is None:
        return decide(True, f"no current {alias!r}; v{version} {metric} {candidate_value:.4f}")
    champion_block = stored_test_metrics(name, champion, split)
    champion_value = _metric_value(champion_block, metric)
    if champion_value is None:
        reason = f"current {alias!r} v{champion} has no stored {split} {metric}; evaluate it or use force"
        return decide(False, reason)
    fingerprints = {candidate_block.get("data_fingerprint"), champion_block.get("data_fingerprint")}
    if len(fingerprints) > 1:
        return decide(False, f"v{version} and v{champion} were evaluated on different {split} data", champion_value)
    gain = champion_value - candidate_value if metric in LOWER_IS_BETTER else candidate_value - champion_value
    comparison = f"{metric} {candidate_value:.4f} vs {champion_value:.4f} (v{champion}), min delta {min_delta}"
    if gain > min_delta:
        return decide(True, f"better: {comparison}", champion_value)
    return decide(False, f"not better: {comparison}", champion_value)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- CLI ---------------------------------------------------------------------------------------------------------


SHOWN_METRICS = ("auroc", "accuracy", "sensitivity", "specificity")


def _print_versions(name: str) -> None:
    rows = describe(name)
    print(f"{name}: {len(rows)} version(s)")
    for v in rows:
        shown = ", ".join(f"{k} {v.metrics[k]:.4f}" for k in SHOWN_METRICS if k in v.metrics)
        aliases = f" [{', '.join(v.aliases)}]" if v.aliases else ""
        print(f"  v{v.version}{aliases} {v.checkpoint_version} created {v.created} {shown or '(no test metrics)'}")


def _print_details(details: VersionDetails) -> None:
    """`show`: everything an admin needs before promoting or rolling back to this version."""
    aliases = ", ".join(details.aliases) or "none"
    lines = [
        f"{details.name} v{details.version}: {details.checkpoint_version}",
        f"  aliases: {aliases}",
        f"  created: {details.created} (run {details.run_id or '-'})",
        f"  trained on data: {details.data_fingerprint or 'unknown'}",
        f"  test data: {details.test_data_fingerprint or 'never evaluated'}",
        "  test metrics: "
        + (", ".join(f"{k} {val:.4f}" for k, val in sorted(details.metrics.items())) or "none stored"),
        f"  promoted: {_move_text(details.promoted_by, details.promoted_at, details.promotion_reason)}",
        f"  rolled back to: {_move_text(details.rolled_back_by, details.rolled_back_at, details.rollback_reason)}",
        f"  source: {details.source}",
    ]
    print("\n".join(lines))


def _move_text(by: str, at: str, reason: str) -> str:
    return f"by {by or 'unknown'} at {at or 'unknown'}: {reason or '(no reason recorded)'}" if at or by else "never"


def build_parser() -> argparse.ArgumentParser:
    """Positional forms as the issue writes them (`promote NAME VERSION`); the older `--name`/`--version`/
    `--checkpoint` flags still work."""
    parser = argparse.ArgumentParser(prog="python -m mlops.registry", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list registered models or the versions of one")
    _name_arguments(listing, required=False)
    register = commands.add_parser("register", help="register an existing checkpoint file as a new version")
    register.add_argument("file", type=Path, nargs="?", help="the checkpoint file")
    register.add_argument("--checkpoint", type=Path, dest="file_flag", help=argparse.SUPPRESS)
    register.add_argument("--name", default="", help="default cxr-<task of the checkpoint>")
    promote_cmd = commands.add_parser("promote", help="move the alias to a version (an admin's decision, recorded)")
    _name_arguments(promote_cmd)
    _version_arguments(promote_cmd)
    _move_arguments(promote_cmd)
    promote_cmd.add_argument("--gate", action="store_true", help="only if better than the current holder")
    promote_cmd.add_argument("--metric", default="auroc", help="the gate's metric")
    promote_cmd.add_argument("--min-delta", type=float, default=0.0, help="the gate's least gain")
    show = commands.add_parser("show", help="one version: metrics, data fingerprint, aliases, who promoted it")
    _name_arguments(show)
    _version_arguments(show)
    set_cmd = commands.add_parser("set-alias", help="point an alias at a version (no gate, no reason)")
    _name_arguments(set_cmd)
    _version_arguments(set_cmd)
    set_cmd.add_argument("--alias", default=DEFAULT_ALIAS)
    back = commands.add_parser("rollback", help="move the alias back to its previous version (recorded)")
    _name_arguments(back)
    _move_arguments(back)
    back.add_argument("--to-version", type=int, default=None)
    resolve = commands.add_parser("resolve", help="print the local checkpoint path of a reference")
    resolve.add_argument("reference", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/... or a file path")
    return parser


def _name_arguments(command: argparse.ArgumentParser, required: bool = True) -> None:
    command.add_argument("name", nargs="?", default="", help="registered model name, e.g. cxr-pneumonia")
    command.add_argument("--name", dest="name_flag", default="", help=argparse.SUPPRESS)
    command.set_defaults(name_required=required)


def _version_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("version", type=int, nargs="?", default=None, help="registry version number")
    command.add_argument("--version", type=int, dest="version_flag", default=None, help=argparse.SUPPRESS)


def _move_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--reason", default="", help="why (kept with the version and in the alias history)")
    command.add_argument("--by", default="", help="who decided (default: the OS user)")
    command.add_argument("--alias", default=DEFAULT_ALIAS)


def _positional(args: argparse.Namespace) -> argparse.Namespace:
    """Fold the older flags into the positional arguments; a missing required one is a RegistryError."""
    values = vars(args).copy()
    for key in ("name", "version", "file"):
        if key in values and not values[key]:
            values[key] = values.get(f"{key}_flag") or values[key]
    if values.get("name_required") and not values.get("name"):
        raise RegistryError(f"`{args.command}` needs the registered model's name, e.g. cxr-pneumonia.")
    if "version" in values and values["version"] is None:
        raise RegistryError(f"`{args.command}` needs a version number.")
    if args.command == "register" and not values.get("file"):
        raise RegistryError("`register` needs the checkpoint file.")
    return argparse.Namespace(**values)


def run_command(args: argparse.Namespace) -> int:
    args = _positional(args)
    if args.command == "list":
        for name in [args.name] if args.name else list_models():
            _print_versions(name)
    elif args.command == "register":
        version = register_checkpoint_file(args.file, args.name or None)
        print(f"registered {args.file} as version {version}")
    elif args.command == "promote":
        return _promote_command(args)
    elif args.command == "show":
        _print_details(describe(args.name, args.version)[0])
    elif args.command == "set-alias":
        set_alias(args.name, args.version, args.alias)
        print(f"{args.name}@{args.alias} -> v{args.version}")
    elif args.command == "rollback":
        version = rollback(args.name, args.alias, args.to_version, by=args.by, reason=checked_reason(args.reason))
        print(f"{args.name}@{args.alias} rolled back to v{version}")
    elif args.command == "resolve":
        print(resolve_model_reference(args.reference))
    return 0


def _promote_command(args: argparse.Namespace) -> int:
    if not args.gate:
        promote(args.name, args.version, args.reason, by=args.by, alias=args.alias)
        print(f"PROMOTED: {args.name}@{args.alias} -> v{args.version}")
        return 0
    decision = promote_if_better(
        args.name, args.version, args.metric, args.min_delta, args.alias, by=args.by or os_user()
    )
    print(("PROMOTED: " if decision.promoted else "NOT PROMOTED: ") + decision.reason)
    return 0 if decision.promoted else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
