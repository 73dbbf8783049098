"""A run's validation curve against its cost, and runs compared at equal energy or time.

A run's model at cost ``c`` is its best checkpoint among the validations done by then (what
``--patience`` keeps): ``acc(c) = max{val_i : cost_i <= c}``. Cost is the run's meter
(``energy_j``, cumulative joules: RAPL / INA3221 / NVML where present, else the modelled meter;
run.json's ``energy_meter`` says which) or wall seconds inside training (``elapsed_s``). Two
runs compared at equal cost: at every validation point of the reference up to the cost at
which it reached its best (its convergence cost), the other's ``acc`` minus the reference's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COSTS = {"energy_j": "cumulative energy (J)", "elapsed_s": "wall seconds in training"}


def val_score(record: dict) -> float | None:
    """A validation record's accuracy the way the trainer scores it: an ALaST run's better of
    every token and its budgets (the way inference then keeps), else plain."""
    if "val_accuracy" not in record:
        return None
    return max(record["val_accuracy"], record.get("val_accuracy_trained", record["val_accuracy"]))


def curve(run: Path) -> dict:
    """The validations of ``run``: step, energy_j, elapsed_s, score and best score so far."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    pts = [(r["step"], r["energy_j"], r.get("elapsed_s"), val_score(r)) for r in rows]
    pts = [p for p in pts if p[3] is not None]
    info = json.loads((run / "run.json").read_text())
    scores = [p[3] for p in pts]
    return {"step": [p[0] for p in pts], "energy_j": [p[1] for p in pts],
            "elapsed_s": [p[2] for p in pts], "val": scores,
            "best": np.maximum.accumulate(scores).tolist() if scores else [],
            "meter": info.get("energy_meter", "unrecorded")}


def best_val(c: dict) -> tuple[float, int] | None:
    """(best validation score, the step it was reached at), None without validations."""
    if not c["val"]:
        return None
    i = int(np.argmax(c["val"]))
    return float(c["val"][i]), int(c["step"][i])


def acc_at(c: dict, key: str, budget: float) -> float | None:
    """The best validation score reached within ``budget`` of ``key``; None before the first."""
    got = [b for x, b in zip(c[key], c["best"]) if x is not None and x <= budget]
    return got[-1] if got else None


def compare(ref: dict, other: dict, key: str) -> dict:
    """``other`` vs ``ref`` at each of ref's validation costs up to its convergence cost: the
    gaps (other - ref, points), where other is below, and how many budgets it holds at or above."""
    if not ref["val"] or not other["val"]:
        return {"budgets": 0}
    stop = ref[key][int(np.argmax(ref["val"]))]
    rows = []
    for x in ref[key]:
        if x is None or x > stop:
            continue
        a_ref, a_other = acc_at(ref, key, x), acc_at(other, key, x)
        rows.append({"budget": x, "ref": a_ref, "other": a_other,
                     "gap_pt": None if a_other is None else 100 * (a_other - a_ref)})
    below = [r for r in rows if r["gap_pt"] is None or r["gap_pt"] < 0]
    return {"budgets": len(rows), "at_or_above": len(rows) - len(below), "convergence_cost": stop,
            "below": below, "rows": rows}


def plot(path: Path, title: str, curves: dict[str, dict], meter: str) -> None:
    """Best validation accuracy so far against joules (left) and wall seconds (right)."""
    from common import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key in zip(axes, COSTS):
        for label, c in curves.items():
            xs = [x for x in c[key] if x is not None]
            if xs:
                ax.step(xs, [100 * b for b in c["best"][:len(xs)]], where="post", marker=".", label=label)
        ax.set_xlabel(COSTS[key] + (f" — meter: {meter}" if key == "energy_j" else ""))
        ax.set_ylabel("best validation accuracy so far (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
