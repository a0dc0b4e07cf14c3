"""``kbrelease package export|import`` and ``kbrelease promote``: releases between environments."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kbrelease.cli._common import JsonOpt, Options, echo_json, project, run

if TYPE_CHECKING:
    from kbrelease.api import KbRelease

app = typer.Typer(help="Release packages: one checksummed archive per release, imported elsewhere without re-embedding.", no_args_is_help=True)

PartOpt = Annotated[float, typer.Option("--part-mb", min=0.0625, help="Size of each Parquet part of rows, in MiB (memory use is about one part).")]
AsOpt = Annotated[str | None, typer.Option("--as", help="Import under this release name (default: the package's).")]
SwitchOpt = Annotated[bool, typer.Option("--switch", help="Make the release live once it is verified (default: import only).")]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="package")
    root.command("promote")(promote)


@app.command("export")
def export(
    ctx: typer.Context,
    release: Annotated[str, typer.Argument(help="Release to export (built or verified).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Package file to write ('-' for stdout). Written atomically.")],
    zstd: Annotated[bool, typer.Option("--zstd", help="Compress the archive with zstd (imports detect it).")] = False,
    part_mb: PartOpt = 64,
    sign: Annotated[Path | None, typer.Option("--sign", help="Sign the package with this Ed25519 private key (PEM; see `package keygen`).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Export a release: rows, vectors, data index and manifest in one tar with SHA256SUMS (and a signature with --sign)."""
    to_stdout = output == "-"
    with project(ctx, json_output) as kb:
        target = sys.stdout.buffer if to_stdout else Path(output)
        info = kb.package_export(release, target, compress=zstd, part_mb=part_mb, sign=sign)
    if json_output:
        echo_json(info.asdict()) if not to_stdout else typer.echo(_json_line(info.asdict()), err=True)
    else:
        typer.echo(str(info), err=to_stdout)


@app.command("import")
def import_(
    ctx: typer.Context,
    package: Annotated[str, typer.Argument(help="Package file (tar or tar.zst), or '-' for stdin.")],
    switch: SwitchOpt = False,
    as_name: AsOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Import a package into the environment: check everything first, then load, verify, and switch only with --switch."""
    with project(ctx, json_output) as kb:
        source = sys.stdin.buffer if package == "-" else Path(package)
        info = kb.package_import(source, switch=switch, name=as_name)
    echo_json(info.asdict()) if json_output else typer.echo(str(info))


@app.command("keygen")
def keygen(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Private key file to write (PEM, mode 0600); the public key goes to OUT.pub.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing key files.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Make an Ed25519 key pair for signing packages: keep OUT secret, list OUT.pub in packages.trusted_keys where packages are imported."""
    from kbrelease.trust.signing import generate_keypair

    def go() -> dict[str, object]:
        private, public, fingerprint = generate_keypair(out, force)
        return {"private_key": str(private), "public_key": str(public), "fingerprint": fingerprint}

    done = run(ctx, go)
    if json_output:
        echo_json(done)
    else:
        typer.echo(f"wrote {done['private_key']} (secret) and {done['public_key']} (trust it: packages.trusted_keys); key {done['fingerprint']}")


def promote(
    ctx: typer.Context,
    release: Annotated[str, typer.Argument(help="Release of the --from environment.")],
    to_env: Annotated[str, typer.Option("--to", help="Environment to import into.")],
    from_env: Annotated[str | None, typer.Option("--from", help="Environment to export from (default: --env, KBRELEASE_ENV or default_environment).")] = None,
    switch: SwitchOpt = False,
    as_name: AsOpt = None,
    part_mb: PartOpt = 64,
    json_output: JsonOpt = False,
) -> None:
    """Copy a release to another environment (export + import, streamed, nothing re-embedded)."""

    def go() -> dict[str, object]:
        with _pair(ctx, from_env, to_env, json_output) as (source, target):
            info = source.promote(release, target, switch=switch, name=as_name, part_mb=part_mb)
        return info.asdict() if json_output else {"text": str(info)}

    out = run(ctx, go)
    echo_json(out) if json_output else typer.echo(str(out["text"]))


@contextmanager
def _pair(ctx: typer.Context, from_env: str | None, to_env: str, json_output: bool) -> Iterator[tuple[KbRelease, KbRelease]]:
    from kbrelease.api import KbRelease
    from kbrelease.config import load_config
    from kbrelease.progress import RichReporter, wants_bars

    opts: Options = ctx.obj
    workspace = str(opts.workspace) if opts.workspace else None
    source_cfg = load_config(opts.config, overrides={"workspace": workspace, "environment": from_env or opts.env})
    target_cfg = load_config(opts.config, overrides={"workspace": workspace, "environment": to_env})
    with ExitStack() as stack:
        reporter = None
        if wants_bars(json_output):
            reporter = RichReporter()
            stack.enter_context(reporter.live())
        source = stack.enter_context(KbRelease(source_cfg))
        target = stack.enter_context(KbRelease(target_cfg, reporter))
        yield source, target


def _json_line(data: object) -> str:
    import json

    return json.dumps(data, ensure_ascii=False, default=str)
