"""Signed promotion, shared by every example's deployment stage.

`champion_asset` builds an example's promotion asset around `promote`,
which stamps the next release version into the model's config, signs the
directory with the release key (OpenSSF model-signing), publishes it
read-only, registers it in the MLflow registry and moves the `champion`
alias. `release_check` verifies the published release the way a server
will: through the secure loader.
"""

import json
import shutil
from collections.abc import Callable, Mapping

import torch
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    MetadataValue,
    ResourceParam,
    asset,
    asset_check,
)

from resources.digests import digest_file
from resources.loader import LoadedModel, ModelRefused, SecureModelLoader
from resources.release_folder import ReleaseFolder
from resources.releases import ReleaseSigner
from resources.scratch import ScratchSpace
from resources.signing import CONFIG_FILE
from resources.tables import ModelDir
from resources.tracking import ExperimentTracking
from resources.trust_store import ReleaseRecord, TrustStore


def promote(
    context: AssetExecutionContext,
    model: ModelDir,
    model_name: str,
    *,
    signer: ReleaseSigner,
    releases: ResourceParam[ReleaseFolder],
    trust_store: ResourceParam[TrustStore],
    tracking: ExperimentTracking,
    scratch: ScratchSpace,
) -> ModelDir:
    """Sign and publish `model` as the next champion release of `model_name`.

    The signed config names its predecessor's config digest, so releases form
    a hash chain; the release is then recorded in the operator's witness,
    whose newest record is the floor every server and check holds releases
    to. Promotion adds no trusted key: an operator lists the release key.
    """
    floor = trust_store.release_floor(model_name)
    version = max(releases.next_version(model_name), floor.version + 1 if floor else 1)
    release = scratch.path(f"release-{model_name}-v{version}")
    shutil.copytree(model.path, release)
    config_path = release / CONFIG_FILE
    run_id = model.details["mlflow_run_id"]
    config = {
        **json.loads(config_path.read_text()),
        "name": model_name,
        "version": version,
        "mlflow_run_id": run_id,
        "predecessor": floor.config_digest if floor else "",
    }
    config_path.write_text(json.dumps(config, sort_keys=True))
    signer.sign(release)
    published = releases.publish(model_name, release, version)
    trust_store.record_release(
        ReleaseRecord(model_name, version, digest_file(config_path), config["predecessor"])
    )

    tracking.attach(run_id).log_artifacts(release, "release")
    registered = tracking.register(
        run_id, "release", model_name, tags={"release_version": version, "signer": signer.fingerprint()}
    )
    tracking.set_alias(model_name, "champion", registered)
    details = {
        "version": version,
        "signer": signer.fingerprint(),
        "mlflow_model_version": registered,
        "mlflow_run_id": run_id,
    }
    context.add_output_metadata({**details, "release_version": version, "release_path": str(published)})
    return ModelDir(path=release, details=details)


def champion_asset(
    key: AssetKey,
    model: AssetKey,
    model_name: str,
    *,
    description: str,
    automation_condition: AutomationCondition | None = None,
) -> AssetsDefinition:
    """The deployment asset that signs and publishes `model` as the next champion release of `model_name`.

    Only this step holds the release key; Dagster runs it only when every
    blocking check upstream passed.
    """

    @asset(
        key=key,
        ins={"model": AssetIn(key=model)},
        group_name="deployment",
        io_manager_key="model_io_manager",
        kinds={"pytorch", "mlflow", "safetensors"},
        owners=["team:ml-platform"],
        automation_condition=automation_condition,
        description=description,
    )
    def _champion(
        context: AssetExecutionContext,
        signer: ReleaseSigner,
        releases: ResourceParam[ReleaseFolder],
        trust_store: ResourceParam[TrustStore],
        tracking: ExperimentTracking,
        scratch: ScratchSpace,
        model: ModelDir,
    ) -> ModelDir:
        return promote(
            context,
            model,
            model_name,
            signer=signer,
            releases=releases,
            trust_store=trust_store,
            tracking=tracking,
            scratch=scratch,
        )

    return _champion


