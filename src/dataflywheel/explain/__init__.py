"""Per-prediction explanations (Integrated Gradients) and their HTML for the report."""

from __future__ import annotations

from dataflywheel.explain.attributions import Explanation, explain_records
from dataflywheel.explain.html import explanation_html, report_section

__all__ = ["Explanation", "explain_records", "explanation_html", "report_section"]
