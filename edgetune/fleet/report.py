"""A fleet folder's rounds as a table: each client's plan, joules and peak RSS, and the
round's central accuracy."""

from __future__ import annotations

from edgetune.fleet.folder import FleetFolder


def _plan(row: dict) -> str:
    kept = row.get("tokens_kept") or []
    tokens = f"{min(kept):.0f}-{max(kept):.0f} tok" if kept else "-"
    return f"{row.get('layers_trained', 0):.1f} layers, {tokens}, mb {row.get('micro_batch', 0)}"


def round_table(folder: FleetFolder) -> str:
    rows = folder.metrics()
    central = {r["round"]: r for r in rows if r.get("central")}
    lines = [f"{'round':>5}  {'client':<12} {'device':<18} {'status':<8} {'steps':>5} {'samples':>7} "
             f"{'joules':>8} {'peak RSS':>9}  plan / reason"]
    for r in rows:
        if r.get("client") is None:
            continue
        if r["status"] == "accepted":
            lines.append(f"{r['round']:>5}  {r['client']:<12} {r.get('device', ''):<18} {r['status']:<8} "
                         f"{r['steps']:>5} {r['samples']:>7} {r['joules']:>7.1f}J "
                         f"{r['peak_rss_mb']:>6.0f} MB  {_plan(r)}")
        else:
            lines.append(f"{r['round']:>5}  {r['client']:<12} {'':<18} {r['status']:<8} {'':>5} {'':>7} "
                         f"{'':>8} {'':>9}  {r['reason'][:80]}")
    for n, r in sorted(central.items()):
        lines.append(f"round {n}: central accuracy {r['accuracy']:.4f} "
                     f"(loss {r['loss']:.4f}, {r['count']} samples)")
    return "\n".join(lines)
