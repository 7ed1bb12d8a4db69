"""The ``modelyard`` console script: one Typer app, one module per command group."""

from __future__ import annotations

import typer

import modelyard
from modelyard.cli import gc as gc_cmds
from modelyard.cli import server as server_cmds
from modelyard.cli.artifacts import artifacts_app
from modelyard.cli.common import MARKUP_MODE
from modelyard.cli.experiments import experiments_app
from modelyard.cli.runs import runs_app

app = typer.Typer(
    help="modelyard: track experiments, manage artifacts, and run the tracking server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=MARKUP_MODE,
    # Inherited by every command group and command below.
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"modelyard {modelyard.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


app.command("server")(server_cmds.server)
app.add_typer(server_cmds.db_app, name="db")
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(artifacts_app, name="artifacts")
app.command("gc")(gc_cmds.gc)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
