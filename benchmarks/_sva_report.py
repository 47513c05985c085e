"""The storage benchmark's summary and plot, from its results rows (benchmarks/storage_vs_accuracy.py).

Rows are aggregated by (source, teacher, codec, S, schedule label): the label is the
schedule's name, followed by ``[recipe]`` for students of another recipe than this project's
(``HALD [hald]``: HALD's schedule under HALD's own training recipe).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DEFAULT_RECIPE = "labelstore"


def label(schedule: str, recipe: str = DEFAULT_RECIPE) -> str:
    """A schedule's name in the tables: ``HALD``, or ``HALD [hald]`` under another recipe."""
    return schedule if recipe == DEFAULT_RECIPE else f"{schedule} [{recipe}]"


def labels(a) -> list[str]:
    """Every (schedule, recipe) column of the grid `a` names, recipe-major."""
    return [label(s, rc) for rc in getattr(a, "recipes", [DEFAULT_RECIPE]) for s in a.schedules]


def _agg(rows):
    """(source, teacher, codec, S, schedule label) -> (mean acc, std acc, n, bytes)."""
    g: dict = {}
    for r in rows:
        k = (r["source"], r["teacher"], r["codec"], int(r["S"]), label(r["schedule"], r.get("recipe") or DEFAULT_RECIPE))
        g.setdefault(k, []).append((float(r["test_acc"]), int(r["label_bytes"])))
    return {k: (float(np.mean([x for x, _ in v])), float(np.std([x for x, _ in v])), len(v), v[0][1]) for k, v in g.items()}


def summarise(rows, a, root: Path) -> dict:
    """Print the tables and the verdicts on the targets; write summary.json and the plot."""
    agg = _agg(rows)
    cols = labels(a)
    lines, summary = [], {"targets": {}}
    for source in a.sources:
        mm = sorted({float(r["mismatch"]) for r in rows if r["source"] == source and r["teacher"] == "single"})
        lines.append(f"\n{source} images, single teacher, dense16 (mean of seeds, test top-1 %); stored crops whose "
                     f"teacher top-1 is not the image's class: {', '.join(f'{100 * m:.1f}%' for m in mm) or 'n/a'}")
        hard = agg.get((source, "single", a.codecs[0], min(a.S), "all-hard"))
        lines.append(f"  {'S':>4} {'bytes':>9} " + " ".join(f"{s:>12}" for s in cols if s != "all-hard")
                     + (f"   all-hard {100 * hard[0]:.2f}" if hard else ""))
        for S in a.S:
            cells = [agg.get((source, "single", "dense16", S, s)) for s in cols if s != "all-hard"]
            if not any(cells):
                continue
            nbytes = next(c[3] for c in cells if c)
            lines.append(f"  {S:>4} {nbytes:>9,} " + " ".join(f"{100 * c[0]:>7.2f}±{100 * c[1]:<4.1f}" if c else f"{'-':>12}" for c in cells))
        soft = {S: agg.get((source, "single", "dense16", S, "all-soft")) for S in a.S}
        hald = {S: agg.get((source, "single", "dense16", S, "HALD")) for S in a.S}
        S1 = min(a.S)
        t = summary["targets"].setdefault(source, {})
        if soft[S1] and hald[S1]:
            d = 100 * (hald[S1][0] - soft[S1][0])
            t["hald_minus_soft_at_S1"] = round(d, 2)
            lines.append(f"  HALD - all-soft at S={S1}: {d:+.2f} points (target >= +5 on real images: "
                         f"{'met' if d >= 5 else 'MISSED'})")
        wins = [S for S in a.S if soft[S] and hald[S] and hald[S][0] > soft[S][0]]
        losses = [S for S in a.S if soft[S] and hald[S] and hald[S][0] <= soft[S][0]]
        lines.append(f"  HALD beats all-soft at S={wins or 'none'}; loses or ties at S={losses or 'none'}")
        for sched in (s for s in cols if s not in ("all-soft", "HALD", "all-hard")):
            # the 'dominating' target: never > 1 point below all-soft, and above HALD at the smallest S
            cand = {S: agg.get((source, "single", "dense16", S, sched)) for S in a.S}
            deltas = [(100 * (cand[S][0] - soft[S][0]), S) for S in a.S if cand[S] and soft[S]]
            if not deltas:
                continue
            worst = min(deltas)
            beat = bool(cand[S1] and hald[S1] and cand[S1][0] > hald[S1][0])
            t[f"{sched}_worst_vs_soft"], t[f"{sched}_beats_hald_at_S1"] = round(worst[0], 2), beat
            lines.append(f"  {sched} vs all-soft: worst {worst[0]:+.2f} points (at S={worst[1]}; target >= -1: "
                         f"{'met' if worst[0] >= -1 else 'MISSED'}); beats HALD at S={S1}: {'yes' if beat else 'NO'}"
                         + (f" ({100 * (cand[S1][0] - hald[S1][0]):+.2f})" if cand[S1] and hald[S1] else ""))
        ref = agg.get((source, "single", "dense16", 300, "all-soft"))
        if ref:
            cands = [(k, v) for k, v in agg.items() if k[0] == source and k[1] == "single" and k[4] != "all-hard"
                     and 0 < v[3] <= ref[3] / 20 and v[0] >= ref[0]]
            best = max(cands, key=lambda kv: kv[1][0]) if cands else None
            t["s300_reached_with_1_20_bytes"] = bool(best)
            lines.append(f"  S=300 dense16 all-soft: {100 * ref[0]:.2f}% at {ref[3]:,} B; reached with <= 1/20 of the "
                         f"bytes: " + (f"yes, {best[0][2]} S={best[0][3]} {best[0][4]} {100 * best[1][0]:.2f}% at {best[1][3]:,} B"
                                       if best else "NO"))
        others = [(k, v) for k, v in agg.items() if k[0] == source and k[1] == "single" and k[2] != "dense16"]
        for k, v in sorted(others):
            lines.append(f"  codec {k[2]:15} S={k[3]:<4} {k[4]:12} {100 * v[0]:.2f}±{100 * v[1]:.1f} at {v[3]:,} B")
        com = [(k, v) for k, v in agg.items() if k[0] == source and k[1] == "committee"]
        for k, v in sorted(com):
            single = agg.get((source, "single", k[2], k[3], k[4]))
            lines.append(f"  committee {k[4]:9} S={k[3]:<4} {100 * v[0]:.2f}% vs single teacher "
                         + (f"{100 * single[0]:.2f}% ({100 * (v[0] - single[0]):+.2f})" if single else "n/a"))
    best = max(((k, v) for k, v in agg.items()), key=lambda kv: kv[1][0], default=None)
    if best:
        summary["best"] = {"setting": list(best[0]), "test_acc": best[1][0]}
        lines.append(f"\nbest setting: {best[0]} {100 * best[1][0]:.2f}% (target >= 85%: "
                     f"{'met' if best[1][0] >= 0.85 else 'MISSED'})")
    text = "\n".join(lines)
    print(text)
    summary["text"] = text
    summary["args"] = vars(a)
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plot(agg, a, root / "storage_vs_accuracy.png")
    return summary


