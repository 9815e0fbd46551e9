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
    ResourceParam,
    asset,
    asset_check,
)

from resources.loader import SecureModelLoader
from resources.release_folder import ReleaseFolder
from resources.releases import ReleaseSigner
from resources.scratch import ScratchSpace
from resources.signing import CONFIG_FILE
from resources.tables import ModelDir
from resources.tracking import ExperimentTracking


def promote(
    context: AssetExecutionContext,
    model: ModelDir,
    model_name: str,
    *,
    signer: ReleaseSigner,
    releases: ResourceParam[ReleaseFolder],
    tracking: ExperimentTracking,
    scratch: ScratchSpace,
) -> ModelDir:
    """Sign and publish `model` as the next champion release of `model_name`."""
    version = releases.next_version(model_name)
    release = scratch.path(f"release-{model_name}-v{version}")
    shutil.copytree(model.path, release)
    config_path = release / CONFIG_FILE
    run_id = model.details["mlflow_run_id"]
    config = {
        **json.loads(config_path.read_text()),
        "name": model_name,
        "version": version,
        "mlflow_run_id": run_id,
    }
    config_path.write_text(json.dumps(config, sort_keys=True))
    signer.sign(release)
    releases.trust(signer.public_key_pem())
    published = releases.publish(model_name, release, version)

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
        tracking: ExperimentTracking,
        scratch: ScratchSpace,
        model: ModelDir,
    ) -> ModelDir:
        return promote(
            context, model, model_name, signer=signer, releases=releases, tracking=tracking, scratch=scratch
        )

    return _champion


def release_check(
    key: AssetKey,
    model_name: str,
    architectures: Mapping[str, Callable[[dict], torch.nn.Module]],
) -> AssetChecksDefinition:
    """Blocking check that the published release passes the secure loader."""

    @asset_check(asset=key, name="release_loads_securely", blocking=True)
    def release_loads_securely(
        context: AssetCheckExecutionContext, releases: ResourceParam[ReleaseFolder]
    ) -> AssetCheckResult:
        """The current release passes the secure loader (trusted signature, safetensors) and is the newest.

        A validly signed older release pointed at as current is a rollback. The
        nightly audit runs this check too, so a release swapped after promotion
        (a trojan in place of the weights, a re-signed model) is found there.
        """
        current = releases.current(model_name)
        if current is None and not releases.versions(model_name):
            return AssetCheckResult(passed=True, description="No release has been published yet.")
        try:
            loaded = SecureModelLoader(releases.trusted_keys(), architectures).load(current)
        except Exception as error:  # the loader's refusal is the evidence
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata={"release": str(current), "refused": str(error)},
            )
        newest = max(releases.versions(model_name))
        return AssetCheckResult(
            passed=loaded.version == newest,
            severity=AssetCheckSeverity.ERROR,
            description=None
            if loaded.version == newest
            else f"rollback: current points at v{loaded.version}, but v{newest} has been published",
            metadata={
                "release": str(current),
                "version": loaded.version,
                "newest_published": newest,
                "signer": loaded.signer,
            },
        )

    return release_loads_securely
