"""Resident-set measurements the memory benchmarks share (Linux): read a /proc/self/status field, and restart the
peak (VmHWM) so that one run's peak is not hidden by memory an earlier run freed but the allocator kept."""

from __future__ import annotations


def status_bytes(field: str) -> int:
    """A `/proc/self/status` field in bytes (e.g. "VmRSS", "VmHWM"); 0 where it is missing."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> int:
    """Hand freed heap memory back (the library's `release_free_memory`), restart VmHWM from the current resident
    set; returns that set."""
    from trl_seal.inner.memory import release_free_memory

    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    return status_bytes("VmRSS")
