"""The ``modelyard`` console script: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from modelyard.cli import server as server_cmds

app = typer.Typer(
    help="modelyard: track experiments, manage artifacts, and run the tracking server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("server")(server_cmds.server)
app.add_typer(server_cmds.db_app, name="db")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
