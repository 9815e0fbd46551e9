"""ATTACK SIMULATION: changing stored bytes at rest, as someone with write access to the store could."""

from examples.runs import PipelineInstance


def flip_a_byte(instance: PipelineInstance, subject: str, kind: str = "artifact") -> None:
    """Flip one bit in the middle of the stored bytes of `subject`'s newest version."""
    path = instance.store.local_path(instance.ledger.latest(subject, kind=kind).path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
