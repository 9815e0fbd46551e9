"""The worker pool: concurrent requests go to free workers, a busy pool says so, a retired pool hands over."""

import gc
import tempfile
import threading
from pathlib import Path

import pytest

from serving.worker_client import WorkerClient, WorkerError
from serving.worker_pool import WorkerPool, workers_from_env


class HeldWorker:
    """Stands in for a `WorkerClient`: answers with its name once `release` is set."""

    def __init__(self, name: str, release: threading.Event):
        self.name, self.release = name, release
        self.busy = threading.Semaphore(0)
        self.retired_to = None

    def request(self, method, params=None, timeout=30.0):
        self.busy.release()
        assert self.release.wait(timeout)
        return {"worker": self.name, "method": method}

    def retire(self, replacement):
        self.retired_to = replacement


def _in_thread(pool: WorkerPool, answers: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.append(pool.request("recommend", {}, timeout=10)))
    thread.start()
    return thread


def test_concurrent_requests_are_answered_by_different_workers_and_a_busy_pool_says_so():
    release = threading.Event()
    first, second = HeldWorker("a", release), HeldWorker("b", release)
    pool, answers = WorkerPool([first, second]), []
    threads = [_in_thread(pool, answers) for _ in range(2)]
    # Both held at once: the second request did not queue behind the first.
    assert first.busy.acquire(timeout=10) and second.busy.acquire(timeout=10)

    with pytest.raises(WorkerError, match="all 2 workers stayed busy for 0.2 s"):
        pool.request("recommend", {}, timeout=0.2)

    release.set()
    for thread in threads:
        thread.join(10)
    assert sorted(answer["worker"] for answer in answers) == ["a", "b"]
    assert pool.request("recommend", {})["worker"] in {"a", "b"}  # both free again


def test_a_retired_pool_hands_its_requests_and_each_worker_to_the_replacement():
    release = threading.Event()
    release.set()
    old = WorkerPool([HeldWorker("old-a", release), HeldWorker("old-b", release)])
    new = WorkerPool([HeldWorker("new-a", release), HeldWorker("new-b", release)])

    old.retire(new)

    assert [worker.retired_to.name for worker in old.workers] == ["new-a", "new-b"]
    assert old.request("recommend", {})["worker"].startswith("new-")


def test_a_pool_size_that_is_not_a_whole_number_of_at_least_one_says_what_to_set(monkeypatch):
    monkeypatch.setenv("SERVING_WORKERS", "3")
    assert workers_from_env() == 3
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("SERVING_WORKERS", bad)
        with pytest.raises(ValueError, match=f"SERVING_WORKERS='{bad}' is not a whole number"):
            workers_from_env()


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "dropped-unclosed"])
def test_a_client_given_key_bytes_leaves_no_key_folder_behind(tmp_path, closed):
    """The keys handed over as bytes live in a private temporary folder; it must not outlive the client."""
    before = set(Path(tempfile.gettempdir()).glob("serving-keys-*"))
    client = WorkerClient(tmp_path, [b"-----BEGIN PUBLIC KEY-----"], "h:H", state_file=tmp_path / "state")
    command = client._command()
    keys_file = Path(command[command.index("--trusted-keys") + 1])  # what the worker is given
    assert keys_file.is_file() and (keys_file.parent.stat().st_mode & 0o777) == 0o700

    if closed:
        client.close()
    else:
        with pytest.warns(ResourceWarning):  # the finalizer cleans up, and says the caller should have
            del client
            gc.collect()

    assert not keys_file.parent.exists()
    assert set(Path(tempfile.gettempdir()).glob("serving-keys-*")) <= before
