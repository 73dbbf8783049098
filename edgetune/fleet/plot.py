"""``rounds.png`` of a fleet folder: central accuracy, each client's joules and peak RSS per
round. matplotlib is the workstation's (``edgetune[bench]``); without it the metrics stay
JSONL and this says so."""

from __future__ import annotations

from collections import defaultdict

from edgetune.fleet.folder import FleetFolder


def plot_rounds(folder: FleetFolder) -> str:
    """Write the plot; a line saying where (or why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"{folder.metrics_file}: per-round metrics (no matplotlib here for {folder.plot_file.name})"
    rows = folder.metrics()
    central = sorted((r["round"], r["accuracy"]) for r in rows if r.get("central"))
    per_client: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("client") and r.get("status") == "accepted":
            for key in ("joules", "peak_rss_mb"):
                per_client[r["client"]][key].append((r["round"], float(r[key])))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if central:
        axes[0].plot(*zip(*central), marker="o")
    axes[0].set(title="central accuracy", xlabel="round")
    for client, series in sorted(per_client.items()):
        for ax, key in zip(axes[1:], ("joules", "peak_rss_mb")):
            ax.plot(*zip(*sorted(series[key])), marker="o", label=client)
    axes[1].set(title="joules per round (each client)", xlabel="round")
    axes[2].set(title="peak RSS, MB (each client)", xlabel="round")
    if per_client:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder.plot_file, dpi=110)
    plt.close(fig)
    return f"{folder.plot_file}: accuracy, joules and peak RSS per round"
