"""``modelyard experiments list|create|delete|restore``."""

from __future__ import annotations

import typer
from rich.table import Table

from modelyard.cli.common import MARKUP_MODE, console, handle_errors, print_json
from modelyard.cli.shared import (
    all_experiments,
    cell,
    check_view,
    experiment_json,
    fmt_time,
    json_option,
    open_backend,
    resolve_experiment,
    say,
    uri_option,
    view_option,
)

experiments_app = typer.Typer(help="Create, list, delete and restore experiments.",
                              no_args_is_help=True, rich_markup_mode=MARKUP_MODE)

REF_HELP = "Experiment id or name."


@experiments_app.command("list")
@handle_errors
def list_experiments(
    view: str = view_option(),
    as_json: bool = json_option(),
    uri: str | None = uri_option(),
) -> None:
    """List experiments."""
    stage_view = check_view(view)
    experiments = all_experiments(open_backend(uri), stage_view)
    if as_json:
        print_json([experiment_json(e) for e in experiments])
        return
    if not experiments:
        say("no experiments")
        return
    table = Table(box=None, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("name", style="cyan")
    table.add_column("stage")
    table.add_column("created", no_wrap=True)
    table.add_column("description", overflow="fold")
    for exp in experiments:
        table.add_row(cell(exp.experiment_id), cell(exp.name), exp.lifecycle_stage.value,
                      fmt_time(exp.creation_time), cell(exp.description))
    console.print(table)


@experiments_app.command("create")
@handle_errors
def create_experiment(
    name: str = typer.Argument(..., help="A unique experiment name."),
    description: str = typer.Option("", "--description", "-d", help="Free-text description."),
    uri: str | None = uri_option(),
) -> None:
    """Create an experiment and print its id."""
    exp = open_backend(uri, create=True).create_experiment(name, description=description)
    typer.echo(exp.experiment_id)


@experiments_app.command("delete")
@handle_errors
def delete_experiment(
    ref: str = typer.Argument(..., metavar="ID_OR_NAME", help=REF_HELP),
    uri: str | None = uri_option(),
) -> None:
    """Soft-delete an experiment and its runs (``modelyard gc`` frees them for good)."""
    b = open_backend(uri)
    exp = resolve_experiment(b, ref)
    b.delete_experiment(exp.experiment_id)
    say(f"deleted experiment {exp.experiment_id} ({exp.name!r})")


@experiments_app.command("restore")
@handle_errors
def restore_experiment(
    ref: str = typer.Argument(..., metavar="ID_OR_NAME", help=REF_HELP),
    new_name: str | None = typer.Option(
        None, "--new-name", help="Restore under this name (when an active experiment has "
        "taken the old one)."),
    uri: str | None = uri_option(),
) -> None:
    """Restore a deleted experiment (and the runs deleted with it)."""
    b = open_backend(uri)
    exp = resolve_experiment(b, ref, deleted=True)
    b.restore_experiment(exp.experiment_id, new_name=new_name)
    say(f"restored experiment {exp.experiment_id} ({new_name or exp.name!r})")
