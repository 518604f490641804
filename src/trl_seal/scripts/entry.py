"""The training scripts' entry point: what `accelerate launch` runs for `trl-seal knowledge|arc` and the examples.

It sets up the process before the script's heavy imports (known-harmless warnings filtered for the run only, CPU
threads), runs the script, then says what each round cost and where every output went. `trl-seal knowledge ...`
launches `accelerate launch <this file> knowledge ...`; examples/seal_knowledge.py calls `run("knowledge", argv)`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
import warnings

# (logger, start of the message) of records that say nothing actionable about a SEAL run.
HARMLESS_LOG_RECORDS = (
    # bitsandbytes, imported by peft, looks for an optional CPU kernel package at import.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    # DeepSpeed, imported by accelerate/transformers when installed, notes that this machine has no GPU.
    ("DeepSpeed", "Setting accelerator to CPU"),
)
# (category, regex on the message) of Python warnings raised by library code we call, not by the user's settings.
HARMLESS_WARNINGS = (
    # TRL's GRPOConfig defaults `gradient_checkpointing`, which transformers 5 renamed `activation_checkpointing`;
    # TRL's `unwrap_model_for_generation` calls `gradient_checkpointing_disable` / `_enable` around sampling (same).
    (FutureWarning, r"`gradient_checkpointing(_kwargs|_enable|_disable)?` is deprecated"),
    # TRL's GRPOTrainer reads `model.is_gradient_checkpointing`, renamed in transformers 5.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def quiet_known_warnings():
    """Drop the known-harmless warnings above for the duration of the block (and nothing else); also hide
    transformers' weight-loading and shard-writing bars, which print nothing a user acts on. Restores all on exit.

    Example:

    ```python
    >>> with quiet_known_warnings():
    ...     import peft  # no bitsandbytes kernels notice
    ```
    """
    filters = [(logging.getLogger(name), _DropMessages(prefix)) for name, prefix in HARMLESS_LOG_RECORDS]
    for logger, log_filter in filters:
        logger.addFilter(log_filter)
    try:
        with warnings.catch_warnings(), _transformers_bars_hidden():
            for category, message in HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for logger, log_filter in filters:
            logger.removeFilter(log_filter)


@contextlib.contextmanager
def _transformers_bars_hidden():
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def omp_threads_set_by_user() -> bool:
    """Whether OMP_NUM_THREADS came from the user, not from `accelerate launch`.

    `accelerate launch` without `--num_cpu_threads_per_process` (or a CPU config) sets OMP_NUM_THREADS=1 in the
    processes it starts, which runs a CPU job on one core. The launcher's own environment (our parent process: the
    launcher itself, or torchrun inside it) still holds what the user set. Where it cannot be read, the value is
    treated as the user's.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        return False
    if "ACCELERATE_DYNAMO_BACKEND" not in os.environ:  # not started by `accelerate launch`: the value is the user's
        return True
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as f:
            launcher_environment = f.read().split(b"\0")
    except OSError:
        return True
    return any(entry.startswith(b"OMP_NUM_THREADS=") for entry in launcher_environment)


def use_every_core(inner_dtype: str | None = None) -> str:
    """On a CPU-only machine, give each local process its share of the cores (unless the user set OMP_NUM_THREADS);
    returns a line that says what was decided, and which precision the inner loops get (`inner_dtype`)."""
    import torch

    if torch.cuda.is_available():
        return ""
    threads = torch.get_num_threads()
    if omp_threads_set_by_user():
        return (f"CPU: {threads} torch threads per process (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}); "
                f"{bfloat16_note(inner_dtype)}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # torchrun's count of processes on this machine, else MPI's (the names accelerate reads for its own default).
    names = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")
    local_processes = next((int(os.environ[name]) for name in names if name in os.environ), 1)
    threads = max(1, cores // local_processes)
    torch.set_num_threads(threads)
    return (f"CPU: {threads} torch threads per process ({cores} cores, {local_processes} local process(es); "
            f"set OMP_NUM_THREADS to choose); {bfloat16_note(inner_dtype)}")


def bfloat16_note(inner_dtype: str | None = None) -> str:
    """Whether this CPU computes bfloat16 natively, and the precision of the run's inner loops: what `fastest`
    resolves to here, or the dtype the user set (`--inner_dtype`), so a run's log says which one it had."""
    from trl_seal.inner.config import FASTEST, native_bfloat16

    native = native_bfloat16("cpu")
    host = "native bfloat16" if native else "no native bfloat16"
    if inner_dtype in (None, FASTEST):
        return f"{host} (inner_dtype fastest = {'bfloat16' if native else 'float32'})"
    return f"{host} (inner_dtype {inner_dtype}, as set)"


def leave_process_group() -> None:
    """Destroy this process's torch.distributed group, if it joined one, while the interpreter is whole.

    A process that returns with its gloo group alive (the non-main processes return as soon as training is saved,
    while the main one evaluates) tears it down during interpreter finalization, where gloo's worker threads can
    abort the process ("terminate called without an active exception", SIGABRT), and the launcher then kills the
    others. `Accelerator.end_training` does the same for a script that ends in one place."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run(name: str, argv: list[str]) -> None:
    """Parse and run `trl_seal.scripts.<name>` (knowledge, arc), then report its rounds and outputs."""
    start = time.perf_counter()
    with quiet_known_warnings():
        from trl_seal.scripts import common

        module = importlib.import_module(f"trl_seal.scripts.{name}")
        parsed = common.parse_script_arguments(module.make_parser(), argv)
        args = next(p for p in parsed if hasattr(p, "num_rounds"))
        common.prepare_for_device(args)
        threads = use_every_core(next((p.inner_dtype for p in parsed if hasattr(p, "inner_dtype")), None))
        if common.is_main_process():
            print(f"trl-seal {name}: output in {args.output_dir}. {threads}".rstrip(". "), flush=True)
        try:
            module.main(*parsed)
        finally:
            leave_process_group()
    if common.is_main_process():
        common.report_outputs(args.output_dir, time.perf_counter() - start)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
