"""A language model's trained LoRA in onnxruntime's adapter format (``.onnx_adapter``): what
plain onnxruntime applies over the bundle's base decoder (export/onnx/lora_decoder.py) with
``RunOptions.add_active_adapter``.

Each pair is stored under the decoder's input names: ``<module>.lora_A.weight`` = A (r, in) and
``<module>.lora_B.weight`` = (α/r)·B (out, r), the scale folded in (the graph adds
(x Aᵀ) B'ᵀ to the base output). Written with numpy and onnxruntime only (no torch, no onnx).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.errors import EdgetuneError

ONNX_ADAPTER = "adapter.onnx_adapter"
ADAPTER_VERSION = 1


def lora_pairs(recipe: dict[str, dict], trained: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The adapter's tensors from the merge recipe's ``lora`` entries (W' = W + s·B A)."""
    out = {}
    for entry in recipe.values():
        if entry.get("op") != "lora":
            continue
        a, b = trained[entry["A"]], trained[entry["B"]]
        out[entry["A"]] = np.ascontiguousarray(a, np.float32)
        out[entry["B"]] = np.ascontiguousarray(np.float32(entry["scale"]) * b, np.float32)
    if not out:
        raise EdgetuneError("the merge recipe has no LoRA pairs")
    return out


def available() -> bool:
    """Whether this onnxruntime writes and applies adapters (stock builds ≥ 1.20; the
    training build 1.19.2 does not)."""
    import onnxruntime as ort

    return hasattr(ort, "AdapterFormat") and hasattr(ort, "LoraAdapter")


def write_onnx_adapter(tensors: dict[str, np.ndarray], path: Path) -> Path:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(ADAPTER_VERSION)
    fmt.set_model_version(1)
    fmt.set_parameters({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in tensors.items()})
    fmt.export_adapter(str(path))
    return path


def run_options(adapters: list[Path]):
    """(RunOptions with each adapter file active, the loaded adapters). Keep the adapters
    referenced while the options are used: onnxruntime does not, and a freed one crashes the
    next run. Their tensor names must not overlap."""
    import onnxruntime as ort

    if adapters and not available():
        raise EdgetuneError(f"onnxruntime {ort.__version__} cannot apply .onnx_adapter files "
                            "(stock onnxruntime >= 1.20 can)")
    options, loaded = ort.RunOptions(), []
    seen: dict[str, Path] = {}
    for path in adapters:
        if not Path(path).is_file():
            raise EdgetuneError(f"{path}: no such adapter file")
        for name in ort.AdapterFormat.read_adapter(str(path)).get_parameters():
            if name in seen:
                raise EdgetuneError(f"{path} and {seen[name]} both set {name}: adapters active "
                                    "together must set different tensors (one LoRA per request)")
            seen[name] = path
        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        options.add_active_adapter(adapter)
        loaded.append(adapter)
    return options, loaded
