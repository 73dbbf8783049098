"""Pretrain a small ViT of our own on Fashion-MNIST, saved as a folder ``edgetune export`` loads.

No pretrained ViT installs offline, so ALaST's own domain needs one of ours. The model is our
``VisionTransformer`` (timm's parameter names), 6 blocks × 192 wide, 3 heads, at 28 px with
4 px patches (49 tokens + the class token), one input channel. 15 epochs under ``--bf16``
took 3592 s on 2 cores (AMD EPYC Zen 4, AVX512_BF16) and reached 88.9 % on the test split;
``--init FOLDER`` starts from an earlier run's weights: a second cosine cycle (8 epochs at
5e-4, 1944 s) reached 90.1 % (docs/methods.md). Fine-tuning may run at more tokens (56 px → 196)
through position-embedding interpolation, the usual low-resolution pretrain, high-resolution
fine-tune.

Recipe: random crops (pad 2) and horizontal flips, AdamW (lr 1e-3, weight decay 0.05), linear
warm-up then cosine decay, label smoothing 0.1, batch 128. Data: the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``; nothing downloads).

    .venv/bin/python bench/pretrain_vit.py --bf16 --out runs/vit-fmnist     # 15 epochs, ~1 h
    .venv/bin/python bench/pretrain_vit.py --quick --out /tmp/vit-quick     # a smoke run

Writes ``OUT/config.json`` (``model_type: vit`` and our ViTConfig fields), ``OUT/model.safetensors``
and ``OUT/results.json`` (test accuracy per epoch, seconds), atomically.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
MODEL = {"image_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 192, "depth": 6,
         "num_heads": 3, "mlp_ratio": 4.0, "layer_norm_eps": 1e-6}
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel statistics (of x / 255)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format) as a numpy array."""
    with gzip.open(path, "rb") as f:
        magic = f.read(4)
        if magic[:2] != b"\0\0" or magic[2] != 0x08:
            raise SystemExit(f"{path}: not an unsigned-byte IDX file")
        dims = struct.unpack(">" + "I" * magic[3], f.read(4 * magic[3]))
        return np.frombuffer(f.read(), np.uint8).reshape(dims).copy()  # writable: torch wants it


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (DATA / name for name in FILES[split])
    if not images.is_file():
        raise SystemExit(f"{images}: missing; apt-get install dataset-fashion-mnist")
    return read_idx(images), read_idx(labels).astype(np.int64)


def augment(x, rng):
    """Random 28 px crops of the image padded by 2, and horizontal flips (a torch batch)."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = rng.integers(0, 5, n), rng.integers(0, 5, n)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(n)])
    flip = torch.from_numpy(rng.random(n) < 0.5)
    out[flip] = out[flip].flip(-1)
    return out


def to_tensor(images: np.ndarray):
    import torch

    return (torch.from_numpy(images).float().div_(255.0).sub_(MEAN).div_(STD)).unsqueeze(1)


def evaluate(model, images, labels, batch: int = 512) -> float:
    import torch

    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = model(to_tensor(images[i:i + batch]))
            hits += int((logits.argmax(-1).numpy() == labels[i:i + batch]).sum())
    model.train()
    return hits / len(images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=float, default=15.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=300, help="linear warm-up steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast for the forward (float32 weights and optimizer): about 2x "
                        "faster on CPUs with AVX512_BF16 or AMX, slower elsewhere")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="512 training images, 20 steps")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this folder's model.safetensors (an earlier run of this script)")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from edgetune.atomic import atomic_dir
    from edgetune.export.models.vit import VisionTransformer, ViTConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = load("train")
    x_test, y_test = load("test")
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:512], y_train[:512], x_test[:512], y_test[:512]
    model = VisionTransformer(ViTConfig(**MODEL, num_classes=10))
    if args.init is not None:
        from safetensors.torch import load_file

        if not (args.init / "model.safetensors").is_file():
            raise SystemExit(f"--init {args.init}: no model.safetensors "
                             "(bench/pretrain_vit.py --out writes one)")
        model.load_state_dict(load_file(str(args.init / "model.safetensors")))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr)
    per_epoch = len(x_train) // args.batch_size
    total = 20 if args.quick else max(1, round(args.epochs * per_epoch))
    warmup = min(args.warmup, total // 4)
    history, t0, step = [], time.time(), 0
    model.train()
    while step < total:
        order = rng.permutation(len(x_train))
        for i in range(per_epoch):
            if step >= total:
                break
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            lr = args.lr * ((step + 1) / warmup if step < warmup else
                            0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
            for g in opt.param_groups:
                g["lr"] = lr
            x = augment(to_tensor(x_train[idx]), rng)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = F.cross_entropy(model(x), torch.from_numpy(y_train[idx]), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step}/{total}  loss {loss.item():.4f}  lr {lr:.2e}  "
                      f"{time.time() - t0:.0f} s", flush=True)
        acc = evaluate(model, x_test, y_test)
        history.append({"step": step, "test_accuracy": acc, "seconds": round(time.time() - t0, 1)})
        print(f"epoch done at step {step}: test accuracy {acc:.4f}", flush=True)
    with atomic_dir(Path(args.out), overwrite=True) as tmp:
        # image_mean/std: the exporter normalises the device's pixels the same way by default
        (tmp / "config.json").write_text(json.dumps({"model_type": "vit", **MODEL, "image_mean": MEAN,
                                                     "image_std": STD}, indent=1))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "results.json").write_text(json.dumps({
            "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)", "model": MODEL,
            "train_images": len(x_train), "test_images": len(x_test), "steps": step,
            "batch_size": args.batch_size, "lr": args.lr, "bf16": args.bf16,
            "init": str(args.init) if args.init else None, "history": history,
            "test_accuracy": history[-1]["test_accuracy"]}, indent=1))
    print(f"wrote {args.out}: test accuracy {history[-1]['test_accuracy']:.4f} in "
          f"{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
