"""The end of a batch: a summary table and the score before and after refinement (paper Figure 7).

Both read manifest records only. "Before" is the scorecard total of the
initial plan, "after" that of the final (best) plan of Algorithm 1. Plans
without a score (a site with no scorecard) are counted but not averaged or
drawn. The figure is drawn with an explicit Agg canvas (no pyplot) and
written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from airtp.case import atomic_write

__all__ = ["summary_table", "score_figure", "groups"]

_BEFORE, _AFTER = "#9e9e9e", "#1f78b4"


def groups(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Records by (site, technique), sorted; a case that could not be read has site '?'."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        out.setdefault((r.get("site") or "?", r.get("technique") or "?"), []).append(r)
    return dict(sorted(out.items()))


def _scored(rs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["score_initial"], r["score_final"]) for r in rs
             if r["status"] == "done" and r.get("score_initial") is not None and r.get("score_final") is not None]
    a = np.array(pairs, dtype=float).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def summary_table(records: list[dict]) -> str:
    """Per site and technique: plans done and failed, mean score before and after, mean gain, plans improved;
    then every task not done with its error."""
    head = (f"{'site':<6} {'technique':<9} {'done':>5} {'failed':>6} {'before':>8} {'after':>8} {'gain':>7} "
            f"{'improved':>9}")
    lines = [head, "-" * len(head)]
    for (site, tech), rs in groups(records).items():
        before, after = _scored(rs)
        done = sum(r["status"] == "done" for r in rs)
        if before.size:
            gain = after - before
            stats = (f"{before.mean():8.2f} {after.mean():8.2f} {gain.mean():+7.2f} "
                     f"{f'{int((gain > 0).sum())}/{gain.size}':>9}")
        else:
            stats = f"{'-':>8} {'-':>8} {'-':>7} {'-':>9}"
        lines.append(f"{site:<6} {tech:<9} {done:5d} {len(rs) - done:6d} {stats}")
    done = sum(r["status"] == "done" for r in records)
    lines.append(f"{'all':<16} {done:5d} {len(records) - done:6d}")
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        lines += ["", "Not done:"]
        lines += [f"  {r['task']}: {r['status']}: {r.get('error') or 'not finished'}" for r in failed]
    return "\n".join(lines)


def _draw_site(ax, site: str, by_tech: dict[str, list[dict]]) -> None:
    rng = np.random.default_rng(0)  # the same jitter every time: figures are reproducible
    ticks, labels = [], []
    for i, (tech, rs) in enumerate(by_tech.items()):
        before, after = _scored(rs)
        x0, x1 = 3 * i, 3 * i + 1
        ticks.append(x0 + 0.5)
        labels.append(f"{tech}\n(n={before.size})")
        if not before.size:
            continue
        for x, values, colour in ((x0, before, _BEFORE), (x1, after, _AFTER)):
            ax.boxplot(values, positions=[x], widths=0.7, patch_artist=True, showfliers=False,
                       boxprops={"facecolor": colour, "alpha": 0.35}, medianprops={"color": colour})
        jitter = rng.uniform(-0.12, 0.12, before.size)
        for b, a, j in zip(before, after, jitter):  # one line per plan: the pairing is the point of the figure
            ax.plot([x0 + j, x1 + j], [b, a], color="#555555", alpha=0.35, lw=0.8)
        ax.scatter(x0 + jitter, before, s=12, color=_BEFORE, zorder=3)
        ax.scatter(x1 + jitter, after, s=12, color=_AFTER, zorder=3)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.set_title({"hn": "head and neck", "lung": "lung"}.get(site, site))
    ax.grid(axis="y", alpha=0.3)


def score_figure(records: list[dict], path) -> Path | None:
    """Box plots of the score before and after refinement per site and technique, each plan's pair joined
    by a line; PNG at `path`. None (and no file) when no plan has a score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sites: dict[str, dict[str, list[dict]]] = {}
    for (site, tech), rs in groups(records).items():
        if _scored(rs)[0].size:
            sites.setdefault(site, {})[tech] = rs
    if not sites:
        return None
    width = sum(1.0 + 1.6 * len(v) for v in sites.values()) + 1.0
    fig = Figure(figsize=(max(5.0, width), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sites), squeeze=False)[0]
    for ax, (site, by_tech) in zip(axes, sites.items()):
        _draw_site(ax, site, by_tech)
    axes[0].set_ylabel("scorecard total")
    fig.legend(handles=[Patch(color=_BEFORE, alpha=0.6, label="before refinement (initial plan)"),
                        Patch(color=_AFTER, alpha=0.6, label="after refinement (final plan)")],
               loc="lower center", ncol=2, frameon=False)
    fig.suptitle("Plan quality before and after iterative refinement (cf. paper Figure 7)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    path = Path(path)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path
