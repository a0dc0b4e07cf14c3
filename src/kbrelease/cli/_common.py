"""What every command module shares: the global options, loading the project once,
one-line errors with exit codes, and JSON output.

Everything printed passes the one redaction (:mod:`kbrelease.trust.redact`): the
error line here, JSON output here, and, as the last guard, the process's stdout
and stderr (:class:`RedactingStream`, installed by ``kbrelease.cli.main``), so a
traceback (``--debug``) or a command's own ``typer.echo`` cannot print a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer

from kbrelease.errors import KbReleaseError
from kbrelease.trust.redact import redact, redact_known

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
    json_output: bool = False
    """``--json`` before the command (it turns on the command's own ``--json``)."""


def echo_json(data: Any) -> None:
    # Known secrets and URL credentials only: the data may be documents that mention a "password: ...".
    typer.echo(redact_known(json.dumps(data, indent=2, ensure_ascii=False, default=str)))


def echo_error(exc: KbReleaseError | str) -> None:
    """``error: <message>`` on stderr, redacted (a message may name a URL with credentials)."""
    typer.echo(f"error: {redact(exc)}", err=True)


class RedactingStream:
    """A text stream that redacts each write; everything else (``buffer``, ``isatty``, ``fileno``) is the wrapped stream's.

    ``data=True`` (stdout: results, listings) masks the known secrets and URL
    credentials only; stderr (messages, tracebacks) gets the whole redaction.
    """

    def __init__(self, stream: TextIO, data: bool = False) -> None:
        self._stream = stream
        self._redact = redact_known if data else redact

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # a text stream: click probes with write(b"") to find binary ones
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._stream.write(self._redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


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
        echo_error(exc)
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
        echo_error(exc)
        raise typer.Exit(exit_code(exc)) from None
