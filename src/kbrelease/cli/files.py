"""``kbrelease file``: register files for the next release and follow each one to live (seed 001)."""

from __future__ import annotations

from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project

app = typer.Typer(help="Registered files: register them for the next release, see where each stands.", no_args_is_help=True)


@app.command("register")
def register(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The configured source the file belongs to.")],
    paths: Annotated[list[str], typer.Argument(help="Paths relative to the source (one or more).")],
    note: Annotated[str, typer.Option("--note", help="A note kept with the registration.")] = "",
    json_output: JsonOpt = False,
) -> None:
    """Register files for the next release; prints each file's id and status."""
    with project(ctx, json_output) as kb:
        found = kb.register_files([{"source": source, "path": p, "note": note} for p in paths])
    echo_json([f.asdict() for f in found]) if json_output else typer.echo("\n".join(map(str, found)))


@app.command("status")
def status(
    ctx: typer.Context,
    file_id: Annotated[str | None, typer.Argument(help="A registered file's id (default: every registered file).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Where registered files stand: registered, synced, embedded, live, or failed with the reason."""
    with project(ctx, json_output) as kb:
        found = kb.file_status(file_id)
    if json_output:
        echo_json(found[0].asdict() if file_id is not None else [f.asdict() for f in found])
        return
    typer.echo("\n".join(map(str, found)) if found else "no registered files; register one with `kbrelease file register SOURCE PATH`")
