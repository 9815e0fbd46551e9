"""`python -m deploy.stack up|down|status|env` (`make stack`, `make stack-down`, `make stack-status`)."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time

from deploy.stack.processes import StackError, Supervisor
from deploy.stack.services import all_services
from deploy.stack.settings import HOST, Stack


def supervisor(stack: Stack) -> Supervisor:
    return Supervisor(stack.folder("run"), stack.folder("logs"))


def up(stack: Stack) -> None:
    """Start every service in order, each only once the one before it is healthy."""
    processes = supervisor(stack)
    for service in all_services(stack):
        started = time.monotonic()
        processes.start(service)
        print(f"  {service.name:<28} healthy in {time.monotonic() - started:5.1f} s (port {service.port})")
    print(
        f"  The UI: https://{HOST}:{stack.port('proxy')}/ (user `operator`), read-only at /viewer/ "
        f"(user `viewer`); passwords `ui_operator`, `ui_viewer` in {stack.folder() / 'credentials.json'}; "
        f"the CA to trust: {stack.ca_certificate}"
    )


def down(stack: Stack) -> None:
    """Stop, newest first, exactly the processes `up` started, then forget the stack's state.

    The S3/KMS endpoint kept its objects and keys in memory; what the databases and the pipeline's
    home still hold would point at objects and keys that no longer exist. The logs stay.
    """
    processes = supervisor(stack)
    for service in reversed(all_services(stack)):
        print(f"  {service.name:<28} {'stopped' if processes.stop(service) else 'was not running'}")
    for entry in stack.folder().iterdir():
        if entry.name not in ("logs", "run"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    print(f"  state under {stack.folder()} removed (logs kept)")


def status(stack: Stack) -> bool:
    processes = supervisor(stack)
    running = True
    for service in all_services(stack):
        pid = processes.pid(service.name)
        running &= pid is not None
        print(f"  {service.name:<28} {f'running (pid {pid})' if pid else 'stopped'}")
    return running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    command = parser.parse_args(argv).command
    stack = Stack.from_environment()
    try:
        if command == "up":
            up(stack)
        elif command == "down":
            down(stack)
        elif command == "status":
            return 0 if status(stack) else 1
        else:
            for name, value in stack.pipeline_environment().items():
                print(f"export {name}={shlex.quote(value)}")
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
