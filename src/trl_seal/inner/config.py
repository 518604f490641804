"""`InnerLoRAConfig`: every setting of the LoRA inner loop, in one dataclass, and its command-line view.

The adapters take it like peft's `get_peft_model` takes a `LoraConfig`:

```python
>>> from trl_seal import InnerLoRAConfig, LoRAInnerAdapter
>>> adapter = LoRAInnerAdapter(InnerLoRAConfig(r=8, lora_alpha=16, num_epochs=2))
>>> adapter = LoRAInnerAdapter(r=8, lora_alpha=16, num_epochs=2)  # the same config, built from keywords
```

The training scripts parse the same fields with `TrlParser` through `InnerArguments`, a view generated from this
dataclass that prefixes every name with `inner_` (`--inner_r`, `inner_num_epochs:` in a recipe): SEALConfig (a
GRPOConfig) already has `learning_rate`, `max_grad_norm`, `lr_scheduler_type`, ... in the same namespace. The help
text is written once, here.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from typing import Literal

from .memory import CPU_STEP_TOKENS, parse_memory

SCHEDULES = ("constant", "linear", "cosine")
QUANTIZATIONS = ("4bit", "8bit")
DTYPES = ("float32", "bfloat16", "float16")
FASTEST = "fastest"  # bfloat16 where the device multiplies it natively, else float32 (`InnerLoRAConfig.dtype`)


@dataclass
class InnerLoRAConfig:
    """Settings of the temporary LoRA adapter that applies one self-edit, and of the loop that trains many of them.

    The defaults are the paper's knowledge-incorporation setting (Zweiger et al., 2025, arXiv 2506.10943: r=32,
    alpha=64, lr 1e-3, 10 epochs, batch 1); its few-shot ARC setting is `r=128, lora_alpha=16, batch_size=2`. A job
    (`InnerJob`) may set its own learning rate and number of epochs.

    Example:
    ```python
    >>> from trl_seal import InnerLoRAConfig, LoRAInnerAdapter
    >>> config = InnerLoRAConfig(r=128, lora_alpha=16, batch_size=2, max_length=8192)  # the paper's ARC setting
    >>> adapter = LoRAInnerAdapter(config)
    >>> adapter.config.r
    128
    ```
    """

    # LoRA
    r: int = field(default=32, metadata={"help": "LoRA rank (paper: 32 for knowledge incorporation, 128 for ARC)."})
    lora_alpha: int = field(
        default=64, metadata={"help": "LoRA scaling numerator: updates are scaled by lora_alpha / r (paper: 64; 16)."}
    )
    lora_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the adapter input. PeftLoRAInnerAdapter only: LoRAInnerAdapter needs 0."},
    )
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "Linear layers that get an adapter: 'all-linear' (every one but the output head) or names "
                          "(e.g. q_proj v_proj)."},
    )
    # Optimisation
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Inner AdamW learning rate unless a job sets its own (paper: 1e-3)."}
    )
    num_epochs: int = field(
        default=10, metadata={"help": "Passes over a self-edit's examples unless a job sets its own (paper: 10)."}
    )
    batch_size: int = field(
        default=1, metadata={"help": "Examples per inner optimizer step of each adapter (paper: 1; ARC: 2)."}
    )
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = field(
        default="constant", metadata={"help": "Inner learning-rate schedule."}
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "Share of a job's steps spent warming up linearly, in [0, 1)."}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Gradient clipping of each adapter; 0 or None turns it off."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay on the adapters."})
    max_length: int = field(default=2048, metadata={"help": "Training examples are truncated to this many tokens."})
    # Batching (LoRAInnerAdapter only)
    max_adapters: int | str = field(
        default="auto",
        metadata={"help": "Adapters trained together (K), or 'auto', sized from the jobs: on a GPU one per job up "
                          f"to 64; on a CPU the fewest whose joint step reaches {CPU_STEP_TOKENS} tokens (at most "
                          "16), past which a CPU gains little from batching and more slots only hold memory. Fewer "
                          "if the memory estimate exceeds max_memory (or, as a safety cap, the memory available). "
                          "LoRAInnerAdapter only."},
    )
    max_tokens_per_step: int | str = field(
        default="auto",
        metadata={"help": "Tokens in one joint forward/backward, or 'auto': enough for the K largest jobs' steps "
                          "to run together. LoRAInnerAdapter only."},
    )
    pack_length: int | None = field(
        default=None,
        metadata={"help": "Length of a packed training row; None: 1024 on a GPU, 160 on a CPU, where attention runs "
                          "over the whole row. LoRAInnerAdapter only."},
    )
    eval_group_size: int | None = field(
        default=None,
        metadata={"help": "Finished adapters handed out together for batched evaluation; None: half the slots. "
                          "LoRAInnerAdapter only."},
    )
    max_memory: int | str | None = field(
        default=None,
        metadata={"help": "Memory cap of the batched inner loop (resident copy + adapter slots + one joint step's "
                          "activations), in bytes or as '4GiB' / '512MB': K and the token budget are shrunk to fit "
                          "the estimate. None: what the jobs need, with the memory available as a safety cap. "
                          "LoRAInnerAdapter only."},
    )
    # The resident copy of the policy
    quantization: str | None = field(
        default=None,
        metadata={"help": "Quantize the resident copy with bitsandbytes (QLoRA inner loops; needs the "
                          "`quantization` extra).", "choices": list(QUANTIZATIONS)},
    )
    dtype: str | None = field(
        default=None,
        metadata={"help": "Dtype of the resident copy; auto (or None) keeps the policy's; fastest: bfloat16 where the "
                          "device computes it natively (CUDA with bf16; CPUs with AMX or AVX512-BF16), else float32 "
                          "(a CPU without them emulates bfloat16: the inner loop ran 2.1x faster in float32, "
                          "docs/benchmarks.md).", "choices": ["auto", FASTEST, *DTYPES]},
    )
    device: str | None = field(
        default=None, metadata={"help": "Device of the resident copy (e.g. cuda:1); None: the policy's."}
    )
    # Budgets: a job over one fails with a reason, the others go on
    max_seconds_per_job: float | None = field(
        default=None,
        metadata={"help": "Wall-clock budget of one job from its first step; over it the job fails with reason "
                          "'timeout'. None: no limit."},
    )
    max_tokens_per_job: int | None = field(
        default=None,
        metadata={"help": "A job whose examples x epochs hold more tokens fails with reason 'too_many_tokens' before "
                          "training. None: no limit."},
    )

    def __post_init__(self):
        self.target_modules = _normalized_targets(self.target_modules)
        self.dtype = _dtype_name(self.dtype)
        self.max_adapters = _auto_or_int("max_adapters", self.max_adapters)
        self.max_tokens_per_step = _auto_or_int("max_tokens_per_step", self.max_tokens_per_step)
        if self.max_grad_norm is not None and self.max_grad_norm == 0:
            self.max_grad_norm = None  # one spelling of "off", so that equal settings fingerprint equally
        self._check()

    def _check(self) -> None:
        for name in ("r", "lora_alpha", "learning_rate", "num_epochs", "batch_size", "max_length"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0.")
        for name in ("pack_length", "eval_group_size", "max_seconds_per_job", "max_tokens_per_job"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}={value!r}: use a positive number or None.")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm}: use a positive norm, or 0/None to turn it off.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout={self.lora_dropout} must be in [0, 1).")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1).")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0.")
        if self.lr_scheduler_type not in SCHEDULES:
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r}: use one of {', '.join(SCHEDULES)}.")
        if self.quantization not in (None, *QUANTIZATIONS):
            raise ValueError(f"quantization={self.quantization!r}: use None, '4bit' or '8bit'.")
        parse_memory(self.max_memory)  # raises a ValueError that names the field and the accepted forms

    def torch_dtype(self, device):
        """`dtype` as a `torch.dtype` for a resident copy on `device` (None: keep the policy's)."""
        import torch

        if self.dtype == FASTEST:
            return torch.bfloat16 if native_bfloat16(device) else torch.float32
        return None if self.dtype is None else getattr(torch, self.dtype)

    def chosen_dtype_name(self, device) -> str | None:
        """The resident copy's dtype by name on this config's `device` (else `device`): what `fastest` picks there,
        for fingerprints that must tell a bfloat16 run from a float32 one (None: the policy's)."""
        chosen = self.torch_dtype(self.device or device)
        return None if chosen is None else str(chosen).split(".")[-1]


def native_bfloat16(device) -> bool:
    """Whether `device` multiplies bfloat16 natively: a CUDA device with bf16 support, or a CPU with AMX or
    AVX512-BF16 (x86) or the BF16 extension (aarch64). Elsewhere torch emulates bfloat16 matmuls, slower than float32:
    a 1024^2 matmul at 2 threads on an AVX512 Xeon without them ran 0.06 TFLOP/s in bfloat16, 0.22 in float32."""
    import platform

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in _cpu_features()
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private helpers torch's inductor uses
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _cpu_features() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return {flag for line in handle if line.lower().startswith(("flags", "features"))
                    for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def _normalized_targets(value):
    """'all-linear', a module name or a list of names; a one-element list from the command line counts as its item."""
    if isinstance(value, (list, tuple)):
        value = list(value)
        if len(value) == 1 and value[0] == "all-linear":
            return "all-linear"
        if not value or not all(isinstance(name, str) and name for name in value):
            raise ValueError(f"target_modules={value!r}: use 'all-linear' or a non-empty list of module names.")
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"target_modules={value!r}: use 'all-linear' or a non-empty list of module names.")
    return value


def _dtype_name(value) -> str | None:
    """Store the dtype by name (a config stays JSON-serialisable); a `torch.dtype` is accepted too."""
    if value is None or value == "auto":
        return None
    if value == FASTEST:
        return FASTEST
    name = str(value).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"dtype={value!r}: use one of {', '.join(DTYPES)}, {FASTEST!r} (bfloat16 where the device "
                         "computes it natively, else float32) or None (the policy's dtype).")
    return name


