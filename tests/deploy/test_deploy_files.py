"""deploy/: the Dockerfile, the compose file and the Helm values stay what `make stack` runs.

No Docker engine or cluster is available to the suite, so these files are read, not run. Every check
compares them with the stack's own code: the services `deploy.stack.services.all_services` builds
(built, never started), the settings `Stack` gives each of them, deploy/dagster.yaml and
deploy/workspace.yaml. A check is a function that returns the drift it finds, as sentences;
`test_drift_is_reported` shows each one finding the drift it is there for in an altered copy.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from deploy.compose import credentials, provision
from deploy.stack import objectstore, postgres
from deploy.stack.services import all_services, spark_master
from deploy.stack.settings import HOST, LOCATIONS, REGION, Stack
from resources.runtime import REPO_ROOT, RuntimeHome

DEPLOY = REPO_ROOT / "deploy"
MOTO_ACCOUNT = "123456789012"  # the account moto puts every resource in
PIPELINE_DOCKERFILE = "deploy/Dockerfile"

# Where compose's argv differs from the stack's on purpose: (stack tokens, compose tokens, why).
ARGV_DEVIATIONS = {
    "postgres": (
        ["-c", "unix_socket_directories="],
        [],
        "the image's entrypoint sets the database up over a socket inside the container",
    ),
}
OPERATOR_KEY_WHY = "the operator's signing key never enters the pipeline's containers"
# Variables the stack gives a process that compose withholds on purpose, and why.
COMPOSE_WITHHELD = {
    # The stack gives every process one instance environment; compose gives the hosts to the workspace's
    # readers only (compose_layout_problems checks those).
    **{
        f"PIPELINE_{location.upper()}_GRPC_HOST": "only the daemon and the webservers read the workspace"
        for location in LOCATIONS
    },
    "SPARK_LOCAL_IP": "a container binds its own address; peers reach it by its service name",
    "PATH": "each image sets its own",
}
# Variables whose compose value differs from the stack's beyond hosts, ports and paths, and why.
COMPOSE_VALUES_DIFFER = {
    "PIPELINE_KMS_KEY_URI": "moto gives a new key a random id, so compose names the key by its alias",
}
# Variables the chart hands every pod itself.
CHART_PROVIDED = {"DAGSTER_HOME", "DAGSTER_PG_PASSWORD"}
# Instance settings the Helm values add to deploy/dagster.yaml's, and why.
HELM_ONLY_RUN_MONITORING = {"max_resume_run_attempts": 0}  # a K8s run could be resumed; the stack's cannot
# The chart's instance template does not render a runtime limit; its K8s launcher detects dead run workers.
STACK_ONLY_MONITORING = {"max_runtime_seconds"}
BUILD_TOOLS = {"build-essential", "gcc", "g++", "clang", "make", "cmake"}


def helm_withheld() -> dict[str, str]:
    """Variables the stack gives a code server that the Helm deployments withhold on purpose, and why."""
    workspace = "the chart writes the workspace itself, one server per user deployment"
    return {
        "AWS_CA_BUNDLE": "the cloud's S3 and KMS endpoints present publicly trusted certificates, which the "
        "image's trust store verifies; the private CA would refuse them",
        **{
            f"PIPELINE_{location.upper()}_GRPC_{part}": workspace
            for location in LOCATIONS
            for part in ("HOST", "PORT")
        },
    }


# ---- the stack, as `make stack` would start it -------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """One stack service as `make stack` starts it."""

    name: str
    argv: list[str]
    env: dict[str, str]  # only what the stack gives it: the caller's environment is left out
    cwd: Path | None
    stop_signal: int
    provisioned: bool  # the stack sets it up once it runs (`after_start`)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(RuntimeHome(tmp_path / "home"))


@pytest.fixture
def processes(stack: Stack) -> dict[str, Process]:
    """Every stack service, built and never started, with the environment the stack alone gives it."""
    with pytest.MonkeyPatch.context() as patch:
        # Which PostgreSQL install would run does not matter here: only that the argv runs `postgres`.
        patch.setattr(postgres, "binaries", lambda: Path("/usr/lib/postgresql/17/bin"))
        for name in list(os.environ):
            patch.delenv(name)
        return {
            service.name: Process(
                service.name,
                list(service.argv),
                dict(service.env()),
                service.cwd,
                service.stop_signal,
                service.after_start is not None,
            )
            for service in all_services(stack)
        }


def required_names(stack: Stack, process: Process) -> set[str]:
    """The variables a deployment must give `process`: least privilege over what the stack gives it.

    The stack hands every process its whole environment. Deployed, only the code servers (where runs
    execute) get the pipeline's settings and credentials; the daemon and webserver get what the
    instance and workspace files read; MLflow the object store's; Spark's daemons the project's path.
    What a service is given beyond the shared environment (MLflow's store, Spark's home) it keeps.
    """
    shared = set(stack.pipeline_environment()) | {"PYTHONPATH"}
    if process.name.startswith("code-server-"):
        role = shared
    elif process.name in ("dagster-daemon", "dagster-webserver", "dagster-webserver-read-only"):
        role = set(stack.instance_environment()) | {"PYTHONPATH"}
    elif process.name == "mlflow":
        role = set(stack.aws_environment())
    elif process.name.startswith("spark-"):
        role = {"PYTHONPATH"}
    else:
        role = set()
    return (set(process.env) & role) | (set(process.env) - shared)


# ---- reading the files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """What deploy/Dockerfile's final stage gives every container started from it."""

    env: dict[str, str]
    workdir: str
    user: str


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each Dockerfile instruction, continuations joined, comments left out."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(line.split(None, 1)[0].upper(), (line.split(None, 1) + [""])[1]) for line in logical]


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, the ones before the first FROM (global ARGs) first."""
    result: list[list[tuple[str, str]]] = [[]]
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, arguments))
    return result


def read_image(text: str) -> Image:
    env: dict[str, str] = {}
    workdir = user = ""
    for keyword, arguments in stages(text)[-1]:
        if keyword == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(arguments))
        elif keyword == "WORKDIR":
            workdir = arguments
        elif keyword == "USER":
            user = arguments
    return Image(env, workdir, user)


def commands(arguments: str) -> list[str]:
    return [command.strip() for command in re.split(r"&&|;", arguments)]


def apt_packages(command: str) -> set[str]:
    words = command.split()
    if words[:1] != ["apt-get"] or "install" not in words:
        return set()
    return {word for word in words[words.index("install") + 1 :] if not word.startswith("-")}


@dataclass
class Files:
    """The deployment files, parsed: altered copies of it show the checks failing."""

    dockerfile: str
    compose: dict[str, Any]
    workspace: dict[str, Any]
    instance: dict[str, Any]
    helm: dict[str, Any]
    credentials: dict[str, set[str]]  # each credentials file compose can be given -> what it holds

    @property
    def image(self) -> Image:
        return read_image(self.dockerfile)


def env_file_names(content: bytes) -> set[str]:
    return {line.split("=", 1)[0] for line in content.decode().splitlines() if "=" in line}


@pytest.fixture
def files(stack: Stack) -> Files:
    def load(path: Path) -> dict[str, Any]:
        return yaml.safe_load(path.read_text())

    return Files(
        dockerfile=(DEPLOY / "Dockerfile").read_text(),
        compose=load(DEPLOY / "compose.yaml"),
        workspace=load(DEPLOY / "workspace.yaml"),
        instance=load(DEPLOY / "dagster.yaml"),
        helm=load(DEPLOY / "helm" / "values.yaml"),
        credentials={
            name: env_file_names(content) if name.endswith(".env") else set()
            for name, content in credentials.files(stack).items()
        },
    )


# ---- comparing hosts, ports and paths ----------------------------------------------------------------

HOST_FLAGS = {"-h", "-H", "--host"}
URL = re.compile(
    r"(?P<scheme>[a-z][\w+.-]*)://(?P<user>[^@/]*@)?(?P<host>[^:/@]+)(?::(?P<port>\d+))?(?P<rest>.*)"
)


@dataclass(frozen=True)
class Places:
    """How one deployment names hosts, ports and the repository, so that argv and values compare."""

    hosts: frozenset[str]
    ports: frozenset[str]
    repo: str

    def value(self, token: str, host: bool = True) -> str:
        """`token` with its host, port and repository path named generically; a bare word is taken for
        a host only where one stands (`host`): in an argv, after a host flag."""
        if " " in token:  # options handed on to another program as one argument (`--uvicorn-opts`)
            return " ".join(self.value(part, host) for part in shlex.split(token))
        url = URL.fullmatch(token)
        if url:
            port = f":{self.value(url['port'])}" if url["port"] else ""
            return f"{url['scheme']}://{url['user'] or ''}{self.value(url['host'])}{port}{url['rest']}"
        if "=" in token and not token.startswith(("-", "/")):  # key=value, as Postgres's -c takes them
            key, value = token.split("=", 1)
            return f"{key}={self.value(value)}" if value else token
        if host and token in self.hosts:
            return "<host>"
        if token in self.ports:
            return "<port>"
        if token == self.repo or token.startswith(self.repo + "/"):
            return "<repo>" + token[len(self.repo) :]
        return "<path>" if token.startswith("/") else token

    def argv(self, argv: Iterable[str]) -> list[str]:
        first, *rest = argv
        program = PurePosixPath(first).name
        program = "python" if re.fullmatch(r"python3(\.\d+)?", program) else program
        flags = [first, *rest[:-1]]  # the token before each one
        return [
            program,
            *(self.value(t, host=flag in HOST_FLAGS) for flag, t in zip(flags, rest, strict=True)),
        ]


def stack_places(stack: Stack) -> Places:
    # The stack's ports are consecutive from its base port.
    ports = frozenset(str(port) for port in range(stack.base_port, stack.base_port + 100))
    return Places(frozenset({HOST}), ports, str(REPO_ROOT))


def container_port(entry: str) -> str:
    return str(entry).split(":")[-1].split("/")[0]


def compose_places(compose: dict[str, Any], image: Image) -> Places:
    services = compose["services"]
    ports = {container_port(entry) for service in services.values() for entry in service.get("ports", [])}
    ports |= {str(entry) for service in services.values() for entry in service.get("expose", [])}
    return Places(frozenset({*services, "0.0.0.0"}), frozenset(ports), image.workdir)  # noqa: S104


# ---- the Dockerfile ----------------------------------------------------------------------------------


def dockerfile_problems(text: str) -> list[str]:
    """A non-root final stage from Python 3.11 with Java 17+, the instance file in DAGSTER_HOME, no
    compiler and no ENTRYPOINT; every pip install pinned by constraints.txt; PyTorch's index for torch
    alone."""
    problems = []
    global_args = dict(
        arg.split("=", 1) for keyword, arg in stages(text)[0] if keyword == "ARG" and "=" in arg
    )
    final = stages(text)[-1]
    base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], ""), final[0][1].split()[0])
    if not base.startswith("python:3.11"):
        problems.append(f"the final stage is built from {base}, not Python 3.11")
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage does not switch to a non-root USER")
    if any(keyword == "ENTRYPOINT" for keyword, _ in final):
        problems.append(
            "the final stage has an ENTRYPOINT: a compose command would no longer be the whole argv"
        )
    runs = [command for keyword, arguments in final if keyword == "RUN" for command in commands(arguments)]
    final_packages = set().union(*map(apt_packages, runs))
    if final_packages & BUILD_TOOLS:
        problems.append(f"the final stage installs build tools: {sorted(final_packages & BUILD_TOOLS)}")
    if not any(
        re.fullmatch(r"openjdk-(1[7-9]|[2-9]\d)-jre(-headless)?", package) for package in final_packages
    ):
        problems.append("the final stage installs no Java 17+ runtime for Spark")
    for stage in stages(text):
        for command in (c for keyword, arguments in stage if keyword == "RUN" for c in commands(arguments)):
            if "pip install" not in command:
                continue
            if "-c constraints.txt" not in command:
                problems.append(f"pip installs without -c constraints.txt: {command}")
            if "download.pytorch.org" in command and (
                "--no-deps" not in command or command.split()[-1] != "torch"
            ):
                problems.append(f"PyTorch's index may serve more than torch: {command}")
    instance = read_image(text).env.get("DAGSTER_HOME", "") + "/dagster.yaml"
    copied = [a for keyword, a in final if keyword in ("RUN", "COPY") and "deploy/dagster.yaml" in a]
    if not any(instance in arguments for arguments in copied):
        problems.append(f"deploy/dagster.yaml is not put at {instance}")
    return problems


# ---- compose -----------------------------------------------------------------------------------------


def uses_pipeline_image(service: dict[str, Any]) -> bool:
    return (service.get("build") or {}).get("dockerfile") == PIPELINE_DOCKERFILE


def compose_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: the project's image has no ENTRYPOINT, and Postgres's runs its command."""
    return [*(service.get("entrypoint") or []), *(service.get("command") or [])]


