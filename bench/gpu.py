"""edgetune on a CUDA GPU against torch eager + PEFT on the same GPU: s/step and peak GPU memory.

Configurations (each in a fresh process; the median step time over ``--steps`` after two
warm-up steps; peak GPU memory of that process as NVML reports it, polled by the parent, and
for torch also its allocator's own peak):

- models: vit-small (batch 64, 224 px) and minilm-l6 (batch 64 × 128 tokens, every position a
  real token, so dynamic padding is no shortcut); random weights (timing needs no checkpoint);
- edgetune (``--provider cuda``: parameters, activations, gradients and AdamW on the GPU):
  full fine-tuning, LoRA every layer and token (the static schedule), ALaST + LoRA;
- torch eager (transformers + peft): full fine-tuning and LoRA, fp32 and bf16 autocast.

Two environments, since the exporter needs ONNX Runtime's training build and the GPU run its
CUDA build (they install the same module):

    .venv/bin/python bench/gpu.py export --out runs/gpu          # workstation venv
    GPU_VENV/bin/python bench/gpu.py run --bundles runs/gpu      # onnxruntime-gpu, torch, transformers, peft

Without a CUDA device (or without the CUDA build), ``run`` prints "no CUDA device" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

MODELS = {"vit-small": {"batch": 64}, "minilm-l6": {"batch": 64, "tokens": 128}}
EDGETUNE = [("full", "static"), ("lora", "static"), ("lora", "alast")]
TORCH = [("full", "fp32"), ("full", "bf16"), ("lora", "fp32"), ("lora", "bf16")]


def cuda_device() -> str | None:
    """The GPU's name where the CUDA build and an NVIDIA driver are both there, else None."""
    try:
        import onnxruntime
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def export(out: Path) -> None:
    from edgetune.bundle import MANIFEST
    from edgetune.export import export_bundle

    for model, cfg in MODELS.items():
        for method in ("full", "lora"):
            text = {"max_tokens": cfg["tokens"]} if "tokens" in cfg else {}
            folder = out / f"{model}-{method}"
            if not (folder / MANIFEST).is_file():
                print(f"exporting {folder}", flush=True)
                export_bundle(model, method, folder, mode="adaptive", overwrite=True, **text)


EDGETUNE_CHILD = r"""
import json, statistics, sys, time
import numpy as np
from edgetune.bundle import Bundle
from edgetune.runtime.placement import Placement
from edgetune.schedule import AlastConfig, AlastPlanner, StaticPlanner
from edgetune.train.modes import open_engine
from edgetune.optim_config import AdamWConfig
folder, schedule = sys.argv[1], sys.argv[2]
batch, tokens, steps = (int(a) for a in sys.argv[3:6])
b = Bundle.open(folder, verify=False)
engine = open_engine(b, "adaptive", optim=AdamWConfig(lr=1e-4), placement=Placement("cuda"))
rng = np.random.default_rng(0)
if b.kind == "image":
    side = b.inputs["image_size"]
    mb = {"pixel_values": rng.standard_normal((batch, 3, side, side)).astype(np.float32)}
else:
    mb = {"input_ids": rng.integers(1000, 20000, (batch, tokens)),
          "attention_mask": np.ones((batch, tokens), np.int64)}
mb["labels"] = rng.integers(0, 2, batch)
n = int(b.manifest["tokens"]) + int(b.manifest.get("extra_tokens", 0))
L = engine.num_layers
planner = AlastPlanner(L, n, AlastConfig()) if schedule == "alast" else StaticPlanner(L)
times = []
for i in range(steps + 2):
    plan = planner.plan(n, batch)
    t = time.perf_counter()
    stats = engine.train_step([mb], plan.keep, plan.trained, 1e-4)
    times.append(time.perf_counter() - t)
    planner.observe(stats.cls_delta, stats.cls_norm)
print(json.dumps({"s_step": statistics.median(times[2:])}))
"""