def _auto_or_int(name: str, value):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError(f"{name}={value!r}: use a positive integer or 'auto'.")


# ----------------------------------------------------------------------------------------------- command-line view
INNER_PREFIX = "inner_"
# Argparse takes one type per flag: these fields accept a string from the command line and are normalised above.
_CLI_TYPES = {"target_modules": list[str], "max_adapters": str, "max_tokens_per_step": str, "max_memory": str | None}


def inner_arguments(
    name: str = "InnerArguments", exclude: tuple[str, ...] = ("lora_dropout",), module: str | None = None
) -> type:
    """A dataclass for `TrlParser` with every `InnerLoRAConfig` field under `inner_<name>` (help and defaults copied).

    Its `to_config(**overrides)` returns the `InnerLoRAConfig`; fields in `exclude` are not flags, and the script
    passes them as overrides (ARC derives `max_length` from its own `max_tokens`). The default view leaves out
    `lora_dropout`, which the scripts' `LoRAInnerAdapter` does not support. Bind the class to a module-level `name`
    in `module` (default: the caller's module), so that it pickles like a hand-written dataclass.

    Example:
    ```python
    >>> from trl import TrlParser
    >>> (inner,) = TrlParser(InnerArguments).parse_args_and_config(["--inner_r", "8", "--inner_num_epochs", "3"])
    >>> inner.to_config().r, inner.to_config().num_epochs
    (8, 3)
    ```
    """
    hints = typing.get_type_hints(InnerLoRAConfig)
    fields = []
    for source in dataclasses.fields(InnerLoRAConfig):
        if source.name in exclude:
            continue
        cli_type = _CLI_TYPES.get(source.name, hints[source.name])
        if typing.get_origin(cli_type) is list:
            spec = field(default_factory=lambda d=source.default: [d], metadata=source.metadata)
        else:
            spec = field(default=source.default, metadata=source.metadata)
        fields.append((INNER_PREFIX + source.name, cli_type, spec))
    module = module or sys._getframe(1).f_globals.get("__name__", __name__)  # what make_dataclass does from 3.12
    namespace = {"to_config": _to_config, "__post_init__": _validate, "__doc__": _VIEW_DOC, "__module__": module}
    return dataclasses.make_dataclass(name, fields, namespace=namespace)


_VIEW_DOC = "The `inner_*` flags and YAML keys: `InnerLoRAConfig` with prefixed names (see `inner_arguments`)."


def _to_config(self, **overrides) -> InnerLoRAConfig:
    values = {f.name.removeprefix(INNER_PREFIX): getattr(self, f.name) for f in dataclasses.fields(self)}
    return InnerLoRAConfig(**{**values, **overrides})


def _validate(self) -> None:
    try:
        self.to_config()
    except ValueError as error:  # every message starts with the field's name: give it the flag's name
        raise ValueError(f"{INNER_PREFIX}{error}") from None


InnerArguments = inner_arguments()