def env_files(service: dict[str, Any]) -> list[str]:
    entries = service.get("env_file") or []
    entries = [entries] if isinstance(entries, str | dict) else entries
    return [PurePosixPath(entry["path"] if isinstance(entry, dict) else entry).name for entry in entries]


def inline_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(entry.split("=", 1) for entry in environment)
    return {name: str(value) for name, value in environment.items()}


def provided_names(service: dict[str, Any], files: Files) -> set[str]:
    names = set(inline_environment(service))
    for name in env_files(service):
        names |= files.credentials.get(name, set())
    return names | (set(files.image.env) if uses_pipeline_image(service) else set())


def compose_service_problems(processes: dict[str, Process], files: Files) -> list[str]:
    """One compose service per stack service, one-shot `<name>-provision` services for what the stack
    sets up once a service runs, and the stack's folder and stop signal."""
    services = files.compose["services"]
    expected = set(processes) | {f"{name}-provision" for name, p in processes.items() if p.provisioned}
    problems = [f"compose has no service {name}" for name in sorted(expected - set(services))]
    problems += [
        f"compose service {name} is not a stack service" for name in sorted(set(services) - expected)
    ]
    for name, process in processes.items():
        service = services.get(name)
        if service is None:
            continue
        if process.cwd == REPO_ROOT:
            folder = service.get("working_dir") or (
                files.image.workdir if uses_pipeline_image(service) else ""
            )
            if not folder or folder != files.image.workdir:
                problems.append(f"{name} does not run in the repository's folder, as the stack runs it")
        if process.stop_signal != signal.SIGTERM and service.get("stop_signal") != process.stop_signal.name:
            problems.append(f"{name} is not stopped with {process.stop_signal.name}, as the stack stops it")
    return problems


