import ast
import importlib.util
from pathlib import Path

import pytest

MICRO_MODELS = ["vit-micro", "bert-micro"]
# Language models (causal LM presets): the PEFT matrix runs them too (tests/test_peft_matrix.py).
MICRO_LMS = ["llama-micro", "qwen2-micro", "gpt2-micro"]
# What a test module imports at its top that only the workstation venv has.
WORKSTATION = ("torch", "onnx", "transformers", "peft", "edgetune.export", "export_cases")


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs_workstation(path: Path) -> bool:
    """Whether a test file imports the workstation side at module level (``ast``; imports
    inside functions do not count: those tests skip or use cached bundles themselves)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == w or n.startswith(w + ".") for n in names for w in WORKSTATION):
            return True
    return False


_WORKSTATION_ONLY: list[str] = []


def _training_api() -> bool:
    from edgetune.runtime.ort_build import has_training_api

    return has_training_api()


# Static mode: ORT's training API, only in the training build (the workstation venv here).
training_api = pytest.mark.skipif(not _training_api(),
                                  reason="static mode runs ORT's training API (the training build)")


def pytest_ignore_collect(collection_path, config):
    """In a device venv (no torch), the workstation's test files are not collected: listed in
    the report header, never silently."""
    if has("torch") or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if needs_workstation(collection_path):
        _WORKSTATION_ONLY.append(collection_path.name)
        return True
    return None


def pytest_report_header(config):
    if not has("torch"):
        from edgetune.runtime.ort_build import describe

        return (f"device venv, no torch ({describe()}); test files that import the "
                "workstation side are not collected (listed at the end)")
    return None


def pytest_terminal_summary(terminalreporter):
    if _WORKSTATION_ONLY:
        terminalreporter.write_line("workstation-only test files, not collected here: "
                                    + ", ".join(sorted(_WORKSTATION_ONLY)))


@pytest.fixture(autouse=True)
def _seed():
    if has("torch"):
        import torch

        torch.manual_seed(0)


def hf_twin(model):
    """transformers' BertForSequenceClassification holding our BERT model's weights."""
    transformers = pytest.importorskip("transformers")
    c = model.config
    cfg = transformers.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings, layer_norm_eps=c.layer_norm_eps,
        num_labels=c.num_classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    twin = transformers.BertForSequenceClassification(cfg).eval()
    missing, unexpected = twin.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    return twin
