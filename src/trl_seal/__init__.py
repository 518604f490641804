"""trl_seal: SEAL (Self-Adapting LLMs, arXiv 2506.10943) for the Hugging Face training stack.

The public names below load on first use (PEP 562), so `import trl_seal` and the `trl-seal` command stay fast:
torch, TRL and the domain code are imported only when a name that needs them is touched.

Example:

```python
>>> import trl_seal
>>> trl_seal.SEALConfig  # imports the trainer's dependencies now
<class 'trl_seal.seal_config.SEALConfig'>
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

# Public name -> the module (relative to this package) that defines it.
_LAZY_NAMES = {
    "ARCReward": ".arc.reward",
    "KnowledgeQAReward": ".knowledge.reward",
    "LoRAInnerAdapter": ".inner.lora",
    "PeftLoRAInnerAdapter": ".inner.peft_lora",
    "SEALConfig": ".seal_config",
    "SEALTrainer": ".seal_trainer",
    "PolicyGradient": ".strategies.policy_gradient",
    "RestEM": ".strategies.rest_em",
    "AdaptedGroup": ".types",
    "AdaptedModel": ".types",
    "InnerAdapter": ".types",
    "InnerJob": ".types",
    "InnerLoRAConfig": ".inner.config",
    "OuterStrategy": ".types",
    "RewardFn": ".types",
    "SelfEdit": ".types",
    "TrainingExample": ".types",
    "adapted_groups": ".types",
}

__all__ = [
    "ARCReward",
    "AdaptedGroup",
    "AdaptedModel",
    "InnerAdapter",
    "InnerJob",
    "InnerLoRAConfig",
    "KnowledgeQAReward",
    "LoRAInnerAdapter",
    "OuterStrategy",
    "PeftLoRAInnerAdapter",
    "PolicyGradient",
    "RestEM",
    "RewardFn",
    "SEALConfig",
    "SEALTrainer",
    "SelfEdit",
    "TrainingExample",
    "__version__",
    "adapted_groups",
]

if TYPE_CHECKING:  # type checkers and IDEs see the real imports
    from .arc.reward import ARCReward
    from .inner.config import InnerLoRAConfig
    from .inner.lora import LoRAInnerAdapter
    from .inner.peft_lora import PeftLoRAInnerAdapter
    from .knowledge.reward import KnowledgeQAReward
    from .seal_config import SEALConfig
    from .seal_trainer import SEALTrainer
    from .strategies.policy_gradient import PolicyGradient
    from .strategies.rest_em import RestEM
    from .types import (
        AdaptedGroup,
        AdaptedModel,
        InnerAdapter,
        InnerJob,
        OuterStrategy,
        RewardFn,
        SelfEdit,
        TrainingExample,
        adapted_groups,
    )


def __getattr__(name: str):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
