"""``insta report``: a selection file, a benchmark result or an ``insta run`` folder as one
self-contained HTML page (no network when opened: styles, script and plots are inline; the
tables read with scripts off).

Numbers on the page are the input's own, formatted, never recomputed: a selection's scores and
the score of the first task not selected, a benchmark's means, CIs and paired deltas, a run's
metrics per target × method (method means over targets are the one summary the page adds, and
it says so).
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InstaError, printable
from .io import iter_jsonl, read_json, write_text_atomic

__all__ = ["Report", "combine", "load_report", "render", "write_report"]

#: words too common to show as shared between a target and a source instruction
_STOP = frozenset("a an and are as at be by for from in is it of on or that the this to with your you what which "
                  "given will can".split())
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[a-z]+)?")


@dataclass
class Report:
    """What a page shows: its kind (``selection``, ``bench`` or ``run``), the input's path and
    document, and, for a run folder, the selections of its targets × methods."""

    kind: str
    source: str
    doc: dict[str, Any]
    selections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # target -> [selection per method]


def _is_selection_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("selections"), list)


def _is_bench_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("methods"), list) and "suite" in doc


def _check_selections(path: Path, sels: list[Any]) -> None:
    if not sels:
        raise InstaError(f"{path}: no selections in it; write one with insta select --out")
    for i, sel in enumerate(sels):
        if not isinstance(sel, dict) or not isinstance(sel.get("target"), dict) or not isinstance(sel.get("results"), list):
            raise InstaError(f"{path}: selections[{i}] must be an object with 'target' and 'results' (is the file "
                             "damaged? write it again with insta select --out)")
        for j, r in enumerate(sel["results"]):
            if not isinstance(r, dict) or not isinstance(r.get("task_id"), str) or not _number(r.get("score")):
                raise InstaError(f"{path}: selections[{i}].results[{j}] needs a text 'task_id' and a finite numeric "
                                 "'score'")
        nxt = sel.get("next_score")
        _need(nxt is None or _number(nxt), str(path), f"selections[{i}].next_score must be a finite number, got {nxt!r}",
              "write the file again with insta select --out")
        for key, kind in (("warnings", list), ("k", int), ("n_candidates", int)):
            _need(sel.get(key) is None or (isinstance(sel[key], kind) and not isinstance(sel[key], bool)), str(path),
                  f"selections[{i}].{key} must be {'a list' if kind is list else 'an integer'}",
                  "write the file again with insta select --out")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _need(ok: bool, where: str, what: str, fix: str) -> None:
    if not ok:
        raise InstaError(f"{where}: {what}; {fix}")


def _check_bench(p: Path, doc: dict[str, Any]) -> None:
    """Every figure the page shows: a finite number (or null), CIs pairs of them, tables objects."""
    fix = "write the file again with insta bench --out"
    for i, m in enumerate(doc["methods"]):
        at = f"{p}: methods[{i}]"
        _need(isinstance(m, dict) and isinstance(m.get("method"), str) and isinstance(m.get("metrics"), dict),
              at, "must be an object with 'method' and 'metrics'", fix)
        for name, v in m["metrics"].items():
            _need(v is None or _number(v), at, f"metrics.{name} must be a finite number, got {v!r}", fix)
        for name, ci in (m.get("ci") or {}).items():
            _need(isinstance(ci, list) and len(ci) == 2 and all(x is None or _number(x) for x in ci), at,
                  f"ci.{name} must be [low, high], got {ci!r}", fix)
        for key in ("per_label", "per_target"):
            table = m.get(key)
            _need(table is None or (isinstance(table, dict) and all(
                isinstance(row, dict) and all(v is None or _number(v) for v in row.values()) for row in table.values())),
                at, f"{key} must map names to objects of finite numbers", fix)
    paired = doc.get("paired")
    _need(paired is None or (isinstance(paired, dict) and all(
        isinstance(by_m, dict) and all(isinstance(by_x, dict) and all(
            isinstance(d, list) and len(d) == 3 and all(_number(x) for x in d) for d in by_x.values())
            for by_x in by_m.values()) for by_m in paired.values())),
        str(p), "'paired' must map reference -> method -> metric -> [mean, low, high] (finite numbers)", fix)


def load_report(path: str | os.PathLike[str]) -> Report:
    """The report an input calls for: a selection file (.json, or .jsonl streamed), a benchmark
    result (``insta bench --out``) or a finished ``insta run`` folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InstaError(f"{p} does not exist; give a selection file, a benchmark result or an insta run folder")
    if p.is_dir():
        return _load_run(p)
    if p.suffix.lower() == ".jsonl":
        lines = [x for _, x in iter_jsonl(p, "selection file")]
        _check_selections(p, lines)
        head = {k: lines[0].get(k) for k in ("pool", "method", "k")}
        return Report("selection", str(p), {**head, "selections": lines})
    doc = read_json(p, "report input")
    if _is_selection_doc(doc):
        _check_selections(p, doc["selections"])
        return Report("selection", str(p), doc)
    if _is_bench_doc(doc):
        _check_bench(p, doc)
        return Report("bench", str(p), doc)
    raise InstaError(f"{p}: neither a selection file ('selections'), a benchmark result ('suite', 'methods') nor a "
                     "run folder; give the file insta select --out or insta bench --out wrote, or a run folder")


