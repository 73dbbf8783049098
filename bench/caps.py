"""Do --ram-cap and --energy-cap hold, measured from outside?

For each model × method × schedule: an uncapped run, then runs capped at 100 / 70 / 50 % of
that run's peak RSS and one at 25 % (the refusal below the smallest plan), each `edgetune
train` in its own process, its peak RSS the kernel's high-water mark of that process
(wait4's ru_maxrss via edgetune.sensors.child, what /usr/bin/time -v prints). A run passes if
it trains every step with peak ≤ cap, or refuses before training (exit 2, no checkpoint);
it fails if it trains past its cap or crashes. Energy rows: a cap at the energy of loading
plus one step plus half of the other steps' (from uncapped runs of 1 and N steps); a run
passes if its total (the meter's, loading to the last checkpoint) is ≤ the cap.

    python bench/caps.py            # vit-tiny at 224 px, minilm-l6 × lora, full, prompt
    python bench/caps.py --quick    # vit-micro × lora at 150 / 100 / 50 % (a test runs it): the
                                    # runtime's own ~300 MB dominates, so the lower caps refuse
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from pathlib import Path

import numpy as np

from edgetune.bundle import MANIFEST
from edgetune.caps.units import format_bytes
from edgetune.sensors.child import ChildRun, run_measured
from edgetune.train.run_folder import RunFolder

FRACTIONS = (1.0, 0.7, 0.5, 0.25)
WORDS = ("the film is a quiet and moving study of grief with sharp writing and fine acting but "
         "its middle drags and the ending feels rushed though the cast keeps it alive").split()


def make_data(folder: Path, text: bool, n: int = 64) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    if text:  # every text long enough to fill every position: no padding shortcut
        path = folder / "train.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in range(n):
                w.writerow([" ".join(rng.choice(WORDS, 200)), int(i % 2)])
        return path
    path = folder / "train.npz"
    np.savez(path, x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 4, n))
    return path


def export(model: str, method: str, out: Path) -> Path:
    if (out / MANIFEST).is_file():
        return out
    from edgetune.export import export_bundle

    cfg = ["r=8"] if method == "lora" else []
    kw = {"max_tokens": 64} if not model.startswith("vit") else {}
    print(f"exporting {model} + {method} ...", file=sys.stderr, flush=True)
    export_bundle(model, method, out, method_config=cfg, num_classes=2 if not model.startswith("vit") else 4,
                  mode="both", overwrite=True, **kw)
    return out


def train(bundle: Path, data: Path, run: Path, schedule: str, steps: int, batch: int,
          *extra: str) -> ChildRun:
    cmd = [sys.executable, "-m", "edgetune.cli", "train", str(bundle), "--data", str(data),
           "--steps", str(steps), "--batch-size", str(batch), "--schedule", schedule,
           "--mode", "static" if schedule == "static" else "adaptive",
           "--out", str(run), "--quiet", *extra]
    return run_measured(cmd)


def step_seconds(run: Path) -> float:
    rows = RunFolder(run).metrics()
    return statistics.median(r["step_time"] for r in rows) if rows else float("nan")


def joules(stdout: str) -> float:
    m = re.search(r", ([0-9.]+)(k?)J$", stdout.strip())
    return float(m.group(1)) * (1000 if m.group(2) else 1) if m else float("nan")


def _trained(run: Path) -> bool:
    """Whether a run took a step (a refusal takes none; a failure mid-run is no refusal)."""
    return bool(RunFolder(run).metrics())


def refusal_note(stderr: str) -> str:
    """What a refusal asks for: the planner's smallest cap that would work ("asks"), or the
    floor checked before the parameters load ("floor"); else the message's end."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    m = re.search(r"smallest cap that would work is --ram-cap (\d+MB)", last)
    if m:
        return f"asks {m.group(1)}"
    m = re.search(r"a cap below --ram-cap (\d+MB) cannot work", last)
    return f"floor {m.group(1)}" if m else last[-90:]


