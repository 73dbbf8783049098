"""Why the smallest plan cannot meet the caps, with the smallest cap values that would work."""

from __future__ import annotations

from edgetune.caps.estimate import StepEstimate, StepEstimator
from edgetune.caps.units import format_bytes, format_joules, format_watts


def ram_message(model: StepEstimator, est: StepEstimate, steps_done: int = 0,
                during: bool = False) -> str:
    need = est.memory.total / (1.0 - model.settings.safety)
    profile, caps = model.profile, model.caps
    device = profile.ram_bytes
    where = f"at step {steps_done + 1}, measured RSS puts " if during else ""
    layers = (f"train layer {model.costs.num_layers - 1} only" if model.settings.shrink_layers
              else "every layer trained")
    msg = (f"{where}the smallest plan (keep {int(est.plan.keep[0])} of {est.n_tokens} tokens per "
           f"layer, {layers}, micro-batch 1) at a predicted "
           f"peak RSS of {format_bytes(est.memory.total, True)} (base "
           f"{format_bytes(est.memory.base, True)})")
    if need > device:
        return (f"{msg} does not fit in the {profile.name} device's "
                f"{format_bytes(device)} of RAM")
    cap = format_bytes(caps.ram_bytes) if caps.ram_bytes else "?"
    return (f"--ram-cap {cap}: {msg} does not fit with a {model.settings.safety:.0%} safety "
            f"margin; the smallest cap that would work is --ram-cap {format_bytes(need, True)}")


def problems(model: StepEstimator, est: StepEstimate, total_steps: int) -> list[str]:
    """Every cap the smallest plan ``est`` violates over ``total_steps`` steps."""
    caps, profile = model.caps, model.profile
    out = []
    if not est.fits_ram:
        out.append(ram_message(model, est))
    if caps.energy_joules is not None:
        need = est.joules * total_steps
        if need > caps.energy_joules:
            out.append(
                f"--energy-cap {format_joules(caps.energy_joules)}: {total_steps} steps "
                f"of the smallest plan take a predicted {format_joules(need, True)} "
                f"({format_joules(est.joules)} per step); the smallest cap that would work is "
                f"--energy-cap {format_joules(need, True)}, or train fewer steps")
    cap = caps.power_watts
    if cap is not None and cap <= profile.idle_watts:
        out.append(
            f"--power-cap {format_watts(cap)}: the {profile.name} device draws "
            f"{format_watts(profile.idle_watts)} idle; the cap must be above that "
            f"(pauses between steps bring the mean down to idle power at best)")
    return out