def compose_argv_problems(stack: Stack, processes: dict[str, Process], files: Files) -> list[str]:
    """Each service runs the stack's argv, hosts, ports and paths aside (and `ARGV_DEVIATIONS`)."""
    ours, theirs = stack_places(stack), compose_places(files.compose, files.image)
    problems = []
    for name, process in processes.items():
        service = files.compose["services"].get(name)
        if service is None:
            continue
        expected = ours.argv(process.argv)
        if name in ARGV_DEVIATIONS:
            old, new, _ = ARGV_DEVIATIONS[name]
            at = next((i for i in range(len(expected)) if expected[i : i + len(old)] == old), None)
            if at is None:
                problems.append(f"{name}: the deviation {old} -> {new} no longer applies to the stack's argv")
                continue
            expected[at : at + len(old)] = new
        actual = theirs.argv(compose_argv(service))
        if actual != expected:
            problems.append(f"{name} runs {actual}, the stack {expected}")
    return problems


def compose_environment_problems(stack: Stack, processes: dict[str, Process], files: Files) -> list[str]:
    """Every variable the stack gives a process (least privilege aside, `required_names`) reaches the
    same compose service, by name, with the stack's value hosts, ports and paths aside."""
    services = files.compose["services"]
    ours, theirs = stack_places(stack), compose_places(files.compose, files.image)
    compared = set(COMPOSE_VALUES_DIFFER) | set().union(*files.credentials.values())  # never printed
    problems, withheld_used = [], set()
    for name, process in processes.items():
        service = services.get(name)
        if service is None:
            continue
        required = required_names(stack, process)
        withheld_used |= required & set(COMPOSE_WITHHELD)
        for missing in sorted(required - set(COMPOSE_WITHHELD) - provided_names(service, files)):
            problems.append(f"{name} is not given {missing}")
        for variable, value in inline_environment(service).items():
            if variable in process.env and variable not in compared:
                if theirs.value(value) != ours.value(process.env[variable]):
                    problems.append(f"{name}: {variable}={value} is not the stack's {process.env[variable]}")
    problems += [
        f"{v} is withheld but no stack process is given it" for v in set(COMPOSE_WITHHELD) - withheld_used
    ]
    for service in services.values():
        for unknown in sorted(set(env_files(service)) - set(files.credentials)):
            problems.append(f"{unknown} is not a file `python -m deploy.compose.credentials` writes")
    return problems