def _load_run(root: Path) -> Report:
    results = root / "results.json"
    if not results.is_file():
        raise InstaError(f"{root}: no results.json: not an insta run folder, or the run has not finished (run "
                         "insta run CONFIG again: finished steps are kept)")
    doc = read_json(results, "run results", expect=dict)
    rows = doc.get("results")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("target"), str)
                                             and isinstance(r.get("method"), str) for r in rows):
        raise InstaError(f"{results}: field 'results' must be a list of objects with 'target' and 'method' (damaged? "
                         "run insta run CONFIG again)")
    for i, r in enumerate(rows):
        metrics = r.get("metrics") or {}
        _need(isinstance(metrics, dict) and all(_number(v) for v in metrics.values()), str(results),
              f"results[{i}].metrics must hold finite numbers", "run insta run CONFIG again")
        _need(isinstance(r.get("selected", []), list), str(results), f"results[{i}].selected must be a list",
              "run insta run CONFIG again")
    selections: dict[str, list[dict[str, Any]]] = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        for r in rows:
            if r["target"] != target:
                continue
            sel_file = root / _slug(target) / _slug(r["method"]) / "selection.json"
            if sel_file.is_file():
                sel_doc = read_json(sel_file, "selection file", expect=dict)
                if _is_selection_doc(sel_doc) and sel_doc["selections"]:
                    _check_selections(sel_file, sel_doc["selections"])
                    selections.setdefault(target, []).append({**sel_doc["selections"][0], "name": r["method"]})
    return Report("run", str(root), doc, selections)


def _slug(text: str) -> str:  # as insta run names its folders
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# ---------------------------------------------------------------- rendering helpers


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text or "")} - _STOP


#: a pair's text is cut to this many characters on the page (the file keeps it whole)
SHOWN_CHARS = 600


