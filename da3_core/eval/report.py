"""Evaluation report: ``results.json`` (everything), ``report.md`` (tables) and PNG plots drawn with PIL.

Plots (``plots/``): per-scene bars of the headline metrics (``bars_<metric>.png``), the pose accuracy curve
(fraction of view pairs whose max(rotation, translation) error is below a threshold, 0-30 degrees, per scene and
pooled: ``pose_accuracy_curve.png``), and per scene a depth panel (ground truth | aligned prediction | AbsRel error
map, a few views: ``depth_<k>.png``). Pillow is already a runtime dependency, so no plotting library is needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from da3_core.eval.pose_metrics import accuracy_curve

__all__ = ["write_report", "colorize", "bar_chart", "line_chart"]

_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)  # viridis
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
HEADLINE = [("pose.auc@3", "Pose AUC@3 (higher is better)", 1.0),
            ("pose.auc@30", "Pose AUC@30 (higher is better)", 1.0),
            ("depth.abs_rel", "Depth AbsRel (lower is better)", None), ("depth.delta1", "Depth delta1 (higher)", 1.0),
            ("reconstruction.f1", "Reconstruction F1 (higher)", 1.0),
            ("reconstruction.chamfer", "Chamfer distance (lower, GT units)", None)]


def _font():
    return ImageFont.load_default()


def colorize(a: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8 viridis; NaN -> black."""
    a = np.asarray(a, np.float64)
    x = np.clip((a - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    x = np.where(np.isfinite(x), x, 0.0) * (len(_ANCHORS) - 1)
    i = np.minimum(np.floor(x).astype(int), len(_ANCHORS) - 2)
    f = (x - i)[..., None]
    rgb = _ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f
    rgb[~np.isfinite(a)] = 0
    return rgb.astype(np.uint8)


def bar_chart(path: Path, labels: Sequence[str], values: Sequence[float], title: str, vmax: float | None = None,
              width: int = 720) -> None:
    """Horizontal bars, one per label, value printed at the end (NaN shown as 'n/a')."""
    font = _font()
    row, left, top = 22, 230, 34
    h = top + row * len(labels) + 16
    im = Image.new("RGB", (width, h), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 8), title, fill="black", font=font)
    vals = np.array([v if v is not None else np.nan for v in values], np.float64)
    finite = vals[np.isfinite(vals)]
    top_v = vmax if vmax is not None else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    span = width - left - 80
    for k, (lab, v) in enumerate(zip(labels, vals)):
        y = top + k * row
        text = lab if len(lab) <= 36 else lab[:16] + "…" + lab[-19:]
        d.text((10, y + 4), text, fill="black", font=font)
        if np.isfinite(v):
            w = int(round(span * min(max(v, 0.0) / top_v, 1.0)))
            d.rectangle([left, y + 2, left + max(w, 1), y + row - 4], fill=_PALETTE[k % len(_PALETTE)])
            d.text((left + w + 6, y + 4), f"{v:.4g}", fill="black", font=font)
        else:
            d.text((left + 4, y + 4), "n/a", fill="gray", font=font)
    d.line([left, top - 2, left, h - 12], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def line_chart(path: Path, series: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str, xlabel: str,
               ylabel: str, xmax: float, ymax: float = 1.0, size: tuple[int, int] = (720, 440)) -> None:
    font = _font()
    W, H = size
    L, R, T, B = 60, 200, 34, 44
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 8), title, fill="black", font=font)
    pw, ph = W - L - R, H - T - B
    d.rectangle([L, T, L + pw, T + ph], outline="black")

    def xy(x, y):
        return L + pw * x / xmax, T + ph * (1 - y / ymax)

    for k in range(6):
        gx, gy = xmax * k / 5, ymax * k / 5
        d.line([xy(gx, 0), xy(gx, ymax)], fill=(225, 225, 225))
        d.line([xy(0, gy), xy(xmax, gy)], fill=(225, 225, 225))
        d.text((xy(gx, 0)[0] - 8, T + ph + 6), f"{gx:g}", fill="black", font=font)
        d.text((L - 34, xy(0, gy)[1] - 6), f"{gy:.1f}", fill="black", font=font)
    d.text((L + pw // 2 - 40, H - 18), xlabel, fill="black", font=font)
    d.text((6, T - 16), ylabel, fill="black", font=font)
    for k, (label, xs, ys) in enumerate(series):
        col = (0, 0, 0) if label == "pooled" else _PALETTE[k % len(_PALETTE)]
        pts = [xy(float(x), float(y)) for x, y in zip(xs, ys) if np.isfinite(y)]
        if len(pts) > 1:
            d.line(pts, fill=col, width=3 if label == "pooled" else 2)
        ly = T + 4 + 16 * k
        d.line([L + pw + 10, ly + 6, L + pw + 30, ly + 6], fill=col, width=3)
        text = label if len(label) <= 24 else label[:10] + "…" + label[-13:]
        d.text((L + pw + 36, ly), text, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def depth_panel(path: Path, maps: Sequence[dict[str, np.ndarray]], title: str, err_max: float = 0.5) -> None:
    """Rows of (ground truth | aligned prediction | AbsRel error) for a few views; depth colours share one range."""
    font = _font()
    finite = np.concatenate([m["gt"][np.isfinite(m["gt"])] for m in maps] + [np.zeros(0)])
    lo, hi = (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0)
    h, w = maps[0]["gt"].shape
    pad, head = 6, 34
    im = Image.new("RGB", (3 * w + 4 * pad, head + len(maps) * (h + pad + 14) + pad), "white")
    d = ImageDraw.Draw(im)
    d.text((pad, 4), title, fill="black", font=font)
    d.text((pad, 18), f"depth colours {lo:.2f}-{hi:.2f} (GT units); error = |pred - gt| / gt, 0-{err_max:g}; "
           "black = no ground truth", fill="black", font=font)
    for r, m in enumerate(maps):
        y = head + r * (h + pad + 14)
        for c, (key, vmin, vmax) in enumerate((("gt", lo, hi), ("pred", lo, hi), ("abs_rel", 0.0, err_max))):
            a = m[key]
            tile = Image.fromarray(colorize(a, vmin, vmax)).resize((w, h), Image.NEAREST)
            x = pad + c * (w + pad)
            d.text((x, y), f"view {m['view']} {'ground truth' if key == 'gt' else key}", fill="black", font=font)
            im.paste(tile, (x, y + 14))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not np.isfinite(v) else f"{v:.4g}"
    return str(v)


def _get(metrics: dict[str, Any], dotted: str) -> Any:
    cur: Any = metrics
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "x"


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_report(out: str | Path, summary: dict[str, Any], results: Sequence[Any], title: str = "DA3 evaluation"
                 ) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and ``plots/*.png`` under ``out``; returns their paths."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"json": out / "results.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(summary, indent=2, default=_json_default, allow_nan=True) + "\n")
    labels = [f"{r.dataset}:{r.name}" for r in results]
    md = [f"# {title}", ""]
    meta = summary.get("meta", {})
    for k, v in meta.items():
        md.append(f"- **{k}**: {v}")
    if meta:
        md.append("")
    md += ["Metric definitions: `docs/evaluation.md`. Pose AUC / RRA / RTA over all view pairs (degrees), depth "
           "after the listed alignment, reconstruction after aligning predicted poses to the ground truth.", ""]
    # aggregate
    agg = summary.get("aggregate", {})
    md += ["## Aggregate (mean over scenes)", "", "| metric | mean | scenes |", "|---|---|---|"]
    for k, v in agg.get("mean", {}).items():
        md.append(f"| {k} | {_fmt(v['mean'])} | {v['scenes']} |")
    if "pose_pooled" in agg:
        p = agg["pose_pooled"]
        md += ["", f"Pooled over {p['pairs']} pairs: AUC@3 {_fmt(p['auc@3'])}, AUC@30 {_fmt(p['auc@30'])}."]
    # per scene table
    cols = [("depth.abs_rel", "AbsRel"), ("depth.delta1", "δ1"), ("depth.alignment", "depth align"),
            ("pose.auc@3", "AUC@3"), ("pose.auc@30", "AUC@30"), ("pose.rra@30", "RRA@30"), ("pose.rta@30", "RTA@30"),
            ("pose.ate_rmse", "ATE"), ("reconstruction.f1", "F1"), ("reconstruction.chamfer", "Chamfer"),
            ("reconstruction.method", "pose align")]
    md += ["", "## Per scene", "", "| scene | frames | " + " | ".join(c for _, c in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
    for r in results:
        md.append(f"| {r.dataset}:{r.name} | {r.frames} | " + " | ".join(_fmt(_get(r.metrics, k)) for k, _ in cols)
                  + " |")
    notes = [(f"{r.dataset}:{r.name}", n) for r in results for n in r.notes]
    if notes:
        md += ["", "Notes:", ""] + [f"- {s}: {n}" for s, n in notes]
    # plots
    md += ["", "## Plots", ""]
    for key, ptitle, vmax in HEADLINE:
        vals = [_get(r.metrics, key) for r in results]
        if all(v is None for v in vals):
            continue
        p = plots / f"bars_{_slug(key)}.png"
        bar_chart(p, labels, [np.nan if v is None else float(v) for v in vals], ptitle, vmax)
        paths[f"bars_{key}"] = p
        md.append(f"![{ptitle}](plots/{p.name})")
    series = []
    for lab, r in zip(labels, results):
        if r.pair_max_err is not None and len(r.pair_max_err):
            x, y = accuracy_curve(r.pair_max_err, 30.0)
            series.append((lab, x, y))
    if series:
        if len(series) > 1:
            x, y = accuracy_curve(np.concatenate([r.pair_max_err for r in results if r.pair_max_err is not None]), 30)
            series.append(("pooled", x, y))
        p = plots / "pose_accuracy_curve.png"
        line_chart(p, series[-10:], "Pose accuracy vs threshold (AUC@T = mean of this curve at 1..T deg)",
                   "threshold (degrees)", "fraction of pairs", 30.0)
        paths["pose_curve"] = p
        md += ["", f"![pose accuracy curve](plots/{p.name})"]
    for k, r in enumerate(results):
        if r.depth_maps:
            p = plots / f"depth_{k:02d}_{_slug(r.name)}.png"
            depth_panel(p, r.depth_maps, f"{r.dataset}:{r.name}")
            paths[f"depth_{k}"] = p
            md += ["", f"![depth {r.name}](plots/{p.name})"]
    paths["markdown"].write_text("\n".join(md) + "\n")
    return paths
