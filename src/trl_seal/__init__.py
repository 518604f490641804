"""trl_seal: SEAL (Self-Adapting LLMs, arXiv 2506.10943) for the Hugging Face training stack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trl-seal")
except PackageNotFoundError:  # running from a source checkout that was not installed
    __version__ = "0.1.0.dev0"  # defined before the imports below, which read it

from .arc.reward import ARCReward
from .inner.lora import LoRAInnerAdapter
from .inner.peft_lora import PeftLoRAInnerAdapter
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

__all__ = [
    "ARCReward",
    "AdaptedGroup",
    "AdaptedModel",
    "InnerAdapter",
    "InnerJob",
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
