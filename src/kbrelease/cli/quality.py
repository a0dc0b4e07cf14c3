"""What changed and who switched it: ``kbrelease diff`` and ``kbrelease history``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("diff")(diff)
    app.command("history")(history)


def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(help="The earlier release (with one name only: the later one, compared with the live release).")],
    new: Annotated[str | None, typer.Argument(help="The later release.")] = None,
    queries: Annotated[
        Path | None, typer.Option("--queries", help="Golden queries (YAML/JSONL) whose top k to compare (default: quality.golden_queries).")
    ] = None,
    no_queries: Annotated[bool, typer.Option("--no-queries", help="Compare files and chunks only.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Files added/removed/changed, chunks added/removed/reused per source, and golden queries whose top k changed.

    `kbrelease diff v7` compares the live release with v7 (what the approval step of the Argo workflow prints).
    """
    from kbrelease.release.diff import diff_text

    with project(ctx, json_output) as kb:
        if new is None:
            live = kb.registry.pointer().live
            if live is None:
                message = f"nothing is live yet: every file of {old} is new"
                echo_json({"from": None, "to": old, "sources": {}, "queries": [], "note": message}) if json_output else typer.echo(message)
                return
            old, new = live, old
        golden = None
        if not no_queries and (queries is not None or kb.cfg.quality.golden_queries is not None):
            golden = kb.golden_queries(queries)
        result = kb.diff(old, new, golden)
    echo_json(result) if json_output else typer.echo(diff_text(result), nl=False)


def history(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Every switch, rollback and refused quality gate: when, from → to, by whom, why, recall."""
    with project(ctx, json_output) as kb:
        events = kb.history()
    if json_output:
        echo_json(events)
        return
    if not events:
        typer.echo("no switches yet")
    for e in events:
        action = e.get("action", "switch")
        recall = e.get("recall")
        extras = [f"recall {recall:.3f}" if isinstance(recall, int | float) else "", "quality gate skipped" if e.get("skip_quality") else ""]
        why = f" — {e['reason']}" if e.get("reason") else ""
        line = f"{e.get('at', '?')}  {action:<8} {e.get('from') or '-'} → {e.get('to') or e.get('live')}  by {e.get('by', '?')}"
        typer.echo(line + "".join(f", {x}" for x in extras if x) + why)
