"""Explanations as HTML: highlighted tokens for text, a bar list for tabular features.

The fragments carry inline styles only (the report is one self-contained file) and escape every
token, feature name and value, so untrusted text cannot inject markup into the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from dataflywheel.explain.attributions import Explanation, explain_records

if TYPE_CHECKING:
    import polars as pl

    from dataflywheel.registry.predictor import Predictor

TOP_FEATURES = 10
"""Features shown per tabular explanation (largest absolute attribution first)."""
POSITIVE, NEGATIVE = "22, 163, 74", "220, 38, 38"
"""RGB of attributions towards (green) and against (red) the explained class."""


def _colour(value: float, largest: float) -> str:
    alpha = min(1.0, abs(value) / largest) if largest > 0 else 0.0
    return f"rgba({POSITIVE if value >= 0 else NEGATIVE}, {alpha:.2f})"


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _heading(e: Explanation) -> str:
    target = e.get("target_class")
    explained = e.get("explained", "output")
    of = f" of {escape(str(target))}" if target is not None else ""
    out, base = e.get("output"), e.get("baseline_output")
    numbers = f": {out:.4g} vs baseline {base:.4g}" if out is not None and base is not None else ""
    return (f"<p><strong>prediction: {escape(str(e.get('prediction')))}</strong> "
            f"<small>(attributions to the {escape(str(explained))}{of}{numbers})</small></p>")


def _tokens_html(items: list[dict[str, Any]]) -> str:
    largest = max((abs(i["attribution"] or 0.0) for i in items), default=0.0)
    spans: list[str] = []
    for i in items:
        a = i["attribution"] or 0.0
        text = i["token"]
        joined = text.startswith("##")  # a WordPiece continuation joins the previous piece
        spans.append(("" if joined or not spans else " ")
                     + f'<span style="background:{_colour(a, largest)};padding:1px 2px;border-radius:3px" '
                     f'title="{a:+.4f}">{escape(text[2:] if joined else text)}</span>')
    return f'<p style="line-height:1.9">{"".join(spans)}</p>'


def _bars_html(items: list[dict[str, Any]]) -> str:
    top = sorted(items, key=lambda i: -abs(i["attribution"] or 0.0))[:TOP_FEATURES]
    largest = max((abs(i["attribution"] or 0.0) for i in top), default=0.0)
    rows = []
    for i in top:
        a = i["attribution"] or 0.0
        width = 100.0 * abs(a) / largest if largest > 0 else 0.0
        bar = (f'<div style="width:{width:.1f}%;height:0.8em;'
               f'background:rgb({POSITIVE if a >= 0 else NEGATIVE})"></div>')
        rows.append(f"<tr><td>{escape(str(i['feature']))}</td><td>{escape(_show(i['value']))}</td>"
                    f'<td style="text-align:right">{a:+.4f}</td><td style="width:40%">{bar}</td></tr>')
    return ("<table><tr><th>feature</th><th>value</th><th>attribution</th><th></th></tr>"
            + "".join(rows) + "</table>")


def explanation_html(explanations: Sequence[Explanation]) -> str:
    """An HTML fragment: per explanation, a heading, then its tokens highlighted by attribution
    (background colour by sign, opacity by size) and/or a bar list of its top features."""
    parts = []
    for e in explanations:
        items = e.get("attributions", [])
        tokens = [i for i in items if "token" in i]
        features = [i for i in items if "feature" in i]
        body = (_tokens_html(tokens) if tokens else "") + (_bars_html(features) if features else "")
        parts.append(f'<div class="explanation">{_heading(e)}{body}</div>')
    return "\n".join(parts)


def report_section(predictor: Predictor, df: pl.DataFrame, n: int = 3, steps: int = 32) -> tuple[str, str]:
    """``(heading, html)`` explaining the first ``n`` rows of ``df`` (a polars frame, e.g. the
    test split; extra columns such as the target are ignored), for ``render_report(sections=)``."""
    records = df.head(n).to_dicts()
    html = explanation_html(explain_records(predictor, records, steps=steps)) if records else ""
    return "Explanations (Integrated Gradients)", html