def marked(text: str, shared: set[str]) -> str:
    """``text`` HTML-escaped (control and direction characters shown as escapes, cut to
    SHOWN_CHARS), with the words it shares with the other side in <mark>."""
    text = printable(text if len(text or "") <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")
    out, last = [], 0
    for m in _WORD.finditer(text or ""):
        out.append(html.escape(text[last:m.start()]))
        word = m.group(0)
        out.append(f"<mark>{html.escape(word)}</mark>" if word.lower() in shared else html.escape(word))
        last = m.end()
    out.append(html.escape((text or "")[last:]))
    return "".join(out)


def _svg(fig) -> str:
    """A matplotlib figure as inline SVG markup (no external references), closed after."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    try:
        fig.savefig(buf, format="svg")
    finally:
        plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # inline in HTML an <svg> needs no namespace declarations, and its RDF metadata names URLs
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", text)


def _fmt(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _number(x) else ("" if x is None else str(x))


def _selection_view(sel: dict[str, Any]) -> dict[str, Any]:
    """One target's selection, ready for the template (every number from the input)."""
    results = sel["results"]
    scores = [r["score"] for r in results]
    top = max(scores) if scores else 0.0
    low = min([*scores, sel.get("next_score") if _number(sel.get("next_score")) else min(scores or [0.0])])
    span = (top - low) or 1.0
    rows = []
    for r in results:
        match = r.get("match") if isinstance(r.get("match"), dict) else None
        target_text = str(match.get("target_instruction", "")) if match else ""
        source_text = str(match.get("source_instruction", "")) if match else ""
        shared = _words(target_text) & _words(source_text)
        parts = match.get("parts") if match and isinstance(match.get("parts"), list) else []
        rows.append({
            "rank": r.get("rank"), "task": r["task_id"], "label": r.get("label") or "", "origin": r.get("origin") or "",
            "score": _fmt(r["score"], 4), "bar": round(100 * (r["score"] - low) / span, 1) if len(scores) > 1 else 100,
            "similarity": _fmt(match.get("similarity"), 4) if match else "",
            "source_name": str(match.get("source_instruction_name") or "") if match else "",
            "target_html": marked(target_text, shared), "source_html": marked(source_text, shared),
            "parts": [f"{p.get('measure', '')}: {_fmt(p.get('similarity'))} (rank {p.get('rank')})"
                      for p in parts if isinstance(p, dict)],
            "examples": len(r["examples"]) if isinstance(r.get("examples"), list) else None,
        })
    target = sel["target"]
    instructions = target.get("instructions") if isinstance(target.get("instructions"), list) else []
    nxt = sel.get("next_score")
    gap = (results[-1]["score"] - nxt) if results and _number(nxt) else None
    return {"target": str(target.get("id", "")), "label": target.get("label") or "",
            "instructions": [str(i) for i in instructions], "method": sel.get("method", ""),
            "aggregate": sel.get("aggregate", ""), "k": sel.get("k"), "n_candidates": sel.get("n_candidates"),
            "warnings": [str(w) for w in sel.get("warnings") or []], "rows": rows,
            "next_score": _fmt(nxt, 4) if _number(nxt) else "", "gap": _fmt(gap, 4) if gap is not None else "",
            "name": sel.get("name", "")}


def _bench_view(doc: dict[str, Any]) -> dict[str, Any]:
    methods = doc["methods"]
    metrics = list(next((m["metrics"] for m in methods if m.get("metrics")), {}))
    rows = []
    for m in methods:
        ci = m.get("ci") or {}
        rows.append({"method": m["method"], "skipped": m.get("skipped") or "",
                     "cells": [(_fmt(m["metrics"].get(x)), "[" + ", ".join(_fmt(v) for v in ci.get(x, [])) + "]"
                                if ci.get(x) else "") for x in metrics],
                     "seconds": _fmt(m.get("seconds"), 1)})
    paired = []
    for ref, by_method in (doc.get("paired") or {}).items():
        for method, by_metric in by_method.items():
            d = (by_metric or {}).get("MAP")
            if d and len(d) == 3:
                paired.append({"reference": ref, "method": method, "delta": f"{d[0]:+.3f}",
                               "ci": f"[{d[1]:+.3f}, {d[2]:+.3f}]", "sign": "+" if d[1] > 0 else ("−" if d[2] < 0 else "")})
    labels = sorted({lab for m in methods for lab in (m.get("per_label") or {})})
    per_label = [{"label": lab or "(none)", "cells": [_fmt((m.get("per_label") or {}).get(lab, {}).get("MAP"))
                                                    for m in methods]} for lab in labels]
    targets = sorted({t for m in methods for t in (m.get("per_target") or {})})
    per_target = [{"target": t, "cells": [_fmt((m.get("per_target") or {}).get(t, {}).get("MAP"))
                                          for m in methods]} for t in targets]
    plot = ""
    try:
        plot = _bench_plot(doc, metrics)
    except Exception:  # noqa: BLE001 - a figure the input cannot make (no numbers) leaves the tables
        plot = ""
    return {"suite": doc.get("suite", ""), "description": doc.get("description", ""), "n_tasks": doc.get("n_tasks"),
            "n_targets": doc.get("n_targets"), "n_scored": doc.get("n_scored"), "metrics": metrics, "rows": rows,
            "paired": paired, "per_label": per_label, "per_target": per_target,
            "method_names": [m["method"] for m in methods], "notes": [str(n) for n in doc.get("notes") or []],
            "plot": plot}


def _bench_plot(doc: dict[str, Any], metrics: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [m for m in doc["methods"] if m.get("metrics") and not m.get("skipped")]
    if not methods or not metrics:
        return ""
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics), 3.2))
    width = 0.8 / len(methods)
    x = np.arange(len(metrics))
    for i, m in enumerate(methods):
        means = np.array([m["metrics"].get(k, np.nan) for k in metrics], dtype=float)
        ci = m.get("ci") or {}
        lo = np.array([ci.get(k, [np.nan, np.nan])[0] for k in metrics], dtype=float)
        hi = np.array([ci.get(k, [np.nan, np.nan])[1] for k in metrics], dtype=float)
        ax.bar(x + i * width, means, width, label=m["method"],
               yerr=[np.nan_to_num(means - lo), np.nan_to_num(hi - means)], capsize=2)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, metrics)
    ax.legend(fontsize=7, ncol=min(4, len(methods)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _svg(fig)


def _overlaps(by_target: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per target with several selections (methods, files): how many tasks each pair shares."""
    out = []
    for target, sels in by_target.items():
        if len(sels) < 2:
            continue
        sets = [{r["task_id"] for r in s["results"]} for s in sels]
        out.append({"target": target, "names": [s.get("name") or s.get("method", "") for s in sels],
                    "matrix": [[len(a & b) for b in sets] for a in sets]})
    return out


def combine(reports: list[Report]) -> Report:
    """Several selection files as one page: each selection named by its file (and method), and
    the selections of one target side by side with their overlap."""
    sources = [str(Path(r.source).resolve()) for r in reports]
    twice = next((r.source for r, src in zip(reports, sources) if sources.count(src) > 1), None)
    if twice:
        raise InstaError(f"{twice} is given twice; give each selection file once")
    if any(r.kind != "selection" for r in reports):
        bad = next(r for r in reports if r.kind != "selection")
        raise InstaError(f"{bad.source}: several inputs are compared as selections; this one is a {bad.kind} "
                         "(give one benchmark or run at a time)")
    selections = [{**s, "name": f"{Path(r.source).name} · {s.get('method', '')}"} for r in reports
                  for s in r.doc["selections"]]
    head = {"pool": reports[0].doc.get("pool"), "method": " / ".join(dict.fromkeys(str(r.doc.get("method")) for r in reports)),
            "k": reports[0].doc.get("k")}
    return Report("selection", " + ".join(r.source for r in reports), {**head, "selections": selections})


def _run_view(report: Report) -> dict[str, Any]:
    rows = report.doc.get("results") or []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metric_names = list(dict.fromkeys(k for r in rows for k in (r.get("metrics") or {})))
    table = []
    for r in rows:
        table.append({"target": r["target"], "method": r["method"], "n": r.get("n_train_examples"),
                      "selected": [str(x) for x in r.get("selected") or []],
                      "cells": [_fmt((r.get("metrics") or {}).get(k), 4) for k in metric_names]})
    from .bench.downstream import interval_text, quantile_curves, summarize

    summary = summarize([r for r in rows if isinstance(r.get("metrics"), dict)], n_boot=2000)
    shown = [m for m in ("accuracy", "query_loss", "rougeL", "exact_match") if m in metric_names]
    means = [{"method": f, "cells": [f"{summary['means'][f][m]['mean']:.4f} "
                                     f"[{summary['means'][f][m]['ci'][0]:.4f}, {summary['means'][f][m]['ci'][1]:.4f}]"
                                     if m in summary["means"].get(f, {}) else "" for m in shown]}
             for f in summary["methods"]]
    deltas = [{"metric": d["metric"], "a": d["a"], "b": d["b"], "mean": f"{d['mean']:+.4f}",
               "ci": interval_text(d["ci"], 4), "t_ci": interval_text(d["t_ci"], 4),
               "record": f"{d['wins']} / {d['losses']} of {d['n']} (sign test p {d['sign_p']:.3g})"}
              for d in summary["deltas"] if d["metric"] in shown]
    curves = [{"representation": rep, "bins": c["bins"], "per_bin": [f"{v:.4f}" for v in c["mean_per_bin"]],
               "rho": "— (constant)" if not math.isfinite(c["rho_mean"]) else f"{c['rho_mean']:+.3f} {interval_text(c['rho_ci'])}",
               "rho_t": interval_text(c["rho_t_ci"]), "n": c["n"]}
              for rep, c in quantile_curves(summary).items()] if summary["targets"] else []
    overlap = _overlaps(report.selections)
    return {"methods": methods, "metrics": metric_names, "rows": table, "means": means, "overlap": overlap,
            "mean_metrics": shown, "deltas": deltas, "curves": curves, "n_targets": len(summary["targets"]),
            "selections": {t: [_selection_view(s) for s in sels] for t, sels in report.selections.items()},
            "wall": report.doc.get("wall_seconds")}


#: at most this many pool tasks are drawn on a map (a seeded sample beyond; every selected task is kept)
MAP_POINTS = 5000


def pool_map(pool, encoder, selections: list[dict[str, Any]]) -> str:
    """A 2-D map of the pool's tasks: each task's mean instruction vector under ``encoder`` (the
    vectors the instruction selectors compare), projected on its first two principal components
    (PCA, numpy SVD); labels as colours, hovering a point names the task and its first
    instruction (SVG titles: no script needed). The targets are stars; with one target, its
    selected tasks are ringed. Inline SVG from matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .encoder import embed_pool

    texts = [ins.text for t in pool for ins in t.instructions]
    counts = np.array([len(t.instructions) for t in pool])
    emb = np.asarray(embed_pool(encoder, texts), dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    vec = np.add.reduceat(emb, starts) / counts[:, None]
    vec /= np.linalg.norm(vec, axis=1, keepdims=True).clip(1e-12)
    center = vec.mean(axis=0)
    _, sing, vt = np.linalg.svd(vec - center, full_matrices=False)
    xy = (vec - center) @ vt[:2].T
    explained = (sing[:2] ** 2).sum() / (sing ** 2).sum()
    chosen = {r["task_id"] for sel in selections[:1] for r in sel["results"]} if len(selections) == 1 else set()
    ids = pool.ids
    keep = np.arange(len(pool))
    if len(keep) > MAP_POINTS:
        rng = np.random.default_rng(0)
        keep = np.union1d(rng.choice(len(pool), MAP_POINTS, replace=False),
                          [i for i, tid in enumerate(ids) if tid in chosen]).astype(int)
    labels = [pool[int(i)].label or "(no label)" for i in keep]
    common = [lab for lab, _ in __import__("collections").Counter(labels).most_common(10)]
    palette = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    titles: dict[str, str] = {}
    for n, i in enumerate(keep):
        lab = labels[n]
        colour = palette(common.index(lab)) if lab in common else (0.6, 0.6, 0.6, 1.0)
        ax.plot([xy[i, 0]], [xy[i, 1]], "o", ms=4, color=colour, alpha=0.75, gid=f"task{n}")
        titles[f"task{n}"] = f"{ids[i]} [{lab}]: {pool[int(i)].instructions[0].text[:160]}"
        if ids[i] in chosen:
            ax.plot([xy[i, 0]], [xy[i, 1]], "o", ms=10, mfc="none", mec="#d62728", mew=1.6)
    targets = [s for s in selections if isinstance(s.get("target", {}).get("instructions"), list)][:200]
    if targets:
        tvec = np.asarray(encoder.encode([" ".join(map(str, s["target"]["instructions"][:1])) for s in targets]),
                          dtype=np.float64)
        tvec /= np.linalg.norm(tvec, axis=1, keepdims=True).clip(1e-12)
        txy = (tvec - center) @ vt[:2].T
        for n, (s, (x, y)) in enumerate(zip(targets, txy)):
            ax.plot([x], [y], "*", ms=13, color="black", gid=f"target{n}")
            titles[f"target{n}"] = f"target {s['target'].get('id', '')}: {str(s['target']['instructions'][0])[:160]}"
    for lab in common:
        ax.plot([], [], "o", color=palette(common.index(lab)), label=lab[:28])
    if len(common) > 1:
        ax.legend(fontsize=6, loc="best", framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{len(keep)} pool tasks, PCA of their instruction vectors ({100 * explained:.0f}% of the variance); "
                 "★ target" + ("; ○ selected" if chosen else ""), fontsize=8)
    fig.tight_layout()
    svg = _svg(fig)
    for gid, title in titles.items():  # hovering a point shows its title
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{html.escape(title)}</title>', 1)
    return svg


def render(report: Report, *, title: str | None = None, pool_map_svg: str = "") -> str:
    """The page as one HTML string."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("insta", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      # data never drives the page: its control and direction characters shown as escapes
                      # (markup built here, already escaped, passes as it is)
                      finalize=lambda x: printable(x) if isinstance(x, str) and not isinstance(x, Markup) else x)
    env.filters["tojson_safe"] = lambda x: json.dumps(x).replace("<", "\\u003c").replace(">", "\\u003e")
    context: dict[str, Any] = {"kind": report.kind, "source": report.source,
                               "title": title or f"insta report: {Path(report.source).name}"}
    if report.kind == "selection":
        context["head"] = {k: report.doc.get(k) for k in ("pool", "method", "k", "calibrate")}
        context["selections"] = [_selection_view(s) for s in report.doc["selections"]]
        by_target: dict[str, list[dict[str, Any]]] = {}
        for sel in report.doc["selections"]:
            by_target.setdefault(str(sel["target"].get("id", "")), []).append(sel)
        context["overlap"] = _overlaps(by_target)
        context["map"] = pool_map_svg
    elif report.kind == "bench":
        context["bench"] = _bench_view(report.doc)
    else:
        context["run"] = _run_view(report)
    return env.get_template("report.html.j2").render(**context)


def map_for(report: Report) -> str:
    """The pool map of a selection report, from the pool and embedder its file records (the
    embedding cache makes this cheap when the selection was made here)."""
    from .encoder import Encoder
    from .pools import load_pool

    model = report.doc.get("model") if isinstance(report.doc.get("model"), dict) else {}
    if report.kind != "selection" or not report.doc.get("pool") or not model.get("model"):
        raise InstaError(f"{report.source}: --map needs a selection file that records its pool and embedder "
                         "(written by insta select --out)")
    return pool_map(load_pool(report.doc["pool"]), Encoder(model.get("path") or model["model"]),
                    report.doc["selections"])


def write_report(report: Report, out: str | os.PathLike[str], *, title: str | None = None,
                 pool_map_svg: str = "") -> Path:
    """Render ``report`` and write it to ``out`` atomically."""
    page = render(report, title=title, pool_map_svg=pool_map_svg)
    page = page.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate from an edited file, shown
    return write_text_atomic(out, page, "--report")


def first_urls(page: str) -> Iterable[str]:
    """Every http(s) URL a page names (a test's check that it names none)."""
    return re.findall(r"https?://[^\s\"'<>)]+", page)