def plot(agg, a, path: Path) -> None:
    """One panel per image set: test top-1 vs label bytes, a line per (schedule, codec); one shared legend."""
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend switch, no figure kept open

    sources = [s for s in a.sources if any(k[0] == s for k in agg)]
    fig = Figure(figsize=(5.5 * max(1, len(sources)), 4.6))
    axes = fig.subplots(1, max(1, len(sources)), squeeze=False)
    colors = {"all-soft": "tab:orange", "HALD": "tab:blue", "all-hard": "tab:gray", "drift-gated": "tab:green",
              "HALD-drift": "tab:purple", "HALD-short": "tab:cyan", "blend": "tab:olive", "HALD-auto": "tab:red",
              "all-soft+correct": "tab:brown", "HALD+correct": "tab:pink", "HALD-auto+correct": "darkred"}
    markers = {"dense16": "o", "dense_q:bits=8": "s", "dense_q:bits=4": "^", "topk:k=3": "D"}
    legend: dict = {}
    for ax, source in zip(axes[0], sources):
        for sched in labels(a):
            if sched == "all-hard":  # no label bytes: a level line, its value written on it
                v = agg.get((source, "single", a.codecs[0], min(a.S), "all-hard"))
                if v:
                    legend["all-hard (0 B)"] = ax.axhline(100 * v[0], color=colors[sched], ls="--")
                    ax.annotate(f"all-hard {100 * v[0]:.1f}", (1, 100 * v[0]), xycoords=("axes fraction", "data"),
                                ha="right", va="bottom", fontsize=7, color=colors[sched])
                continue
            for codec in a.codecs:
                pts = sorted((v[3], v[0], v[1]) for k, v in agg.items()
                             if k[0] == source and k[1] == "single" and k[2] == codec and k[4] == sched)
                if pts:
                    x, y, e = zip(*pts)
                    base, _, recipe = sched.partition(" [")
                    line = ax.errorbar(x, 100 * np.array(y), yerr=100 * np.array(e), color=colors.get(base),
                                       marker=markers.get(codec, "x"),
                                       ls=("--" if recipe else "-") if codec == "dense16" else ":",
                                       capsize=3, alpha=1 if codec == "dense16" else 0.6)
                    legend.setdefault(sched if codec == "dense16" else f"{sched} {codec}", line)
        ax.set(xscale="log", xlabel="label bytes (file on disk)", ylabel="test top-1 (%)",
               title=f"Fashion-MNIST 10 img/class: {source}")
        ax.grid(alpha=0.3)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(6, max(1, len(legend))), fontsize=7)
    rows = -(-len(legend) // 6)
    fig.tight_layout(rect=(0, 0.05 * rows + 0.02, 1, 1))
    fig.savefig(path, dpi=120)