TORCH_CHILD = r"""
import json, statistics, sys, time
import torch, transformers, peft
model_name, method, precision = sys.argv[1:4]
batch, tokens, steps = (int(a) for a in sys.argv[4:7])
torch.manual_seed(0)
if model_name == "vit-small":
    cfg = transformers.ViTConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12,
                                 num_attention_heads=6, intermediate_size=1536, num_labels=2)
    model = transformers.ViTForImageClassification(cfg)
    inputs = {"pixel_values": torch.randn(batch, 3, 224, 224)}
    targets = ["query", "key", "value"]  # edgetune's ViT default: the fused qkv
else:
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                                  num_attention_heads=12, intermediate_size=1536, num_labels=2)
    model = transformers.BertForSequenceClassification(cfg)
    inputs = {"input_ids": torch.randint(1000, 20000, (batch, tokens)),
              "attention_mask": torch.ones(batch, tokens, dtype=torch.long)}
    targets = ["query", "value"]
if method == "lora":
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="SEQ_CLS")
    model = peft.get_peft_model(model, lora)
model = model.cuda().train()
inputs = {k: v.cuda() for k, v in inputs.items()}
labels = torch.randint(0, 2, (batch,)).cuda()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
times = []
for i in range(steps + 2):
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(**inputs, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
peak = torch.cuda.max_memory_allocated() / 1e6
print(json.dumps({"s_step": statistics.median(times[2:]), "allocator_peak_mb": peak}))
"""


def gpu_memory_mb(pid: int) -> float:
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1]) * 1.048576  # MiB → MB
    return 0.0


def measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its JSON line, plus the peak GPU memory NVML saw for its process."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0.0]

    def poll():
        while proc.poll() is None:
            peak[0] = max(peak[0], gpu_memory_mb(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        return {"error": err.strip().splitlines()[-1][:200] if err.strip() else f"exit {proc.returncode}"}
    return {**json.loads(out.strip().splitlines()[-1]), "gpu_peak_mb": peak[0]}


def run(bundles: Path, steps: int) -> int:
    name = cuda_device()
    if name is None:
        print("no CUDA device (or no CUDA build of onnxruntime here): nothing to measure")
        return 0
    rows = []
    for model, cfg in MODELS.items():
        batch, tokens = cfg["batch"], cfg.get("tokens", 0)
        for method, schedule in EDGETUNE:
            folder = bundles / f"{model}-{method}"
            res = measured([sys.executable, "-c", EDGETUNE_CHILD, str(folder), schedule, str(batch),
                            str(tokens), str(steps)])
            rows.append((model, f"edgetune {method} ({schedule})", "fp32", res))
        for method, precision in TORCH:
            res = measured([sys.executable, "-c", TORCH_CHILD, model, method, precision, str(batch),
                            str(tokens), str(steps)])
            rows.append((model, f"torch + PEFT {method}", precision, res))
    print(f"\n{name}: median s/step over {steps} steps, peak GPU memory of the process (NVML)")
    print("| model | configuration | precision | s/step | GPU peak MB | torch allocator peak MB |")
    print("|---|---|---|---:|---:|---:|")
    for model, what, precision, res in rows:
        if "error" in res:
            print(f"| {model} | {what} | {precision} | error: {res['error']} | | |")
            continue
        alloc = f"{res['allocator_peak_mb']:.0f}" if "allocator_peak_mb" in res else ""
        print(f"| {model} | {what} | {precision} | {res['s_step']:.4f} | {res['gpu_peak_mb']:.0f} "
              f"| {alloc} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="export the bundles (workstation venv)")
    e.add_argument("--out", default="runs/gpu")
    r = sub.add_parser("run", help="measure (a venv with onnxruntime-gpu, torch, transformers, peft)")
    r.add_argument("--bundles", default="runs/gpu")
    r.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    if args.command == "export":
        export(Path(args.out))
        return 0
    return run(Path(args.bundles), args.steps)


if __name__ == "__main__":
    sys.exit(main())
