"""Resident-set measurements the memory benchmarks share (Linux): read a /proc/self/status field, and restart the
peak (VmHWM) so that one run's peak is not hidden by memory an earlier run freed but the allocator kept."""

from __future__ import annotations

import ctypes


def status_bytes(field: str) -> int:
    """A `/proc/self/status` field in bytes (e.g. "VmRSS", "VmHWM"); 0 where it is missing."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> int:
    """Hand freed heap memory back (glibc), restart VmHWM from the current resident set; returns that set."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    return status_bytes("VmRSS")
