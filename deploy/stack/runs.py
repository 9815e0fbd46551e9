"""Submit jobs to a running stack and follow the runs its daemon launches.

Runs are submitted through the webserver's GraphQL API, as a person or a CI
job would: over HTTPS to the UI's proxy, signed in as the operator. The
queued run coordinator hands them to the daemon, which launches them
through the code servers. What happened is read back from the
instance's Postgres storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
)
from dagster_graphql import DagsterGraphQLClient
from gql.transport.requests import RequestsHTTPTransport
from requests.auth import HTTPBasicAuth

from deploy.stack.proxy import USERS
from deploy.stack.settings import HOST, Stack

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
_SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!, $after: Float) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(afterTimestamp: $after, limit: 100) { status timestamp runIds } } }
    ... on PythonError { message }
    ... on SensorNotFoundError { message }
  }
}
"""


class StackRuns:
    """The stack's runs: submit one, wait for one, or wait for one the daemon starts by itself.

    The caller's environment must hold the stack's settings (`Stack.pipeline_environment`): the
    instance file reads its database credentials from there.
    """

    def __init__(self, stack: Stack) -> None:
        transport = RequestsHTTPTransport(
            url=f"https://{HOST}:{stack.port('proxy')}/graphql",
            use_json=True,
            timeout=300,
            auth=HTTPBasicAuth("operator", stack.credentials()[USERS["operator"]]),
            verify=str(stack.ca_certificate),
        )
        self.client = DagsterGraphQLClient(HOST, transport=transport)
        self.instance = DagsterInstance.from_config(str(stack.dagster_home))

    def submit(self, location: str, job: str, assets: Sequence[AssetKey] | None = None) -> str:
        """Submit `job` of `location`, or only its `assets` (with their checks); the new run's id."""
        return self.client.submit_job_execution(
            job, repository_location_name=location, repository_name="__repository__", asset_selection=assets
        )

    def wait(self, run_id: str, timeout_s: float = 1200) -> DagsterRun:
        """The run once it has finished; TimeoutError if it has not within `timeout_s`."""
        return self._poll(lambda: self._finished(run_id), timeout_s, f"run {run_id} to finish")

    def run(
        self, location: str, job: str, assets: Sequence[AssetKey] | None = None, timeout_s: float = 1200
    ) -> DagsterRun:
        return self.wait(self.submit(location, job, assets), timeout_s)

    def known(self) -> set[str]:
        """Every run id so far (to tell apart the runs started after it)."""
        return {run.run_id for run in self.instance.get_runs()}

    def next_run(
        self, matches: Callable[[DagsterRun], bool], known: set[str], timeout_s: float
    ) -> DagsterRun | None:
        """The first finished run not in `known` that `matches` (one the daemon launched), or None."""

        def started() -> DagsterRun | None:
            new = [r for r in self.instance.get_runs() if r.run_id not in known and matches(r)]
            return self._finished(new[-1].run_id) if new else None

        try:
            return self._poll(started, timeout_s, "a run the daemon launches")
        except TimeoutError:
            return None

    def launched(self, known: set[str]) -> list[DagsterRun]:
        """Every run started after `known`, oldest first."""
        return [r for r in reversed(self.instance.get_runs()) if r.run_id not in known]

    def sensor_ticks(self, location: str, sensor: str, after: float, count: int, timeout_s: float) -> list:
        """The first `count` evaluations of `sensor` that finished after `after` (a Unix time), each
        with its status and the runs it requested; TimeoutError if the daemon made fewer in time."""
        selector = {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "sensorName": sensor,
        }
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.client._execute(_SENSOR_TICKS, {"selector": selector, "after": after})
            found = answer["sensorOrError"]
            if found["__typename"] != "Sensor":
                raise ValueError(f"No sensor {sensor} in {location}: {found.get('message')}")
            done = [tick for tick in found["sensorState"]["ticks"] if tick["status"] != "STARTED"]
            if len(done) >= count:
                return sorted(done, key=lambda tick: tick["timestamp"])[:count]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sensor} evaluated {len(done)} times in {timeout_s:.0f} s, not {count}.")
            time.sleep(2)

    def check_evaluations(self, run_id: str) -> list[AssetCheckEvaluation]:
        """The asset check evaluations `run_id` logged, oldest first."""
        records = self.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        return [record.dagster_event.event_specific_data for record in records]

    def failed_checks(self, run_id: str) -> list[tuple[AssetKey, str]]:
        """(asset, check) of every check that failed in `run_id` and did not pass there later."""
        last = {(e.asset_key, e.check_name): e.passed for e in self.check_evaluations(run_id)}
        return [check for check, passed in last.items() if not passed]

    def why_failed(self, run: DagsterRun) -> str:
        """What stopped `run`, from its event log: failed steps' errors and failed blocking checks."""
        reasons = []
        for record in self.instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.STEP_FAILURE:
                error = event.step_failure_data.error
                reasons.append(f"step {event.step_key} failed: {error.message.strip() if error else '?'}")
            elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                check = event.event_specific_data
                if not check.passed:
                    reasons.append(f"check {check.asset_key.to_user_string()}:{check.check_name} failed")
            elif event.event_type == DagsterEventType.RUN_FAILURE:
                reasons.append(f"run failed: {record.message}")
        said = "; ".join(reasons) or "no reason logged"
        return f"run {run.run_id} ({run.job_name}, {run.status.value}): {said}"

    def _finished(self, run_id: str) -> DagsterRun | None:
        run = self.instance.get_run_by_id(run_id)
        return run if run is not None and run.status in FINISHED else None

    @staticmethod
    def _poll(probe: Callable[[], DagsterRun | None], timeout_s: float, what: str) -> DagsterRun:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = probe()
            if found is not None:
                return found
            time.sleep(2)
        raise TimeoutError(f"Waited {timeout_s:.0f} s for {what}; the daemon's log is in stack/logs/.")
