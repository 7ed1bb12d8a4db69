"""The ``modelyard`` console script: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from modelyard.cli import gc as gc_cmds
from modelyard.cli import server as server_cmds
from modelyard.cli.artifacts import artifacts_app
from modelyard.cli.experiments import experiments_app
from modelyard.cli.runs import runs_app

app = typer.Typer(
    help="modelyard: track experiments, manage artifacts, and run the tracking server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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