def compose_privilege_problems(files: Files) -> list[str]:
    """Credentials only from the credentials files, never inline; the pipeline's own (ledger, Spark) only
    to the code servers; the operator's key to no service; UIs published on 127.0.0.1 only."""
    services = files.compose["services"]
    secret_names = set().union(*files.credentials.values())
    pipeline_secrets = files.credentials["pipeline.env"]
    problems = []
    for name, service in services.items():
        inline = set(inline_environment(service))
        problems += [f"{name} sets the credential {v} inline" for v in sorted(inline & secret_names)]
        provided = provided_names(service, files)
        if "PIPELINE_OPERATOR_KEY" in provided:
            problems.append(f"{name} is given PIPELINE_OPERATOR_KEY")
        if not name.startswith("code-server-"):
            problems += [f"{name} is given the pipeline's {v}" for v in sorted(provided & pipeline_secrets)]
        for entry in service.get("ports", []):
            if not str(entry).startswith("127.0.0.1:"):
                problems.append(f"{name} publishes {entry} beyond 127.0.0.1")
    for secret, spec in (files.compose.get("secrets") or {}).items():
        if PurePosixPath(spec.get("file", "")).name not in files.credentials:
            problems.append(
                f"the secret {secret} is not a file `python -m deploy.compose.credentials` writes"
            )
    return problems