def load_champion(
    releases: ReleaseFolder,
    trust_store: TrustStore,
    model_name: str,
    architectures: Mapping[str, Callable[[dict], torch.nn.Module]],
) -> LoadedModel | None:
    """The serving release through the secure loader, held to the trust store (None before the first)."""
    floor = trust_store.release_floor(model_name)
    current = releases.current(model_name)
    if floor is None and current is None:
        return None
    if current is None:
        raise ModelRefused(
            "files", f"v{floor.version} of {model_name} is on record but `current` points nowhere"
        )
    loader = SecureModelLoader(
        trust_store.trusted_release_keys(), architectures, floor=floor.version if floor else 0
    )
    return loader.load(current)


def release_problems(
    releases: ReleaseFolder, trust_store: TrustStore, model_name: str, loaded: LoadedModel
) -> list[str]:
    """How the loaded release disagrees with the operator's record of releases (empty: it is the newest)."""
    records = trust_store.releases(model_name)
    floor = max(records, key=lambda r: r.version, default=None)
    if floor is None:
        return [f"v{loaded.version} of {model_name} was never recorded in the trust store"]
    problems = [
        f"the release record of v{later.version} does not name v{earlier.version} as its predecessor"
        for earlier, later in zip(records, records[1:], strict=False)
        if later.predecessor != earlier.config_digest
    ]
    if loaded.model_dir.name != f"v{loaded.version}":
        problems.append(f"release v{loaded.version} is served from a folder named {loaded.model_dir.name!r}")
    if loaded.version != floor.version:
        problems.append(
            f"rollback: current is v{loaded.version}, but v{floor.version} is the newest on record"
        )
    elif digest_file(loaded.model_dir / CONFIG_FILE) != floor.config_digest:
        problems.append(f"v{loaded.version}'s config is not the one recorded when it was promoted")
    elif loaded.config.get("predecessor", "") != floor.predecessor:
        problems.append(f"v{loaded.version} names another predecessor than the one on record")
    return problems


def release_check(
    key: AssetKey,
    model_name: str,
    architectures: Mapping[str, Callable[[dict], torch.nn.Module]],
) -> AssetChecksDefinition:
    """Blocking check that the published release passes the secure loader and is the newest on record."""

    @asset_check(asset=key, name="release_loads_securely", blocking=True)
    def release_loads_securely(
        context: AssetCheckExecutionContext,
        releases: ResourceParam[ReleaseFolder],
        trust_store: ResourceParam[TrustStore],
    ) -> AssetCheckResult:
        """The current release passes the secure loader and is the newest release on the operator's record.

        Keys come from the operator's trust store, never the release folder, so
        a key planted there is not trusted. A validly signed older release
        pointed at as current, with newer ones deleted or renamed, is a
        rollback: the floor is the trust store's newest record, not the highest
        folder name. A refusal raises an alarm that stays raised until an
        operator acknowledges it. The nightly audit runs this check too.
        """
        subject = f"release/{model_name}"
        try:
            loaded = load_champion(releases, trust_store, model_name, architectures)
            problems = [] if loaded is None else release_problems(releases, trust_store, model_name, loaded)
        except ModelRefused as error:  # the loader's refusal is the evidence
            loaded, problems = None, [str(error)]
        open_alarms = {alarm.reason for alarm in trust_store.open_alarms(subject)}
        for problem in problems:
            if problem not in open_alarms:
                trust_store.raise_alarm(subject, problem)
        alarms = [alarm.reason for alarm in trust_store.open_alarms(subject)]
        if loaded is None and not alarms:
            return AssetCheckResult(passed=True, description="No release has been published yet.")
        return AssetCheckResult(
            passed=not alarms,
            severity=AssetCheckSeverity.ERROR,
            description="; ".join(alarms)[:500] or None,
            metadata={
                "release": str(releases.current(model_name)),
                "version": loaded.version if loaded else -1,
                "signer": loaded.signer if loaded else "",
                "open_alarms": MetadataValue.json(alarms),
            },
        )

    return release_loads_securely
