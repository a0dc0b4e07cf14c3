"""The ``kbrelease`` command: a thin typer layer over :class:`kbrelease.api.KbRelease`.

Every command prints a readable summary, or stable JSON with ``--json``.
Errors are one line on stderr and an exit code (traceback with ``--debug``).

The commands live in one module per group (``releases``, ``store``, ``cache``,
...); this module builds the root app, its global options, and ``main``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from kbrelease.cli import argo, cache, check, ci, files, index, loadtest, monitor, notify, package, quality, releases, serve, store
from kbrelease.cli._common import Options, RedactingStream
from kbrelease.cli._globals import GlobalOptionsGroup, use_json_below

app = typer.Typer(
    name="kbrelease",
    help="Publish knowledge bases (text and images) into Milvus: versioned, verified, switched live atomically, reversible.\n\n"
    "The global options below may also be given after the command (`kbrelease status --env prod`); there, they win.",
    no_args_is_help=True,
    cls=GlobalOptionsGroup,
    pretty_exceptions_enable=False,
)
releases.register(app)
quality.register(app)
index.register(app)
monitor.register(app)
notify.register(app)
app.add_typer(store.app, name="store")
app.add_typer(cache.app, name="cache")
app.add_typer(files.app, name="file")
app.add_typer(argo.app, name="argo")
package.register(app)
check.register(app)
ci.register(app)
loadtest.register(app)
app.add_typer(serve.app, name="serve")


def _print_versions(value: bool) -> None:
    if not value:
        return
    from kbrelease.versions import component_versions

    found = component_versions()
    width = max(len(name) for name in found)
    for name, ver in found.items():
        typer.echo(f"{name:<{width}}  {ver or 'not installed'}")
    raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Config file (default: ./kbrelease.yaml or $KBRELEASE_CONFIG).")] = None,
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder (default: from config, or .kbrelease).")] = None,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Environment (default: $KBRELEASE_ENV, else default_environment of the config, else 'default').")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="If another command holds the environment lock, fail at once (exit 75) instead of waiting for it.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (commands that have a JSON form).")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, expose_value=False, callback=_print_versions, help="Print the versions of kbrelease, its models and Milvus, and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = Options(config, workspace, env, debug, no_wait, json_output)
    if json_output:
        use_json_below(ctx)


def _return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the OS.

    With the default dynamic mmap threshold, the many short-lived tensor and
    row buffers of a build end up in fragmented heap arenas and the RSS creeps
    up with the corpus (1.5 -> 1.8 GB from 2,500 to 10,000 paragraphs); with a
    fixed 128 KiB threshold it stayed flat at ~1.2 GB (docs/benchmarks.md).
    Same as MALLOC_MMAP_THRESHOLD_=131072; an explicit setting wins.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD


def main() -> None:
    _return_freed_memory()
    # The last guard of the one redaction: nothing the process prints carries a secret.
    sys.stdout = RedactingStream(sys.stdout, data=True)  # type: ignore[assignment]
    sys.stderr = RedactingStream(sys.stderr)  # type: ignore[assignment]
    app()