def verdict(got: ChildRun, run: Path, cap: float, steps: int) -> str:
    if got.returncode == 2 and not _trained(run):
        return "PASS (refused)"
    if got.returncode == 0:
        rows = len(RunFolder(run).metrics())
        return "PASS" if got.peak_rss_bytes <= cap and rows == steps else "FAIL"
    return f"FAIL (exit {got.returncode})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="runs/bench-caps")
    args = ap.parse_args()
    out = Path(args.out)
    models = ("vit-micro",) if args.quick else ("vit-tiny", "minilm-l6")
    methods = ("lora",) if args.quick else ("lora", "full", "prompt")
    steps = 3 if args.quick else args.steps
    rows, energy_rows, failures = [], [], 0
    for model in models:
        data = make_data(out / "data" / model, text=not model.startswith("vit"))
        for method in methods:
            bundle = export(model, method, out / "bundles" / f"{model}-{method}")
            for schedule in ("static", "alast"):
                tag = f"{model}-{method}-{schedule}"
                free_run = out / "runs" / f"{tag}-free"
                free = train(bundle, data, _fresh(free_run), schedule, steps, args.batch_size)
                if free.returncode != 0:
                    print(free.stderr, file=sys.stderr)
                    failures += 1
                    continue
                rows.append((tag, "none", free.peak_rss_bytes, None, step_seconds(free_run), "-"))
                for frac in ((1.5, 1.0, 0.5) if args.quick else FRACTIONS):
                    cap = int(frac * free.peak_rss_bytes)
                    run = _fresh(out / "runs" / f"{tag}-{int(frac * 100)}")
                    got = train(bundle, data, run, schedule, steps, args.batch_size, "--ram-cap", f"{cap}B")
                    v = verdict(got, run, cap, steps)
                    failures += v.startswith("FAIL")
                    note = refusal_note(got.stderr) if got.returncode else ""
                    rows.append((tag, f"{frac:.0%}", got.peak_rss_bytes, cap, step_seconds(run),
                                 v + (f"  {note}" if note else "")))
                    print(_row(rows[-1]), file=sys.stderr, flush=True)
                if schedule == "alast" and method == "lora":
                    one = train(bundle, data, _fresh(out / "runs" / f"{tag}-e1"), schedule, 1,
                                args.batch_size)
                    e1, en = joules(one.stdout), joules(free.stdout)
                    cap_j = e1 + 0.5 * (en - e1)
                    run = _fresh(out / "runs" / f"{tag}-energy")
                    got = train(bundle, data, run, schedule, steps, args.batch_size,
                                "--energy-cap", f"{cap_j:.3f}J")
                    used = joules(got.stdout)
                    done = re.search(r"(\d+) steps", got.stdout)
                    refused = got.returncode == 2 and not _trained(run)
                    ok = refused or (got.returncode == 0 and used <= cap_j)
                    failures += not ok
                    v = "PASS (refused)" if refused else "PASS" if ok else f"FAIL (exit {got.returncode})"
                    energy_rows.append((tag, cap_j, used, int(done.group(1)) if done else 0, en, v))
    print(f"\n--ram-cap: {len(rows)} runs, {steps} steps of {args.batch_size}, peak RSS = the process's "
          "VmHWM measured from outside")
    print(f"{'configuration':28s} {'cap':>5s} {'cap MB':>8s} {'peak MB':>8s} {'peak/cap':>8s} "
          f"{'s/step':>7s}  result")
    for r in rows:
        print(_row(r))
    if energy_rows:
        print("\n--energy-cap (modelled or measured energy, loading to the last checkpoint)")
        print(f"{'configuration':28s} {'cap J':>8s} {'used J':>8s} {'steps':>6s} {'uncapped J':>10s}  result")
        for tag, cap_j, used, n, en, v in energy_rows:
            print(f"{tag:28s} {cap_j:8.1f} {used:8.1f} {n:6d} {en:10.1f}  {v}")
    print(f"\n{failures} failure(s)")
    return 1 if failures else 0


def _fresh(run: Path) -> Path:
    import shutil

    shutil.rmtree(run, ignore_errors=True)
    return run


def _row(r) -> str:
    tag, frac, peak, cap, sec, v = r
    ratio = f"{peak / cap:8.2f}" if cap else f"{'-':>8s}"
    capmb = format_bytes(cap) if cap else "-"
    return f"{tag:28s} {frac:>5s} {capmb:>8s} {format_bytes(peak):>8s} {ratio} {sec:7.3f}  {v}"


if __name__ == "__main__":
    sys.exit(main())
