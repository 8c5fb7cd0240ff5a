"""The ``flywheel`` command: a table from command names to functions.

Command bodies live in small modules beside this one and import heavy libraries lazily, so
``flywheel --help`` answers fast. A :class:`~dataflywheel.errors.FlywheelError` becomes one
line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from dataflywheel.cli import (
    data,
    explain_command,
    export_command,
    generate_command,
    loop_commands,
    models,
    monitor_command,
    project,
)

app = typer.Typer(
    name="flywheel",
    help="Data to a deployed model and back: one versioned, traceable loop.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"dataflywheel {version('dataflywheel')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Data to a deployed model and back: one versioned, traceable loop."""


app.command("init")(project.init)
app.command("validate")(project.validate)
app.command("run")(project.run)
app.command("train")(project.train)
app.command("predict")(project.predict)
app.command("generate")(generate_command.generate)
app.command("explain")(explain_command.explain)
app.command("export")(export_command.export)
app.command("serve")(project.serve)
app.command("demo")(project.demo)
app.command("monitor")(monitor_command.monitor)
app.command("retrain")(loop_commands.retrain)
app.command("lineage")(loop_commands.lineage)
app.add_typer(loop_commands.feedback_app, name="feedback")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")


def main(fast_exit: bool = True) -> None:
    """The console script. With ``fast_exit`` the process ends with ``os._exit`` once output is
    flushed: interpreter teardown of torch and its dependencies takes 1-2 s and does nothing for
    us (every file we write is closed and every store write committed before this point)."""
    from dataflywheel.errors import FlywheelError

    code: int = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except FlywheelError as exc:
        print(f"error: {exc.headline()}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if not fast_exit:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`flywheel ... | head`)
            pass
    os._exit(code)
