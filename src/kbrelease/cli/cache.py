"""``kbrelease cache``: the embedding cache and per-file content packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project

app = typer.Typer(help="The embedding cache: vectors reused across releases.", no_args_is_help=True)


@app.command("stats")
def stats(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Entries, size, and the hit rate of the last build."""
    with project(ctx, json_output) as kb:
        stats = kb.cache_stats()
    if json_output:
        echo_json(stats.asdict())
        return
    rate = f"{stats.hit_rate:.1%}" if stats.hit_rate is not None else "-"
    typer.echo(
        f"{stats.path}: {stats.entries} vectors in {stats.namespaces} model(s), {stats.size_bytes / 1048576:.1f} MB; "
        f"last build {stats.last_build or '-'}: {stats.last_hits} reused, {stats.last_misses} embedded (hit rate {rate})"
    )


@app.command("prune")
def prune(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", "-k", min=1, help="Keep entries used by the last N builds.")] = 5,
    json_output: JsonOpt = False,
) -> None:
    """Drop cached vectors that none of the last N builds used."""
    with project(ctx, json_output) as kb:
        dropped = kb.cache_prune(keep)
    echo_json({"dropped": dropped}) if json_output else typer.echo(f"dropped {dropped} cached vectors")


@app.command("export")
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write files/<file_id>/<checksum>/ into.")],
    file: Annotated[list[str] | None, typer.Option("--file", "-f", help="A file id or relative path (repeatable).")] = None,
    all_files: Annotated[bool, typer.Option("--all", help="Every file of the release.")] = False,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release to export (default: the live one).")] = None,
    sign: Annotated[Path | None, typer.Option("--sign", help="Sign each package with this Ed25519 private key (PEM; `package keygen`).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Write per-file content packages (chunks + vectors) that another environment imports without embedding."""
    if bool(file) == all_files:
        typer.echo("error: give --file PATH_OR_ID (repeatable) or --all", err=True)
        raise typer.Exit(2)
    with project(ctx, json_output) as kb:
        info = kb.cache_export(out, None if all_files else file, release, sign)
    if json_output:
        echo_json(info.asdict())
        return
    typer.echo(f"exported {info.files} file package(s), {info.vectors} vectors, to {out}")
    for problem in info.problems:
        typer.echo(f"refused: {problem}", err=True)


@app.command("import")
def import_(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder written by `kbrelease cache export`.")],
    json_output: JsonOpt = False,
) -> None:
    """Load content packages into the embedding cache; the next build reuses their vectors."""
    with project(ctx, json_output) as kb:
        info = kb.cache_import(folder)
    if json_output:
        echo_json(info.asdict())
    else:
        typer.echo(
            f"imported {info.files} file package(s), {info.vectors} vectors ({info.signed} on a trusted signature, "
            f"{info.checked} vectors re-embedded to check the others)"
        )
