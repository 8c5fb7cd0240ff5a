"""``flywheel export``: a model's network as ONNX (fp32 or int8), with every backend's accuracy and
speed against fp32.

The ONNX file goes to ``<bundle>/exports/model.onnx`` (``model.int8.onnx`` for ``--format
onnx-int8``, or ``--output``); the bundle's manifest-checked files are never touched, so the
bundle still verifies. torch int8 is dynamic quantisation applied at load (``serve.backend:
int8``): nothing is written, only the comparison is shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt, console


def export(
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, version (3 or v3) or a bundle folder.")]
    = "champion",
    format: Annotated[Literal["onnx", "onnx-int8", "int8"], typer.Option(
        "--format", "-f", help="onnx writes model.onnx, onnx-int8 model.int8.onnx; int8 (torch) is applied at "
        "load (serve.backend: int8) and only compared.")] = "onnx",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File or folder for model.onnx "
                      "(default <bundle>/exports/).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Score fp32, int8 and onnx on the "
                       "model's test split.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> dict[str, Any]:
    """Export a model for faster CPU inference and show what each backend costs in accuracy."""
    from dataflywheel.export.backends import compare_backends
    from dataflywheel.export.onnx import cached_export, export_onnx, onnx_program

    predictor, test = _load(model, config, compare)
    result: dict[str, Any] = {"version": predictor.version, "format": format, "path": None}
    fp32 = None
    if format != "int8":
        int8 = format == "onnx-int8"
        if cached_export(predictor, int8) is None or (test is not None and cached_export(predictor, not int8) is None):
            fp32 = onnx_program(predictor)  # one fp32 export for the file and both onnx rows of the comparison
        path = export_onnx(predictor, output if output is not None else predictor.folder / "exports", int8=int8,
                           program=fp32)
        result["path"] = str(path)
    if test is not None:
        result["comparison"] = compare_backends(predictor, test, onnx_file=fp32)
    if as_json:
        typer.echo(json.dumps(result, indent=2, allow_nan=False))
    else:
        _print(result)
    return result


def _load(model: str, config: Path, compare: bool) -> tuple[Any, Any]:
    """The predictor, and the test split of its dataset version when the project store has it."""
    from dataflywheel import registry
    from dataflywheel.registry.loader import is_bundle_ref

    if is_bundle_ref(model):
        return registry.load(None, model).predictor, None
    from dataflywheel.data.dataset import get_version
    from dataflywheel.loop import as_config, open_project

    cfg = as_config(config)
    project = open_project(cfg)
    try:
        loaded = registry.load(project, model, base_dir=cfg.base_dir)
        predictor, info = loaded.predictor, loaded.info
        assert info is not None
        test = get_version(project, info.dataset_id).split("test") if compare else None
    finally:
        project.close()
    return predictor, test


def _print(result: dict[str, Any]) -> None:
    out = console()
    if result["path"]:
        out.print(f"wrote {result['path']}", markup=False)
    else:
        out.print("int8: dynamic quantisation is applied at load; set serve.backend: int8 to serve it",
                  markup=False)
    comparison = result.get("comparison")
    if not comparison:
        return
    backends = comparison["backends"]
    names = sorted({k for b in backends.values() for k in b["metrics"]})
    out.print(f"test split ({comparison['rows']} rows, {comparison['threads']} thread(s), "
              f"batches of {comparison['batch_size']}):", markup=False)
    header = ["backend", *names, "max |Δ| vs fp32", "labels agree", "rows/s"]
    out.print("  ".join(f"{h:>12}" for h in header), markup=False)
    for name, b in backends.items():
        cells = [name, *(_f(b["metrics"].get(m)) for m in names), _f(b["max_abs_diff"], ".2e"),
                 _f(b["label_agreement"], ".3f"), _f(b["rows_per_s"], ",.0f")]
        out.print("  ".join(f"{c:>12}" for c in cells), markup=False)


def _f(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)
