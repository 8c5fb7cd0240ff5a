"""``flywheel monitor``: input drift of recent traffic and live accuracy of the served model."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt, console

_LEVEL_STYLE = {"none": "green", "moderate": "yellow", "significant": "bold red"}


def monitor(
    config: ConfigOpt = DEFAULT_CONFIG,
    alias: Annotated[str, typer.Option("--alias", "-m", help="Alias or version (3 or v3) to monitor.")] = "champion",
    window: Annotated[int | None, typer.Option("--window", "-w", min=1,
                                               help="Recent predictions to compare (default monitor.window).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Drift per feature (PSI, Kolmogorov-Smirnov) between the training data and the last
    predictions served, and accuracy on labelled feedback, overall and per model version."""
    from dataflywheel import registry
    from dataflywheel.feedback.monitor import monitor_report
    from dataflywheel.loop import as_config, open_project

    cfg = as_config(config)
    project = open_project(cfg)
    try:
        predictor = registry.load(project, alias, base_dir=cfg.base_dir).predictor
        report = monitor_report(project, predictor, window or cfg.monitor.window, cfg.monitor.bins)
    finally:
        project.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    print_report(report, alias)


def print_report(report: dict[str, Any], alias: str = "champion") -> None:
    """The report as two Rich tables: drift (most drifted first) and live accuracy."""
    from rich.markup import escape
    from rich.table import Table

    out = console()
    span = report["recent_span"]
    out.print(f"model v{report['model_version']} ({alias}), dataset {report['dataset_id']}: "
              f"{report['n_recent']} recent inputs (last {report['window']}"
              + (f", {span['from']} .. {span['to']}" if span["from"] else "")
              + f") vs {report['n_reference']} training rows", markup=False)
    if report["n_recent"] == 0:
        out.print("no predictions logged yet: serve the model (`flywheel serve`) to collect inputs", markup=False)
    table = Table("feature", "psi", "drift", "noise", "ks", "p-value", "recent", "missing",
                  title=f"input drift (psi > {report['threshold']:g} significant; noise = psi expected by chance)")
    ranked = sorted(report["features"], key=lambda f: -1.0 if f.get("psi") is None else f["psi"], reverse=True)
    for f in ranked:
        if "skipped" in f:
            table.add_row(escape(f["feature"]), "-", f"skipped ({f['type']})", "", "", "", "", "")
            continue
        level = f["level"] or "no data"
        unseen = f" ({f['unseen_share']:.0%} unseen)" if f.get("unseen_share") else ""
        if f.get("psi_of") and f.get("text"):
            unseen = f" (by {f['psi_of'].replace('_', ' ')})"
        table.add_row(escape(f["feature"]), _num(f["psi"]), f"[{_LEVEL_STYLE.get(level, '')}]{level}[/]{unseen}",
                      _num(f["psi_noise"]), _num(f["ks_statistic"]), _num(f["ks_pvalue"]), str(f["n_recent"]),
                      str(f["missing_recent"]))
    out.print(table)
    for f in ranked:
        if f.get("text"):
            out.print(_text_line(f["feature"], f["text"]), markup=False)

    live = report["live"]
    metric = live["metric"]
    acc = Table("model version", "labelled", metric, title="live accuracy on labelled feedback")
    for row in live["by_version"]:
        version = "-" if row["model_version"] is None else f"v{row['model_version']}"
        acc.add_row(version, str(row["n"]), _num(row[metric]))
    acc.add_row("all", str(live["overall"]["n"]), _num(live["overall"][metric]), style="bold")
    out.print(acc)


def _text_line(name: str, t: dict[str, Any]) -> str:
    """One line of a text feature's statistics, training -> recent."""
    def pair(stat: dict[str, Any], fmt: Any) -> str:
        return f"{fmt(stat['reference'])} -> {fmt(stat['recent'])}"

    def tokens(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    def share(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    return (f"text {name}: tokens per text {pair(t['length_mean'], tokens)}, unknown tokens "
            f"{pair(t['unknown_share'], share)}, truncated to {t['max_length']} tokens "
            f"{pair(t['truncated_share'], share)} (training -> recent)")


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1e}" if abs(x) < 1e-3 and x != 0 else f"{x:.3f}"
