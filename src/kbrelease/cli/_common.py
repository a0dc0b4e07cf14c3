"""What every command module shares: the global options, loading the project once,
one-line errors with exit codes, and JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kbrelease.errors import KbReleaseError

if TYPE_CHECKING:
    from kbrelease.api import KbRelease
    from kbrelease.config import Config

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

# EX_TEMPFAIL: a transient error (Milvus, S3 or the embedding endpoint out of
# reach). The rendered Argo workflow retries a step only on this code (or a
# lost pod); other errors would fail the same way again.
EXIT_TRANSIENT = 75


def exit_code(exc: KbReleaseError) -> int:
    return EXIT_TRANSIENT if exc.transient else exc.exit_code


@dataclass
class Options:
    config: Path | None
    workspace: Path | None
    env: str | None
    debug: bool
    no_wait: bool = False


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@contextmanager
def project(ctx: typer.Context, json_output: bool = False) -> Iterator[KbRelease]:
    """Load the config once, build the facade, map errors to one line + exit code."""
    opts: Options = ctx.obj
    try:
        from kbrelease.api import KbRelease
        from kbrelease.progress import RichReporter, wants_bars

        cfg = load(ctx)
        lock_opts: dict[str, Any] = {"wait_for_lock": not opts.no_wait, "on_lock_wait": lambda message: typer.echo(message, err=True)}
        if wants_bars(json_output):
            reporter = RichReporter()
            with reporter.live(), KbRelease(cfg, reporter, **lock_opts) as kb:
                yield kb
        else:
            with KbRelease(cfg, **lock_opts) as kb:
                yield kb
    except KbReleaseError as exc:
        if opts.debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exit_code(exc)) from None


def load(ctx: typer.Context) -> Config:
    """The configuration of the global options, for commands that need no Milvus."""
    from kbrelease.config import load_config

    opts: Options = ctx.obj
    return load_config(opts.config, overrides={"workspace": str(opts.workspace) if opts.workspace else None, "environment": opts.env})


def run(ctx: typer.Context, fn: Callable[[], T]) -> T:
    """Run ``fn`` with the same error handling, for commands that need no project (init, store)."""
    try:
        return fn()
    except KbReleaseError as exc:
        if ctx.obj.debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exit_code(exc)) from None