def compose_layout_problems(files: Files) -> list[str]:
    """The pipeline's home and trust store on volumes (state outlives a container), the home shared with
    the Spark worker (executors read the driver's files by path); the workspace's locations, ports and
    hosts; Spark from the image's SPARK_HOME; moto at the version constraints.txt pins."""
    services, image = files.compose["services"], files.image
    home, trust = image.env["PIPELINE_HOME"], image.env["PIPELINE_TRUST_STORE"]
    problems = []

    def mounts(service: dict[str, Any]) -> set[str]:
        return {str(volume).split(":")[1] for volume in service.get("volumes", []) if ":" in str(volume)}

    for location in LOCATIONS:
        service = services.get(f"code-server-{location}", {})
        for path in sorted({home, trust} - mounts(service)):
            problems.append(f"code-server-{location} keeps {path} in the container, not on a volume")
    if home not in mounts(services.get("spark-worker", {})):
        problems.append(f"spark-worker does not mount {home}, where the driver's files are")

    def locations(workspace: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {
            entry["grpc_server"]["location_name"]: entry["grpc_server"] for entry in workspace["load_from"]
        }

    served = locations(files.workspace)
    if set(served) != set(LOCATIONS):
        problems.append(f"deploy/workspace.yaml serves {sorted(served)}, not {sorted(LOCATIONS)}")
    for location, server in served.items():
        host = server["host"]["env"]
        for reader in ("dagster-daemon", "dagster-webserver", "dagster-webserver-read-only"):
            given = inline_environment(services.get(reader, {})).get(host)
            if given != f"code-server-{location}":
                problems.append(f"{reader}: {host}={given}, not code-server-{location}")
    spark_class = image.env["SPARK_HOME"] + "/bin/spark-class"
    for name in ("spark-master", "spark-worker"):
        if compose_argv(services.get(name, {}))[:1] != [spark_class]:
            problems.append(f"{name} does not run {spark_class}")
    moto = re.search(r"^moto==(\S+)$", (REPO_ROOT / "constraints.txt").read_text(), re.MULTILINE)
    if services.get("s3", {}).get("image") != f"motoserver/moto:{moto[1] if moto else '?'}":
        problems.append(f"s3 does not run moto {moto[1] if moto else '?'}, the version constraints.txt pins")
    kms_key = f"aws-kms://arn:aws:kms:{REGION}:{MOTO_ACCOUNT}:{objectstore.KEY_ALIAS}"
    for location in LOCATIONS:
        given = inline_environment(services.get(f"code-server-{location}", {})).get("PIPELINE_KMS_KEY_URI")
        if given != kms_key:
            problems.append(f"code-server-{location}: PIPELINE_KMS_KEY_URI={given}, not {kms_key}")
    return problems


# ---- Helm --------------------------------------------------------------------------------------------


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def chart_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The instance settings the chart writes from `values` (its templates/helpers/instance/*.tpl)."""
    daemon, logs = values["dagsterDaemon"], values["computeLogManager"]
    coordinator = daemon["runCoordinator"]
    queued = coordinator["config"]["queuedRunCoordinator"]
    s3_logs = logs["config"]["s3ComputeLogManager"]
    monitoring = daemon.get("runMonitoring") or {}
    return {
        "run_coordinator": {
            "class": coordinator["type"] if coordinator["enabled"] else None,
            "config": {snake(key): value for key, value in queued.items()},
        },
        "run_monitoring": {snake(key): value for key, value in monitoring.items()}
        if monitoring.get("enabled")
        else {},
        "compute_logs": {
            "class": logs["type"],
            "config": {snake(key): value for key, value in s3_logs.items()},
        },
        "telemetry": values["telemetry"],
    }


def env_list(entries: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in entries or []}


def helm_instance_problems(stack: Stack, files: Files) -> list[str]:
    """The chart's instance settings are deploy/dagster.yaml's: queued runs, run monitoring, compute logs
    in the bucket, telemetry off, the same database role, database and driver; runs as Kubernetes Jobs."""
    values, instance = files.helm, files.instance
    chart = chart_instance(values)
    problems = []
    if chart["run_coordinator"] != {k: instance["run_coordinator"][k] for k in ("class", "config")}:
        problems.append(f"Helm's run coordinator {chart['run_coordinator']} is not deploy/dagster.yaml's")
    stack_monitoring = {
        key: value for key, value in instance["run_monitoring"].items() if key not in STACK_ONLY_MONITORING
    }
    if chart["run_monitoring"] != {**stack_monitoring, **HELM_ONLY_RUN_MONITORING}:
        problems.append(f"Helm's run monitoring {chart['run_monitoring']} is not deploy/dagster.yaml's")
    ours, theirs = instance["compute_logs"], chart["compute_logs"]
    if theirs["class"] != ours["class"] or theirs["config"] != ours["config"]:
        problems.append(f"Helm's compute logs {theirs} are not deploy/dagster.yaml's {ours}")
    if chart["telemetry"] != instance["telemetry"]:
        problems.append(f"Helm's telemetry {chart['telemetry']} is not deploy/dagster.yaml's")
    database = values["postgresql"]
    setting = stack.instance_environment()
    db_config = instance["storage"]["postgres"]["postgres_db"]
    if (
        database.get("enabled")
        or database.get("postgresqlScheme") != db_config["scheme"]
        or database.get("postgresqlParams") != db_config["params"]
    ):
        problems.append(
            "Helm's instance database is not an external Postgres reached as deploy/dagster.yaml's"
        )
    if (database["postgresqlUsername"], database["postgresqlDatabase"]) != (
        setting["DAGSTER_PG_USER"],
        setting["DAGSTER_PG_DB"],
    ):
        problems.append("Helm's instance database role or name is not the stack's")
    if values["runLauncher"]["type"] != "K8sRunLauncher":
        problems.append("Helm does not launch runs as Kubernetes Jobs (K8sRunLauncher)")
    return problems


def restricted(container: dict[str, Any] | None, pod: dict[str, Any] | None, image: Image) -> bool:
    """Non-root as the image's own account, a read-only root filesystem, no capability, no escalation."""
    container, pod = container or {}, pod or {}
    return (
        container.get("runAsNonRoot") is True
        and str(pod.get("runAsUser")) == image.user.split(":")[0]
        and container.get("readOnlyRootFilesystem") is True
        and container.get("allowPrivilegeEscalation") is False
        and "ALL" in (container.get("capabilities") or {}).get("drop", [])
    )


def helm_deployment_problems(stack: Stack, processes: dict[str, Process], files: Files) -> list[str]:
    """One user deployment per location, running the stack's code-server argv, with its own service
    account and secrets, a restricted security context, the stack's variables by name (credentials
    from secrets only), and the pipeline's home and trust store on volumes its runs mount too."""
    values, image = files.helm, files.image
    deployments = {d["name"]: d for d in values["dagster-user-deployments"]["deployments"]}
    problems = []
    if set(deployments) != set(LOCATIONS):
        problems.append(f"Helm deploys {sorted(deployments)}, the stack {sorted(LOCATIONS)}")
    accounts = [(d.get("serviceAccount") or {}).get("name") for d in deployments.values()]
    if None in accounts or len(set(accounts)) != len(accounts):
        problems.append(f"Helm's user deployments do not each have their own service account: {accounts}")
    credential_names = set().union(*files.credentials.values())
    secrets_of: dict[str, set[str]] = {}
    for name, deployment in deployments.items():
        process = processes.get(f"code-server-{name}")
        if process is None:
            continue
        port = str(deployment["port"])
        argv = ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", port]  # noqa: S104 - the chart's
        argv += deployment.get("codeServerArgs") or []
        places = Places(frozenset({"0.0.0.0"}), frozenset({port}), image.workdir)  # noqa: S104
        if places.argv(argv) != stack_places(stack).argv(process.argv):
            problems.append(f"Helm's {name} runs {argv}, the stack {process.argv}")
        if not (deployment.get("serviceAccount") or {}).get("create"):
            problems.append(f"Helm's {name} does not create its own service account")
        if not restricted(deployment.get("securityContext"), deployment.get("podSecurityContext"), image):
            problems.append(f"Helm's {name} is not restricted (the image's account, read-only, no privilege)")
        if not (deployment.get("includeConfigInLaunchedRuns") or {}).get("enabled"):
            problems.append(f"Helm's {name} runs are not given its environment and volumes")
        env = env_list(deployment.get("env"))
        provided = set(env) | CHART_PROVIDED | set(image.env)
        for missing in sorted(required_names(stack, process) - set(helm_withheld()) - provided):
            problems.append(f"Helm's {name} is not given {missing}")
        for variable in sorted(set(env) & credential_names):
            if "secretKeyRef" not in (env[variable].get("valueFrom") or {}):
                problems.append(f"Helm's {name} takes {variable} from its values, not from a secret")
        secrets_of[name] = {
            entry["valueFrom"]["secretKeyRef"]["name"]
            for entry in env.values()
            if "secretKeyRef" in (entry.get("valueFrom") or {})
        }
        if env.get("DAGSTER_PG_HOST", {}).get("value") != values["postgresql"]["postgresqlHost"]:
            problems.append(f"Helm's {name} reaches another instance database than the chart's")
        mounts = {m["name"]: m["mountPath"] for m in deployment.get("volumeMounts") or []}
        claims = {v["name"] for v in deployment.get("volumes") or [] if "persistentVolumeClaim" in v}
        for path in (image.env["PIPELINE_HOME"], image.env["PIPELINE_TRUST_STORE"]):
            if path not in {mounts[volume] for volume in claims & set(mounts)}:
                problems.append(f"Helm's {name} keeps {path} in the pod, not on a persistent volume")
    names = sorted(secrets_of)
    shared = {
        secret
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        for secret in secrets_of[a] & secrets_of[b]
    }
    if shared:
        problems.append(f"Helm's user deployments share the secrets {sorted(shared)}")
    return problems


def helm_pod_problems(files: Files) -> list[str]:
    """The webserver, the daemon and the runs are restricted like the code servers and run the same image,
    and every pod that loads the chart's instance is given the variables it reads."""
    values, image = files.helm, files.image
    deployments = values["dagster-user-deployments"]["deployments"]
    problems = []
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_pod = ((launcher.get("runK8sConfig") or {}).get("podSpecConfig") or {}).get("securityContext")
    if not restricted(launcher.get("securityContext"), run_pod, image):
        problems.append("Helm's run pods are not restricted like the code servers")
    read = {
        value["env"]
        for value in values["computeLogManager"]["config"]["s3ComputeLogManager"].values()
        if isinstance(value, dict) and "env" in value
    }
    for part in ("dagsterWebserver", "dagsterDaemon"):
        component = values[part]
        if not restricted(component.get("securityContext"), component.get("podSecurityContext"), image):
            problems.append(f"Helm's {part} is not restricted like the code servers")
        if any(component.get("image") != deployment.get("image") for deployment in deployments):
            problems.append(f"Helm's {part} does not run the code servers' image")
        problems += [
            f"Helm's {part} is not given {v}" for v in sorted(read - set(env_list(component.get("env"))))
        ]
    for deployment in deployments:
        missing = sorted(read - set(env_list(deployment.get("env"))))
        problems += [f"Helm's {deployment['name']} is not given {variable}" for variable in missing]
    return problems


def all_problems(stack: Stack, processes: dict[str, Process], files: Files) -> list[str]:
    return [
        *dockerfile_problems(files.dockerfile),
        *compose_service_problems(processes, files),
        *compose_argv_problems(stack, processes, files),
        *compose_environment_problems(stack, processes, files),
        *compose_privilege_problems(files),
        *compose_layout_problems(files),
        *helm_instance_problems(stack, files),
        *helm_deployment_problems(stack, processes, files),
        *helm_pod_problems(files),
    ]


# ---- the tests ---------------------------------------------------------------------------------------


def test_the_dockerfile_builds_a_pinned_non_root_image_without_compilers(files: Files):
    """Protects against an image that runs as root, ships a compiler, installs a version constraints.txt
    does not pin, or takes anything but torch from PyTorch's index."""
    assert dockerfile_problems(files.dockerfile) == []


def test_compose_runs_the_stacks_services_with_its_argv(stack, processes, files):
    """Protects against compose running a service the stack does not, or another program, module, flag
    or location than `make stack` runs."""
    assert compose_service_problems(processes, files) == []
    assert compose_argv_problems(stack, processes, files) == []


def test_compose_gives_each_service_the_stacks_variables_and_values(stack, processes, files):
    """Protects against a compose service missing a setting the stack gives it (a new one included), or
    given another value than the stack's, hosts, ports and paths aside."""
    assert compose_environment_problems(stack, processes, files) == []


def test_compose_keeps_credentials_to_their_holders_and_ports_on_loopback(files):
    """Protects against a credential written into compose.yaml, the pipeline's credentials reaching a
    service that runs no pipeline code, the operator's key in any container, and a UI on the network."""
    assert compose_privilege_problems(files) == []


def test_compose_keeps_state_on_volumes_and_serves_the_stacks_locations(files):
    """Protects against state kept inside a container (gone with it), a Spark worker that cannot read the
    driver's files, a workspace serving other locations, and another moto or KMS key than provisioned."""
    assert compose_layout_problems(files) == []


def test_helm_values_make_deploy_dagster_yamls_instance(stack, files):
    """Protects against the chart writing another instance than deploy/dagster.yaml: more runs at once,
    other run monitoring, logs elsewhere or unencrypted, telemetry on, another database or driver."""
    assert helm_instance_problems(stack, files) == []


def test_helm_deploys_each_location_restricted_with_its_own_identity(stack, processes, files):
    """Protects against a location missing or loading another module, locations sharing an identity or a
    secret, a pod running as root or writing its root filesystem, a credential in the values, a setting
    the stack gives missing, and state kept in a pod."""
    assert helm_deployment_problems(stack, processes, files) == []
    assert helm_pod_problems(files) == []


def _service(files: Files, name: str) -> dict[str, Any]:
    return files.compose["services"][name]


def _deployment(files: Files, name: str) -> dict[str, Any]:
    return next(d for d in files.helm["dagster-user-deployments"]["deployments"] if d["name"] == name)


def _drop_env(entries: list[dict[str, Any]], name: str) -> None:
    entries[:] = [entry for entry in entries if entry["name"] != name]


def _set_env(entries: list[dict[str, Any]], name: str, entry: dict[str, Any]) -> None:
    _drop_env(entries, name)
    entries.append({"name": name, **entry})


# Each drift: a change to a copy of the files, and what the checks must then report.
DRIFTS: dict[str, tuple[Callable[[Files], object], str]] = {}


def drift(expected: str) -> Callable[[Callable[[Files], object]], Callable[[Files], object]]:
    def register(change: Callable[[Files], object]) -> Callable[[Files], object]:
        DRIFTS[change.__name__] = (change, expected)
        return change

    return register


@drift("non-root USER")
def dockerfile_runs_as_root(f: Files):
    f.dockerfile = f.dockerfile.replace("USER 10001:10001", "USER root")


@drift("build tools: ['gcc']")
def dockerfile_ships_a_compiler(f: Files):
    f.dockerfile = f.dockerfile.replace("openjdk-17-jre-headless", "openjdk-17-jre-headless gcc")


@drift("without -c constraints.txt")
def dockerfile_installs_unpinned(f: Files):
    f.dockerfile = f.dockerfile.replace("pip install -c constraints.txt", "pip install")


@drift("ENTRYPOINT")
def dockerfile_wraps_commands(f: Files):
    f.dockerfile += 'ENTRYPOINT ["dagster"]\n'


@drift("PyTorch's index may serve more than torch")
def dockerfile_takes_dependencies_from_pytorch(f: Files):
    f.dockerfile = f.dockerfile.replace("--no-deps ", "")


@drift("compose has no service spark-worker")
def compose_loses_a_service(f: Files):
    f.compose["services"].pop("spark-worker")


@drift("code-server-healthcare runs")
def compose_loads_another_module(f: Files):
    command = _service(f, "code-server-healthcare")["command"]
    command[command.index("pipelines.healthcare")] = "pipelines.ecommerce"


@drift("code-server-ecommerce is not given PIPELINE_MLFLOW_URI")
def compose_drops_a_variable(f: Files):
    _service(f, "code-server-ecommerce")["environment"].pop("PIPELINE_MLFLOW_URI")


@drift("DAGSTER_PG_USER=root is not the stack's")
def compose_changes_a_value(f: Files):
    _service(f, "dagster-daemon")["environment"]["DAGSTER_PG_USER"] = "root"


@drift("not stopped with SIGINT")
def compose_stops_postgres_slowly(f: Files):
    _service(f, "postgres").pop("stop_signal")


@drift("dagster-webserver is given the pipeline's SPARK_AUTH_SECRET")
def compose_spreads_a_credential(f: Files):
    _service(f, "dagster-webserver")["env_file"].append("compose/secrets/pipeline.env")


@drift("mlflow sets the credential AWS_SECRET_ACCESS_KEY inline")
def compose_inlines_a_credential(f: Files):
    _service(f, "mlflow")["environment"]["AWS_SECRET_ACCESS_KEY"] = "x"  # noqa: S105 - a drift, not a secret


@drift("publishes 3000:3000 beyond 127.0.0.1")
def compose_publishes_on_every_interface(f: Files):
    _service(f, "dagster-webserver")["ports"] = ["3000:3000"]


@drift("postgres runs")
def compose_postgres_without_tls(f: Files):
    _service(f, "postgres")["command"].remove("ssl=on")


@drift("dagster-webserver-read-only runs")
def compose_viewers_ui_can_write(f: Files):
    _service(f, "dagster-webserver-read-only")["command"].remove("--read-only")


@drift("dagster-webserver-read-only is not given PGSSLROOTCERT")
def compose_viewers_ui_without_the_ca(f: Files):
    del _service(f, "dagster-webserver-read-only")["environment"]["PGSSLROOTCERT"]


@drift("Helm's instance database is not an external Postgres")
def helm_instance_without_tls(f: Files):
    f.helm["postgresql"]["postgresqlParams"] = {}


@drift("spark-worker does not mount")
def compose_worker_loses_the_home(f: Files):
    _service(f, "spark-worker")["volumes"] = ["spark-work:/var/lib/spark/work"]


@drift("s3 does not run moto")
def compose_runs_another_moto(f: Files):
    _service(f, "s3")["image"] = "motoserver/moto:latest"


@drift("Helm's run coordinator")
def helm_runs_more_at_once(f: Files):
    f.helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] = 3


@drift("Helm's run monitoring")
def helm_polls_runs_less_often(f: Files):
    f.helm["dagsterDaemon"]["runMonitoring"]["pollIntervalSeconds"] = 120


@drift("Helm's compute logs")
def helm_moves_the_logs(f: Files):
    f.helm["computeLogManager"]["config"]["s3ComputeLogManager"]["prefix"] = "logs"


@drift("Helm's telemetry")
def helm_turns_telemetry_on(f: Files):
    f.helm["telemetry"]["enabled"] = True


@drift("Helm's healthcare runs")
def helm_loads_another_module(f: Files):
    _deployment(f, "healthcare")["codeServerArgs"][1] = "pipelines.ecommerce"


@drift("Helm deploys")
def helm_loses_a_location(f: Files):
    f.helm["dagster-user-deployments"]["deployments"].pop()


@drift("own service account")
def helm_shares_the_service_account(f: Files):
    _deployment(f, "ecommerce")["serviceAccount"] = {"create": False}


@drift("Helm's healthcare is not restricted")
def helm_writes_the_root_filesystem(f: Files):
    context = _deployment(f, "healthcare")["securityContext"]
    _deployment(f, "healthcare")["securityContext"] = {**context, "readOnlyRootFilesystem": False}


@drift("Helm's ecommerce takes SPARK_AUTH_SECRET from its values")
def helm_writes_a_secret_into_values(f: Files):
    _set_env(_deployment(f, "ecommerce")["env"], "SPARK_AUTH_SECRET", {"value": "x"})


@drift("share the secrets ['pipeline-ecommerce']")
def helm_shares_a_secret(f: Files):
    reference = {"secretKeyRef": {"name": "pipeline-ecommerce", "key": "SPARK_AUTH_SECRET"}}
    _set_env(_deployment(f, "healthcare")["env"], "SPARK_AUTH_SECRET", {"valueFrom": reference})


@drift("Helm's ecommerce is not given PIPELINE_STORE_URL")
def helm_drops_a_variable(f: Files):
    _drop_env(_deployment(f, "ecommerce")["env"], "PIPELINE_STORE_URL")


@drift("Helm's run pods are not restricted")
def helm_runs_as_root(f: Files):
    launcher = f.helm["runLauncher"]["config"]["k8sRunLauncher"]
    launcher["runK8sConfig"]["podSpecConfig"]["securityContext"] = {"runAsUser": 0}


@drift("Helm's dagsterWebserver is not given DAGSTER_COMPUTE_LOG_BUCKET")
def helm_webserver_cannot_read_the_logs(f: Files):
    _drop_env(f.helm["dagsterWebserver"]["env"], "DAGSTER_COMPUTE_LOG_BUCKET")


@drift("deploy/workspace.yaml serves ['ecommerce']")
def workspace_loses_a_location(f: Files):
    f.workspace["load_from"].pop()


@drift("dagster-webserver: PIPELINE_HEALTHCARE_GRPC_HOST=code-server-ecommerce, not code-server-healthcare")
def compose_points_a_location_at_the_other_server(f: Files):
    f.compose["services"]["dagster-webserver"]["environment"]["PIPELINE_HEALTHCARE_GRPC_HOST"] = (
        "code-server-ecommerce"
    )


@pytest.mark.parametrize("name", list(DRIFTS))
def test_drift_is_reported(stack, processes, files, name):
    """Each check finds the drift it is there for, in an altered copy of the files."""
    change, expected = DRIFTS[name]
    altered = copy.deepcopy(files)
    change(altered)
    problems = all_problems(stack, processes, altered)
    assert any(expected in problem for problem in problems), problems


def test_a_withheld_variable_the_stack_no_longer_gives_is_reported(stack, processes, files):
    """Withholding a variable is a decision about one the stack gives: if the stack stops, so must it."""
    for name, process in processes.items():
        processes[name] = replace(
            process, env={k: v for k, v in process.env.items() if k != "SPARK_LOCAL_IP"}
        )
    problems = compose_environment_problems(stack, processes, files)
    assert "SPARK_LOCAL_IP is withheld but no stack process is given it" in problems


# ---- compose's credentials and set-up ------------------------------------------------------------------


def test_compose_credentials_are_the_stacks_split_by_holder(stack: Stack, tmp_path: Path):
    """The files hold the stack's own secrets and Spark settings, reach Postgres as the stack's roles,
    and are never overwritten (Postgres keeps the first passwords in its volume)."""
    content = credentials.files(stack)
    master = spark_master(stack)
    properties = Path(master.argv[list(master.argv).index("--properties-file") + 1])
    assert content["spark-stack.conf"] == properties.read_bytes()
    setting, password = stack.pipeline_environment(), stack.credentials()
    ledger = dict(line.split("=", 1) for line in content["pipeline.env"].decode().splitlines())
    places = Places(frozenset({HOST, "postgres"}), frozenset({str(stack.port("postgres")), "5432"}), "/")
    ours, theirs = setting["PIPELINE_LEDGER_URL"], ledger["PIPELINE_LEDGER_URL"]
    # The same URL but for the CA's path, which the query string holds: TLS verified against a CA.
    assert places.value(theirs.split("&sslrootcert=")[0]) == places.value(ours.split("&sslrootcert=")[0])
    assert theirs.endswith(f"sslmode=verify-full&sslrootcert={credentials.CA_IN_CONTAINERS}")
    assert ledger["SPARK_AUTH_SECRET"] == setting["SPARK_AUTH_SECRET"]
    assert content["postgres-superuser"].decode() == password[postgres.ADMIN]
    roles = env_file_names(content["roles.env"])
    assert roles == {provision.role_password_variable(role) for role in provision.LOGIN_ROLES}

    folder = tmp_path / "secrets"
    written = credentials.write(folder)
    modes = {path.name: path.stat().st_mode & 0o777 for path in written}
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {name for name, mode in modes.items() if mode & 0o077} == set(credentials.CONTAINER_READABLE)
    with pytest.raises(FileExistsError):
        credentials.write(folder)


def test_compose_provisions_postgres_with_the_stacks_code(tmp_path: Path, monkeypatch):
    """One implementation for both: compose hands the stack's provisioning its server, the superuser's
    password and every login role's password, nothing else decides the grants."""
    calls = []
    monkeypatch.setattr(provision, "provision_databases", lambda *args: calls.append(args))
    admin = tmp_path / "postgres-superuser"
    admin.write_text("admin-password\n")
    passwords = {role: f"{role}-password" for role in provision.LOGIN_ROLES}
    provision.postgres(
        {
            "PIPELINE_PG_HOST": "postgres",
            "PIPELINE_PG_PORT": "5432",
            "PIPELINE_PG_ADMIN_PASSWORD_FILE": str(admin),
            "PGSSLROOTCERT": "/run/secrets/pipeline_ca",
            **{provision.role_password_variable(role): pw for role, pw in passwords.items()},
        }
    )
    tls = {"sslmode": "verify-full", "sslrootcert": "/run/secrets/pipeline_ca"}
    assert calls == [("postgres", "5432", "admin-password", passwords, tls)]
    assert set(provision.LOGIN_ROLES) == {*postgres.DATABASES.values(), "ledger_writer"}


def _object_store(stack: Stack) -> dict[str, Any]:
    """Each bucket's default encryption (its key named by alias) and public access block."""
    s3, kms = objectstore.client(stack, "s3"), objectstore.client(stack, "kms")
    key = kms.describe_key(KeyId=objectstore.KEY_ALIAS)["KeyMetadata"]["Arn"]
    state = {}
    for bucket in sorted(b["Name"] for b in s3.list_buckets()["Buckets"]):
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        for rule in rules:
            default = rule["ApplyServerSideEncryptionByDefault"]
            default["KMSMasterKeyID"] = "<alias>" if default["KMSMasterKeyID"] == key else "<other key>"
        access = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        state[bucket] = {"encryption": rules, "public_access": access}
    return state


def test_compose_provisions_the_object_store_as_the_stack_does(stack_on_moto: Stack, monkeypatch):
    """Same buckets, same default SSE-KMS under the aliased key, same public access block."""
    objectstore.provision(stack_on_moto)
    expected = _object_store(stack_on_moto)
    verify = ssl.create_default_context(cafile=stack_on_moto.ca_certificate)
    httpx.post(f"{stack_on_moto.s3_endpoint()}/moto-api/reset", verify=verify, timeout=10).raise_for_status()
    for name, value in {**stack_on_moto.aws_environment(), "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    provision.s3()
    provision.s3()  # safe to run again
    assert _object_store(stack_on_moto) == expected
    assert set(expected) == set(objectstore.BUCKETS.values())


@pytest.fixture
def stack_on_moto(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose S3/KMS endpoint runs, as the stack runs it, in a moto process of its own (moto's
    state is per process: other tests' buckets and keys stay out of it). Nothing else of it runs."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    stack = Stack(RuntimeHome(tmp_path / "home"), base_port=port - 1)
    assert stack.port("s3") == port
    service = objectstore.service(stack)
    service.prepare()  # its HTTPS certificate
    server = subprocess.Popen(service.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _answers(stack):
            assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.2)
        yield stack
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(stack: Stack) -> bool:
    try:
        return objectstore.answers(stack)
    except httpx.HTTPError:
        return False
