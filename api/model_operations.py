"""Model operations seen from the API: the registry's versions beside what this backend serves, and an admin's
promote or rollback, which moves the registry's alias and makes this backend serve the new version before it answers
(other backend processes follow within MODEL_ALIAS_POLL_S: api/services.py `watch_alias`). Audited, with the
checkpoint version that serves afterwards.

The registry work is `mlops.registry`'s; the switch in place is `Services.switch_to`'s.
"""

from __future__ import annotations

from collections.abc import Callable

from api.auth import Principal
from api.observability import actor_fields
from api.schemas import ModelsOut, ModelSwitchOut, ModelVersionOut, RegisteredModelOut
from api.services import ModelSwitch, Services
from inference import DEFAULT_TASK
from mlops.registry import (
    DEFAULT_ALIAS,
    RegistryError,
    UnknownModelError,
    VersionDetails,
    checked_reason,
    describe,
    get_alias,
    list_models,
    previous_version,
    promote,
    rollback,
)
from monitoring import AuditEntry


def models_overview(services: Services) -> ModelsOut:
    """Every registered model with its versions; an install whose registry was never used has none (and this does
    not create it)."""
    names = list_models() if services.registry_available() else []
    models = [
        RegisteredModelOut(
            name=name,
            champion=get_alias(name, DEFAULT_ALIAS),
            versions=[version_out(services, details) for details in describe(name)],
        )
        for name in names
    ]
    serving = {task: model.version for task, model in services.served_models().items()}
    return ModelsOut(models=models, serving=serving)


def version_details(services: Services, name: str, version: int) -> ModelVersionOut:
    require_registry(services, name)
    return version_out(services, describe(name, version)[0])


def require_registry(services: Services, name: str) -> None:
    """An install whose registry was never used knows no model; asking must not create the MLflow store."""
    if not services.registry_available():
        raise UnknownModelError(f"No registered model named {name!r}.")


def version_out(services: Services, details: VersionDetails) -> ModelVersionOut:
    """A version with whether this backend serves it now, or keeps it warm for an instant switch."""
    follows = services.followed is not None and services.followed[0] == details.name
    loaded = {model.version for model in services.slots.values()} if follows else set()
    predictor = services.predictors.get(DEFAULT_TASK)
    serving = follows and predictor is not None and predictor.version == details.checkpoint_version
    return ModelVersionOut(**details.to_dict(), serving=serving, warm=details.checkpoint_version in loaded)


def promote_version(services: Services, name: str, version: int, reason: str, user: Principal) -> ModelSwitchOut:
    """An admin's promotion: loaded and warmed here first, then the alias moves and this backend serves it."""
    why = checked_reason(reason)
    require_registry(services, name)
    before = get_alias(name, DEFAULT_ALIAS)

    def move() -> object:
        return promote(name, version, why, by=user.username)

    switch = _switch(services, name, version, move, before)
    _audit(services, user, "model.promote", switch, name, why)
    return _switch_out(services, name, switch)


def rollback_model(services: Services, name: str, reason: str, user: Principal) -> ModelSwitchOut:
    """Back to the champion before (kept warm: no load), recorded like a promotion."""
    why = checked_reason(reason)
    require_registry(services, name)
    before = get_alias(name, DEFAULT_ALIAS)
    target = previous_version(name, DEFAULT_ALIAS)
    if target is None:
        what = "no champion" if before is None else "no earlier champion recorded"
        raise RegistryError(f"Model {name!r} has {what} to roll back to.")

    def move() -> object:
        return rollback(name, DEFAULT_ALIAS, target, by=user.username, reason=why)

    switch = _switch(services, name, target, move, before)
    _audit(services, user, "model.rollback", switch, name, why)
    return _switch_out(services, name, switch)


def _switch(services: Services, name: str, version: int, move: Callable[[], object], before: int | None) -> ModelSwitch:
    """Switch this backend when it follows `name`'s champion; otherwise only the alias moves."""
    if services.followed == (name, DEFAULT_ALIAS):
        switch = services.switch_to(version, move_alias=move)
        return ModelSwitch(switch.version, before, switch.checkpoint_version, switch.seconds, switch.was_warm)
    move()
    details = describe(name, version)[0]
    return ModelSwitch(version, before, details.checkpoint_version, 0.0, was_warm=False)


def _switch_out(services: Services, name: str, switch: ModelSwitch) -> ModelSwitchOut:
    predictor = services.predictors.get(DEFAULT_TASK)
    return ModelSwitchOut(
        name=name,
        alias=DEFAULT_ALIAS,
        version=switch.version,
        previous_version=switch.previous_version,
        checkpoint_version=switch.checkpoint_version,
        serving=predictor.version if predictor is not None else "",
        swap_ms=round(switch.seconds * 1000, 1),
    )


def _audit(services: Services, user: Principal, action: str, switch: ModelSwitch, name: str, reason: str) -> None:
    detail = {
        "name": name,
        "version": switch.version,
        "previous_version": switch.previous_version,
        "reason": reason,
        "swap_ms": round(switch.seconds * 1000, 1),
        "was_warm": switch.was_warm,
    }
    entry = AuditEntry(action, target_id=f"{name}/{switch.version}", model_version=switch.checkpoint_version,
                       detail=detail, **actor_fields(user))  # fmt: skip
    services.audit.record(entry)
