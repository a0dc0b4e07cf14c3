"""promote dev → prod, the package commands on the command line, and secrets that never enter a package."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import zstandard
from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.cli import app
from kbrelease.errors import CompatibilityError

from .support import MakeTarget, footprint
from helpers import OTHER_MODEL, write_config

MILVUS_TOKEN = "root:hunter2-never-in-a-package"
API_KEY = "sk-never-in-a-package-7f3a"


def _environments(tmp_path: Path, corpus: Path, lite_server: str, n: str) -> Path:
    """dev and prod on one Milvus, one registry database (the registry keys every row by environment)."""
    return write_config(
        tmp_path,
        corpus,
        f"default_environment: dev\nmilvus:\n  uri: {lite_server}\n  registry_db: {n}_registry\n"
        f"environments:\n  dev:\n    db_prefix: {n}_\n    service_port: 3003\n  prod:\n    db_prefix: {n}_\n    service_port: 3002\n",
    )


def test_promote_on_the_command_line_copies_a_release_to_prod_through_a_pipe(
    tmp_path: Path, corpus: Path, lite_server: str, text_embedder: Any, image_embedder: Any
) -> None:
    config = _environments(tmp_path, corpus, lite_server, "promo")
    with KbRelease(load_config(config, env={}), text_embedder=text_embedder, image_embedder=image_embedder) as dev:
        record = dev.publish().release
    before = {p for p in (tmp_path / "ws").rglob("*")}
    runner = CliRunner()

    result = runner.invoke(app, ["-c", str(config), "promote", "v1", "--to", "prod", "--switch", "--json"])

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["release"], out["environment"], out["source_environment"], out["state"], out["live"]) == ("v1", "prod", "dev", "verified", "v1")
    assert out["rows"] == sum(c.rows for c in record.sources.values())
    created = sorted(str(p.relative_to(tmp_path / "ws")) for p in set((tmp_path / "ws").rglob("*")) - before if p.is_file())
    assert all(p.startswith("envs/prod/releases/v1/") for p in created), created  # no package file, no spool
    status = {env: json.loads(runner.invoke(app, ["-c", str(config), "--env", env, "status", "--json"]).stdout) for env in ("dev", "prod")}
    assert status["prod"]["live"] == "v1" and status["dev"]["live"] == "v1"
    assert status["prod"]["releases"][0]["database"] == "promo_prod_v1" and status["dev"]["releases"][0]["database"] == "promo_dev_v1"
    search = runner.invoke(app, ["-c", str(config), "--env", "prod", "search", "how do I connect to the VPN from home", "-k", "1", "--json"])
    assert json.loads(search.stdout)[0]["file"] == "it/vpn-setup.md"


def test_promote_to_an_environment_with_another_model_writes_nothing_there(project: Any, make_target: MakeTarget) -> None:
    project.publish()
    prod = make_target("prod", models=False, environ=OTHER_MODEL)
    threads = threading.active_count()

    with pytest.raises(CompatibilityError, match=r"'all-MiniLM-L6-v2' .* environment 'prod' is configured for 'bge-small-en'"):
        project.promote("v1", prod)

    assert footprint(prod) == {"databases": [], "registry": [], "workspace": []}
    assert threading.active_count() == threads  # the exporting thread stopped too


def test_export_to_stdout_and_import_from_stdin(project: Any, tmp_path: Path, lite_server: str, corpus: Path) -> None:
    project.publish()
    milvus = project.cfg.milvus
    source_cfg = write_config(tmp_path, corpus, f"milvus:\n  uri: {lite_server}\n  db_prefix: {milvus.db_prefix}\n  registry_db: {milvus.registry_db}\n")
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    target_cfg = write_config(target_dir, corpus, f"milvus:\n  uri: {lite_server}\n  db_prefix: stdin_\n  registry_db: stdin_registry\n")
    runner = CliRunner()

    exported = runner.invoke(app, ["-c", str(source_cfg), "package", "export", "v1", "-o", "-", "--zstd"])
    assert exported.exit_code == 0, exported.stderr
    assert exported.stdout_bytes[:4] == b"\x28\xb5\x2f\xfd"  # zstd: the summary went to stderr
    assert "exported release v1" in exported.stderr

    imported = runner.invoke(app, ["-c", str(target_cfg), "package", "import", "-", "--switch"], input=exported.stdout_bytes)

    assert imported.exit_code == 0, imported.output
    assert "imported release v1 (default) as v1 into default" in imported.stdout and "live in default: v1" in imported.stdout
    assert not any((target_dir / "ws" / "tmp").iterdir())  # the spooled copy is gone


def test_bad_packages_and_other_models_exit_with_their_own_codes(project: Any, tmp_path: Path, lite_server: str, corpus: Path) -> None:
    project.publish()
    package = tmp_path / "v1.tar"
    project.package_export("v1", package)
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    target_cfg = write_config(target_dir, corpus, f"milvus:\n  uri: {lite_server}\n  db_prefix: codes_\n  registry_db: codes_registry\n")
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(package.read_bytes()[:-20000])
    runner = CliRunner()

    truncated = runner.invoke(app, ["-c", str(target_cfg), "package", "import", str(damaged)])
    other_model = runner.invoke(app, ["-c", str(target_cfg), "package", "import", str(package)], env=OTHER_MODEL)
    missing = runner.invoke(app, ["-c", str(target_cfg), "package", "import", str(tmp_path / "nope.tar")])

    assert truncated.exit_code == 4 and truncated.stderr.startswith(f"error: {damaged}:") and "truncated" in truncated.stderr
    assert other_model.exit_code == 5 and "configured for 'bge-small-en'" in other_model.stderr
    assert missing.exit_code == 4 and "not found" in missing.stderr


def test_tokens_and_keys_never_enter_a_package(tmp_path: Path, corpus: Path, lite_server: str, text_embedder: Any, image_embedder: Any) -> None:
    env = {"MILVUS_TOKEN": MILVUS_TOKEN, "TEXT_EMBEDDING_API_KEY": API_KEY, "MILVUS_URI": lite_server}
    cfg = load_config(write_config(tmp_path, corpus, "milvus:\n  db_prefix: tok_\n  registry_db: tok_registry\n"), env=env)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
        kb.package_export("v1", tmp_path / "v1.tar")
        kb.package_export("v1", tmp_path / "v1.tar.zst", compress=True)

    raw = (tmp_path / "v1.tar").read_bytes()
    unzstd = zstandard.ZstdDecompressor().stream_reader(io.BytesIO((tmp_path / "v1.tar.zst").read_bytes())).read()
    texts = [raw, unzstd]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:  # Parquet is compressed: read its values too
        for m in tar.getmembers():
            if m.name.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(tar.extractfile(m).read()))  # type: ignore[union-attr]
                texts.append(json.dumps(table.drop_columns([c for c in table.column_names if c == "vector"]).to_pylist(), default=str).encode())
    for data in texts:
        for secret in (MILVUS_TOKEN, "hunter2", API_KEY):
            assert secret.encode() not in data


def test_promote_from_an_environment_without_a_store_creates_nothing(tmp_path: Path, corpus: Path) -> None:
    """With no config file's URI, each environment has an embedded store folder; a promote from one never used must not start it."""
    config = write_config(tmp_path, corpus, "environments:\n  dev: {}\n  prod: {}\n")

    result = CliRunner().invoke(app, ["-c", str(config), "promote", "v1", "--from", "dev", "--to", "prod"])

    assert result.exit_code == 1
    assert "environment 'dev' has no releases yet" in result.output and "kbrelease --env dev publish" in result.output
    assert not (tmp_path / "ws" / "milvus-dev").exists()
