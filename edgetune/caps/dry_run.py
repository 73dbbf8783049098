"""``edgetune plan``: the first step's plan under the caps, without training.

    report = plan_report(bundle.manifest, get_device("raspberry-pi-5"), Caps.parse(ram="600MB"),
                         batch_size=16, schedule="alast", steps=500)
    print("\\n".join(format_report(report)))

The report is the cap planner's first plan for a full-length batch (ALaST's first step keeps
every token and trains K layers), with the prediction behind it: memory by term, FLOPs,
energy, time, the pause a power cap needs, and the smallest plan for reference. Predictions are
uncalibrated (the base RSS is the prior of :mod:`edgetune.caps.calibration`; time assumes
the CPU's peak FLOP/s, so real steps take longer). Caps no plan can meet raise
:class:`~edgetune.errors.EdgetuneError` naming the smallest caps that would work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from edgetune.bundle import drops_tokens
from edgetune.caps.cost_model import activation_bytes_per_sample
from edgetune.caps.limits import Caps
from edgetune.caps.planner import CapPlanner, CapSettings, StepEstimate
from edgetune.caps.units import MB, format_bytes, format_joules, format_watts
from edgetune.devices import DeviceProfile
from edgetune.engine_caps import mode_caps, pick_mode
from edgetune.errors import UsageError
from edgetune.schedule.alast import AlastConfig, AlastPlanner
from edgetune.schedule.static import StaticPlanner

SCHEDULES = ("alast", "static")


def _estimate_dict(planner: CapPlanner, est: StepEstimate) -> dict[str, Any]:
    plan = est.plan
    acts = activation_bytes_per_sample(planner.costs, plan.keep, plan.trained, est.n_tokens)
    t_in = [est.n_tokens] + plan.keep[:-1].tolist()
    layers = [{"layer": i, "tokens_in": int(t_in[i]), "keep": int(plan.keep[i]),
               "trained": bool(plan.trained[i]), "forward_flops": float(est.flops.forward[i]),
               "backward_flops": float(est.flops.backward[i]),
               "activation_bytes": float(acts[i] * plan.micro_batch)}
              for i in range(planner.costs.num_layers)]
    return {
        "plan": plan.to_dict(), "layers": layers, "micro_batch": plan.micro_batch,
        "accumulation_steps": math.ceil(est.batch_size / plan.micro_batch),
        "memory": est.memory.to_dict(), "flops": {
            "forward": float(est.flops.forward.sum()), "backward": float(est.flops.backward.sum()),
            "total": est.flops.total},
        "energy_joules": est.joules, "step_seconds": est.seconds,
        "pause_seconds": est.pause_seconds, "fits_ram": est.fits_ram,
        "fits_energy": est.fits_energy, "changes": list(est.changes),
    }


def plan_report(manifest: Mapping[str, Any], profile: DeviceProfile, caps: Caps, batch_size: int,
                schedule: str = "alast", steps: int = 1, alast: AlastConfig | None = None,
                settings: CapSettings | None = None) -> dict[str, Any]:
    """JSON-ready dry run: the first step's plan and its predicted costs (see the module doc).

    ``steps``: the run's length, which spreads an energy cap over steps. ``settings`` default:
    layers may shrink with ``alast`` (adaptive engine), not with ``static`` (static engine).
    """
    if schedule not in SCHEDULES:
        raise UsageError(f"schedule={schedule!r}: must be one of {', '.join(SCHEDULES)}")
    L, n = int(manifest["model"]["num_layers"]), int(manifest["tokens"])
    inner = (AlastPlanner(L, n, alast, drop_tokens=drops_tokens(dict(manifest))) if schedule == "alast"
             else StaticPlanner(L))
    if settings is None:  # the engine `edgetune train` would pick
        mode = pick_mode(schedule, manifest.get("modes", ["static", "adaptive"]), caps.ram_bytes is not None)
        settings = CapSettings.for_bundle(manifest, mode_caps(mode).memory)
    planner = CapPlanner(inner, manifest, profile, caps, steps, batch_size, settings)
    smallest = planner.check_feasible()
    wanted = inner.plan(n, batch_size)
    planner.plan(n, batch_size)
    first = planner.last
    assert first is not None
    unshrunk = planner.estimate(wanted.keep, wanted.trained, wanted.micro_batch, n, batch_size)
    out = {
        "model": manifest["model"].get("name"), "device": profile.name, "caps": caps.to_dict(),
        "schedule": schedule, "batch_size": batch_size, "steps": steps, "tokens": n,
        "ram_limit_bytes": planner.ram_limit, "safety": settings.safety,
        "energy_allowance_joules": (None if caps.energy_joules is None
                                    else caps.energy_joules / steps),
        "step": _estimate_dict(planner, first),
        "unshrunk": _estimate_dict(planner, unshrunk),
        "smallest": _estimate_dict(planner, smallest),
    }
    if first.joules > 0:
        out["steps_per_kj"] = 1e3 / first.joules
    return out


def _gflop(f: float) -> str:
    return f"{f / 1e9:.3g}"


def format_report(report: Mapping[str, Any]) -> list[str]:
    """Printable lines of a :func:`plan_report`."""
    step = report["step"]
    caps = Caps(**report["caps"])
    lines = [f"{report['model']} on {report['device']}: schedule {report['schedule']}, batch "
             f"{report['batch_size']}, {report['tokens']} tokens, {report['steps']} step(s); "
             f"caps: {caps.describe()}"]
    lines.append("shrunk to fit: " + (", ".join(step["changes"]) or "nothing (the plan fits as is)"))
    if not step["fits_energy"]:
        lines.append("warning: no plan meets the per-step energy allowance; the cheapest runs")
    lines.append("")
    lines.append(f"{'layer':>5} {'tokens in':>9} {'keep':>5} {'trained':>7} {'fwd GFLOP':>10} "
                 f"{'bwd GFLOP':>10} {'act MB':>8}")
    for r in step["layers"]:
        lines.append(f"{r['layer']:>5} {r['tokens_in']:>9} {r['keep']:>5} "
                     f"{'yes' if r['trained'] else '-':>7} {_gflop(r['forward_flops']):>10} "
                     f"{_gflop(r['backward_flops']):>10} {r['activation_bytes'] / MB:>8.2f}")
    mem = step["memory"]
    lines.append("")
    lines.append(f"micro-batch {step['micro_batch']} x {step['accumulation_steps']} accumulated")
    lines.append("predicted peak RSS " + format_bytes(mem["total"]) + " = " + " + ".join(
        f"{k} {format_bytes(mem[k])}" for k in ("base", "params", "optimizer", "gradients",
                                                 "activations", "working", "host", "checkpoint"))
        + f"  (limit {format_bytes(report['ram_limit_bytes'])} after a "
          f"{report['safety']:.0%} margin)")
    lines.append(f"FLOPs per step {_gflop(step['flops']['total'])} GFLOP (forward "
                 f"{_gflop(step['flops']['forward'])}, backward {_gflop(step['flops']['backward'])})")
    energy = f"energy per step {format_joules(step['energy_joules'])}"
    if report.get("energy_allowance_joules") is not None:
        energy += f" (allowance {format_joules(report['energy_allowance_joules'])})"
    lines.append(energy)
    t = step["step_seconds"]
    timing = f"step time >= {t:.3g} s at the CPU's peak FLOP/s"
    if step["pause_seconds"] > 0:
        timing += (f"; pause {step['pause_seconds']:.3g} s after each step for "
                   f"{format_watts(report['caps']['power_watts'])}")
    lines.append(timing)
    un, sm = report["unshrunk"], report["smallest"]
    lines.append(f"unshrunk plan: peak {format_bytes(un['memory']['total'])}, "
                 f"{format_joules(un['energy_joules'])}/step; smallest plan: peak "
                 f"{format_bytes(sm['memory']['total'])}, {format_joules(sm['energy_joules'])}/step")
    return lines

