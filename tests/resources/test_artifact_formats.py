"""The one pickle/zip/safetensors sniffer: what it catches, what it lets through, and why."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from examples.attacks.trojan_payloads import RunsShellOnLoad, plain_pickle
from resources.artifact_formats import (
    NotSafetensors,
    pickle_evidence,
    read_safetensors_header,
    safetensors_header,
    scan_for_pickle,
    sniff,
)

PROTOCOLS = range(6)
PAYLOAD = {"w": [1.0, 2.0], "name": "weights"}


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def torch_checkpoint(path: Path) -> Path:
    """What `torch.save(model.state_dict(), f)` writes: a zip archive whose data.pkl is a pickle."""
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    return path


# --- pickles of every protocol --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_binary_protocols_are_caught_by_their_header(tmp_path: Path, protocol: int) -> None:
    data = plain_pickle(PAYLOAD, protocol=protocol)
    assert sniff(data) == "looks like a pickle (starts with a pickle PROTO opcode)"
    why = pickle_evidence(write(tmp_path / "weights.bin", data))
    assert why is not None and f"PROTO {protocol}" in why


@pytest.mark.parametrize("protocol", [0, 1])
def test_text_protocols_without_globals_are_caught_only_by_their_suffix(
    tmp_path: Path, protocol: int
) -> None:
    # Protocols 0 and 1 have no header, and a pickle of builtins imports nothing, so neither the
    # header test nor picklescan sees it. Such a pickle cannot run code when loaded; under a
    # pickle suffix it is refused anyway.
    data = plain_pickle(PAYLOAD, protocol=protocol)
    assert sniff(data) is None
    assert scan_for_pickle(data, "weights.bin") == []
    assert pickle_evidence(write(tmp_path / "weights.bin", data)) is None
    assert pickle_evidence(write(tmp_path / "weights.pkl", data)) == "its suffix '.pkl' is a pickle format's"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_code_running_pickle_of_any_protocol_is_caught(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    data = plain_pickle(RunsShellOnLoad(marker), protocol=protocol)
    findings = scan_for_pickle(data, "weights.bin")
    assert any("system" in finding for finding in findings), findings
    why = pickle_evidence(write(tmp_path / "weights.bin", data))
    assert why is not None
    if protocol < 2:  # no header: picklescan's global import is what catches it
        assert "picklescan found global import(s)" in why and "system" in why
    assert not marker.exists()  # sniffing never unpickles


def test_a_truncated_text_pickle_that_imports_is_caught(tmp_path: Path) -> None:
    # Unpickling runs os.system at REDUCE, before it notices the stream never STOPs.
    data = b"cos\nsystem\n(S'touch /tmp/x'\ntR"
    why = pickle_evidence(write(tmp_path / "notes.txt", data))
    assert why is not None and "os.system" in why


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".dill", ".PKL"])
def test_a_pickle_suffix_is_caught_whatever_the_contents(tmp_path: Path, suffix: str) -> None:
    assert pickle_evidence(write(tmp_path / f"model{suffix}", b"not even a pickle")) is not None


# --- zip archives: torch checkpoints --------------------------------------------------------------


def test_a_torch_zip_checkpoint_is_caught_whatever_its_name(tmp_path: Path) -> None:
    path = torch_checkpoint(tmp_path / "weights.bin")
    data = path.read_bytes()
    assert data.startswith(b"PK\x03\x04")
    assert sniff(data) == "looks like a zip archive, e.g. a torch.save checkpoint that holds a pickle"
    why = pickle_evidence(path)
    assert why is not None and "torch.save zip checkpoint" in why and "data.pkl" in why
    assert any("torch" in finding for finding in scan_for_pickle(data, "weights.bin"))
    with pytest.raises(NotSafetensors, match="zip archive"):
        safetensors_header(data)


def test_a_pt_checkpoint_is_caught_by_its_suffix(tmp_path: Path) -> None:
    assert pickle_evidence(torch_checkpoint(tmp_path / "model.pt")) == "its suffix '.pt' is a pickle format's"


def test_any_zip_archive_is_caught_even_behind_a_prefix(tmp_path: Path) -> None:
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("readme.txt", "no pickle here")
    assert "zip archive" in (pickle_evidence(plain) or "")
    # A zip is read from its end, so bytes in front of it do not hide it.
    checkpoint = torch_checkpoint(tmp_path / "checkpoint").read_bytes()
    prefixed = write(tmp_path / "prefixed.bin", b"#!junk\n" * 10 + checkpoint)
    assert "zip" in (pickle_evidence(prefixed) or "")


# --- what passes ----------------------------------------------------------------------------------


def test_safetensors_passes_and_its_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(path))
    assert pickle_evidence(path) is None
    assert scan_for_pickle(path.read_bytes(), path.name, ".safetensors") == []
    header = read_safetensors_header(path)
    assert header == safetensors_header(path.read_bytes())
    assert header["weight"]["shape"] == [2, 3] and header["bias"]["dtype"] == "F32"


def test_lookalike_headers_pass(tmp_path: Path) -> None:
    # A 640-byte safetensors header starts with 80 02, pickle's PROTO 2; it is still safetensors.
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode().ljust(640)
    safetensors = write(tmp_path / "model.safetensors", (640).to_bytes(8, "little") + header + bytes(8))
    assert safetensors.read_bytes()[:2] == b"\x80\x02"
    assert pickle_evidence(safetensors) is None
    # Ciphertext can start with 0x80 too; its next bytes do not parse as pickle opcodes.
    assert pickle_evidence(write(tmp_path / "model.enc", b"\x80\x03\x00\x01" + bytes(range(256)) * 4)) is None


def test_plain_json_and_text_pass(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.json", json.dumps({"architecture": {"name": "mf"}, "version": 3}).encode()
    )
    assert pickle_evidence(config) is None
    # picklescan reads a leading "c" or "i" as a GLOBAL/INST opcode and reports the first two lines
    # as an import ("ount,views.1,2"); no such name can be imported, so the sniffer ignores it.
    for name, text in (("counts.csv", "count,views\n1,2\n"), ("items.csv", "item_id,score\nu1,0.5\n")):
        assert scan_for_pickle(text.encode(), name) != []
        assert pickle_evidence(write(tmp_path / name, text.encode())) is None


def test_a_picklescan_crash_alone_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    # STACK_GLOBAL (0x93) with nothing on the stack: picklescan raises; no unpickler could run it.
    data = b"\x93" + bytes(64)
    assert scan_for_pickle(data, "blob")[0].startswith("picklescan could not scan it")
    assert pickle_evidence(write(tmp_path / "blob.bin", data)) is None


# --- safetensors layout ---------------------------------------------------------------------------


def test_the_safetensors_check_says_what_the_bytes_are_instead() -> None:
    with pytest.raises(NotSafetensors, match="looks like a pickle"):
        safetensors_header(plain_pickle(PAYLOAD, protocol=4))
    with pytest.raises(NotSafetensors, match="shorter than the 8-byte header length"):
        safetensors_header(b"{}")
    with pytest.raises(NotSafetensors, match="the header is not safetensors"):
        safetensors_header(b"\x00" * 64)
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}'
    with pytest.raises(NotSafetensors, match="offsets outside the file"):
        safetensors_header(len(header).to_bytes(8, "little") + header + bytes(4))
    duplicated = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{}}'
    with pytest.raises(NotSafetensors, match="not valid JSON.*duplicate"):
        safetensors_header(len(duplicated).to_bytes(8, "little") + duplicated + bytes(4))


def test_the_loader_and_the_sniffer_import_no_pipeline_frameworks() -> None:
    # The isolated inference worker imports the loader; it must stay free of these.
    forbidden = ["dagster", "mlflow", "pyspark", "tink", "sklearn", "great_expectations", "cleanlab"]
    code = (
        "import sys, resources.loader, resources.artifact_formats\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({forbidden!r})))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
