#!/usr/bin/env bash
# Prove the device side on aarch64 (Raspberry Pi 5 / Jetson CPU platform) under qemu:
#   1. on the host (x86-64, the workstation venv): export three micro bundles (a ViT, a BERT,
#      a LLaMA-style language model) and their data;
#   2. in a Debian bookworm arm64 root (tools/aarch64-root.sh): a fresh venv,
#      pip install "<this checkout>[cpu]" from the project's own files (stock onnxruntime);
#   3. there: edgetune devices, then edgetune train on each bundle with --schedule static and
#      --schedule alast, and a check that the loss falls (mean of the last third of the steps
#      below the mean of the first third), and edgetune generate from the language model's run;
#   4. with --suite: the device side of the test suite there (pip install ".[cpu,test]", then
#      pytest on the micro bundles the workstation suite cached in build/test-bundles: run
#      `make test` on the host first), as `make test`'s second run does on x86-64.
# Slow under emulation (minutes), so not part of `make test`.  Must run as root.
#
#   tools/aarch64-check.sh [--steps N] [--suite] [ROOT]   # ROOT defaults to /work/arm64/root
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=40 SUITE=0
while [[ "${1:-}" == --* ]]; do
  case $1 in
    --steps) STEPS=$2; shift ;;
    --suite) SUITE=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
ROOT="${1:-/work/arm64/root}"
HOST_PY="${HOST_PY:-.venv/bin/python}"
log() { printf '[aarch64-check] %s\n' "$*" >&2; }

tools/aarch64-root.sh "$ROOT"
WORK=/opt/edgetune-check
rm -rf "$ROOT$WORK" && mkdir -p "$ROOT$WORK"

log "host: exporting micro bundles and data with $HOST_PY"
"$HOST_PY" - "$ROOT$WORK" <<'PY'
import sys
from pathlib import Path
import numpy as np
from edgetune.export import export_bundle
out = Path(sys.argv[1])
rng = np.random.default_rng(0)
y = rng.integers(0, 2, 128).astype(np.int64)           # class 1 brighter: learnable fast
x = (rng.integers(0, 160, (128, 32, 32, 3)) + 80 * y[:, None, None, None]).astype(np.uint8)
np.savez(out / "images.npz", x=x, y=y)
from edgetune.data.tokenizer import build_word_level_tokenizer
words = [("good great fine lovely", 1), ("bad awful poor dull", 0)]
rows = []
for i in range(128):
    text, label = words[i % 2]
    rows.append((" ".join(rng.choice(text.split(), 6)), label))
with open(out / "text.csv", "w") as f:
    f.write("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
tok = build_word_level_tokenizer([t for t, _ in rows], out / "tokenizer.json")
export_bundle("vit-micro", "lora", out / "vit-micro-lora", num_classes=2, overwrite=True)
export_bundle("bert-micro", "lora", out / "bert-micro-lora", num_classes=2, max_tokens=16,
              tokenizer=tok, overwrite=True)
# a language model: JSONL text, a byte-level BPE (end token 0, the preset's EOS)
import json
from edgetune.data.tokenizer import build_bpe_tokenizer
texts = [" ".join(rng.choice("the cat sat on a mat and ran to the park".split(), 10)) for _ in range(128)]
(out / "lm.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
build_bpe_tokenizer(texts, out / "lm-tokenizer.json", 512)
export_bundle("llama-micro", "lora", out / "llama-micro-lora", max_tokens=32,
              tokenizer=out / "lm-tokenizer.json", overwrite=True)
PY

log "copying the project's own files (git ls-files) into $ROOT$WORK/src"
mkdir -p "$ROOT$WORK/src"
git ls-files -z --cached --others --exclude-standard | grep -zv '^runs/' \
  | xargs -0 cp --parents -t "$ROOT$WORK/src"

in_root() { chroot "$ROOT" /usr/bin/env -u PIP_FIND_LINKS HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
log "arm64: fresh venv, pip install '$WORK/src[cpu]'"
in_root python3 -m venv "$WORK/venv"
in_root "$WORK/venv/bin/pip" install -q "$WORK/src[cpu]"
in_root "$WORK/venv/bin/python" -c "import platform, sys, onnxruntime; print('arm64 root:', platform.machine(), 'Python', sys.version.split()[0], 'onnxruntime', onnxruntime.__version__); import importlib.util as u; print('torch importable:', u.find_spec('torch') is not None)"
in_root "$WORK/venv/bin/edgetune" devices

status=0
for b in vit-micro-lora:images.npz:3e-3 bert-micro-lora:text.csv:1e-2 llama-micro-lora:lm.jsonl:1e-2; do
  IFS=: read -r bundle data lr <<< "$b"
  for schedule in static alast; do
    run=$WORK/runs/$bundle-$schedule
    log "arm64: edgetune train $bundle --schedule $schedule ($STEPS steps)"
    start=$(date +%s)
    in_root "$WORK/venv/bin/edgetune" train "$WORK/$bundle" --data "$WORK/$data" --steps "$STEPS" \
      --batch-size 16 --lr "$lr" --schedule "$schedule" --out "$run"
    in_root "$WORK/venv/bin/python" - "$run/metrics.jsonl" "$bundle" "$schedule" "$(( $(date +%s) - start ))" <<'PY' || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
loss = [r["loss"] for r in rows if "loss" in r]
k = max(1, len(loss) // 3)
first, last = sum(loss[:k]) / k, sum(loss[-k:]) / k
ok = last < first
print(f"RESULT {sys.argv[2]:16s} {sys.argv[3]:6s} {len(loss)} steps in {sys.argv[4]} s: "
      f"loss {first:.4f} (first {k}) -> {last:.4f} (last {k})  {'FALLS' if ok else 'DOES NOT FALL'}")
sys.exit(0 if ok else 1)
PY
  done
done
log "arm64: edgetune generate from the language model's run (KV-cache decoder, stock onnxruntime)"
in_root "$WORK/venv/bin/edgetune" generate "$WORK/runs/llama-micro-lora-static" --prompt "the cat" \
  --max-new-tokens 12 || status=1
if [[ $SUITE == 1 ]]; then
  [[ -d build/test-bundles ]] || { log "no build/test-bundles: run make test on the host first"; exit 1; }
  log "arm64: the device-side suite (pip install '$WORK/src[cpu,test]', cached micro bundles)"
  cp -r build/test-bundles "$ROOT$WORK/test-bundles"
  in_root "$WORK/venv/bin/pip" install -q -e "$WORK/src[cpu,test]"  # as make test's device venv
  in_root /usr/bin/env EDGETUNE_TEST_BUNDLES="$WORK/test-bundles" \
    /bin/sh -c "cd $WORK/src && $WORK/venv/bin/python -m pytest -q -p no:cacheprovider tests" || status=1
fi
tools/aarch64-root.sh --umount "$ROOT"
exit $status
