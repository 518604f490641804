"""Where a training script's memory goes, phase by phase: the script runs in this process while a thread samples the
resident set (/proc/self/statm) every --interval seconds, and phase markers wrap the methods that start each phase.

Phases: `load` (until the first sampling), `sampling` (self-edit generation), `sync` (refreshing the inner loop's
resident copy), `inner_train` (inside the inner adapter's `adapt_groups`: joint steps), `inner_eval` (the reward
evaluating adapted models), `policy_update` (the trainer's forward/backward and optimizer steps), `eval_self_edits`
and `eval_conditions` (the held-out table), `other`. For each: the peak resident set, the resident set when the
phase was first entered, and the inner loop's plan (K, token budget, estimate) of every adapt call.

    OMP_NUM_THREADS=1 python benchmarks/inner_memory_phases.py knowledge --inner_num_epochs 1 --num_eval_passages 2
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PhaseSampler:
    """A daemon thread recording, per phase, the peak resident set and the resident set when it was entered."""

    def __init__(self, interval: float):
        self.interval, self.phase = interval, "load"
        self.peaks: dict[str, int] = {}
        self.entered: dict[str, int] = {}
        self.order: list[str] = []
        self.plans: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.set("load")
        self._thread.start()

    def set(self, phase: str) -> str:
        previous, self.phase = self.phase, phase
        if phase not in self.entered:
            self.entered[phase] = resident_bytes()
            self.order.append(phase)
        self._record()
        return previous

    def _record(self) -> None:
        rss = resident_bytes()
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def stop(self) -> None:
        self._stop.set()
        self._record()

    def report(self) -> str:
        mib = 2**20
        lines = ["| phase | resident set when first entered | peak resident set |", "| --- | ---: | ---: |"]
        lines += [f"| {p} | {self.entered[p] / mib:.0f} MiB | {self.peaks.get(p, 0) / mib:.0f} MiB |"
                  for p in self.order]
        lines.append(f"overall peak: {max(self.peaks.values()) / mib:.0f} MiB")
        for plan in self.plans:
            lines.append(f"inner plan: {plan}")
        return "\n".join(lines)


def marked(sampler: PhaseSampler, phase: str, function):
    """`function` run in `phase`; the previous phase is restored when it returns."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        previous = sampler.set(phase)
        try:
            return function(*args, **kwargs)
        finally:
            sampler.set(previous)

    return wrapper


def marked_generator(sampler: PhaseSampler, inside: str, outside: str, function):
    """A generator function whose own work counts as `inside` and its consumer's work between items as `outside`."""

    @functools.wraps(function)
    def wrapper(self, *args, **kwargs):
        generator = function(self, *args, **kwargs)
        previous = sampler.phase
        while True:
            sampler.set(inside)
            try:
                item = next(generator)
            except StopIteration:
                sampler.plans.append(dict(getattr(self, "last_run", {})))
                sampler.set(previous)
                return
            sampler.set(outside)
            yield item

    return wrapper


def install_markers(sampler: PhaseSampler, script) -> None:
    from trl_seal.inner.lora import LoRAInnerAdapter
    from trl_seal.inner.resident import ResidentPolicyCopy
    from trl_seal.seal_trainer import SEALTrainer

    ResidentPolicyCopy.sync = marked(sampler, "sync", ResidentPolicyCopy.sync)
    LoRAInnerAdapter.adapt_groups = marked_generator(sampler, "inner_train", "inner_eval",
                                                     LoRAInnerAdapter.adapt_groups)
    SEALTrainer._generate_single_turn = marked(sampler, "sampling", SEALTrainer._generate_single_turn)
    original_step = SEALTrainer.training_step

    def training_step(self, *args, **kwargs):  # the optimizer step follows the last training_step: keep the phase
        result = original_step(self, *args, **kwargs)
        sampler.set("policy_update")
        return result

    SEALTrainer.training_step = training_step
    for name, phase in (("generate_self_edits", "eval_self_edits"), ("run_conditions", "eval_conditions")):
        if hasattr(script, name):
            setattr(script, name, marked(sampler, phase, getattr(script, name)))


def main(argv: list[str]) -> None:
    import importlib

    name, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("knowledge", argv)
    interval = float(os.environ.get("PHASE_SAMPLE_SECONDS", "0.2"))
    sampler = PhaseSampler(interval)
    sampler.start()
    from trl_seal.scripts import common
    from trl_seal.scripts.entry import quiet_known_warnings

    with quiet_known_warnings():
        script = importlib.import_module(f"trl_seal.scripts.{name}")
        install_markers(sampler, script)
        parsed = common.parse_script_arguments(script.make_parser(), rest)
        args = next(p for p in parsed if hasattr(p, "num_rounds"))
        common.prepare_for_device(args)
        start = time.perf_counter()
        script.main(*parsed)
    sampler.stop()
    print(f"\n{name} {' '.join(rest)}: {time.perf_counter() - start:.0f} s")
    print(sampler.report())


if __name__ == "__main__":
    main(sys.argv[1:])
