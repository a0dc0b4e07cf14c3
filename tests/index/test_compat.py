"""The compatibility matrix: shipped in the package, replaceable by config, read by every data index reader;
an incompatible index is refused (or warned about) with its breaking changes and migration guide, and the
alert channels are told once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kbrelease import KbRelease, load_config
from kbrelease.errors import CompatibilityError, ConfigError
from kbrelease.index.compat import VersionCheck, assess, load_matrix, normalize, shipped_matrix
from kbrelease.index.data_index import read_bundle

from data_workspace import data_app, make_workspace, write_config
from local_http import UvicornServer, WebhookReceiver

MATRIX = """\
compatibility_matrix:
  spec_repo_versions:          # the seed's key is read too
    "v0.1.0":
      compatible_dataindex_versions: ["v1.0.0"]
      breaking_changes: []
    "0.2":
      compatible_dataindex_versions: ["v2"]
      breaking_changes:
        - "changed index schema: metadata is a typed column"
      migration_guide: "docs/migration/v0.1-to-v0.2.md"
version_check:
  notification_channels: ["slack://data-ops"]
"""


def _future_index(cfg: Any) -> Path:
    """Rewrite the synced index as one written by a kbrelease 0.2.0 (data index v2): what an older reader meets."""
    path = cfg.workspace / "index" / "bundle.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["meta"].update(schema_version=2, kbrelease_version="0.2.0")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _project(tmp_path: Path, policy: str = "", env: dict[str, str] | None = None, milvus: dict[str, str] | None = None) -> Any:
    (tmp_path / "compatibility.yaml").write_text(MATRIX, encoding="utf-8")
    return make_workspace(tmp_path, extra=f"version_check:\n  matrix: compatibility.yaml\n{policy}", env=env, overrides=milvus, pictures=False)


def test_the_shipped_matrix_is_package_data_and_reads_what_this_kbrelease_writes(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, pictures=False)
    meta = yaml.safe_load((cfg.workspace / "index" / "bundle.yaml").read_text(encoding="utf-8"))["meta"]

    matrix = shipped_matrix()
    verdict = assess(meta, matrix)

    assert matrix.source == "shipped" and matrix.entries
    assert (verdict.compatible, verdict.index_version, verdict.written_by) == (True, "v1", meta["kbrelease_version"])
    assert [normalize(v) for v in (1, "1", "v1", "v1.0.0", "2.0")] == ["v1", "v1", "v1", "v1", "v2"]
    assert not assess({"schema_version": 9}, matrix).compatible


def test_an_index_of_a_newer_kbrelease_is_refused_with_its_breaking_changes_and_migration_guide(tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    path = _future_index(cfg)

    with pytest.raises(CompatibilityError) as refused:
        read_bundle(path.parent, VersionCheck.of(cfg))

    message = str(refused.value)
    assert f"data index {path}: data index version v2 (written by kbrelease 0.2.0) is not compatible with kbrelease" in message
    assert "which reads v1" in message and str(tmp_path / "compatibility.yaml") in message
    assert "breaking changes: changed index schema: metadata is a typed column" in message
    assert "see the migration guide docs/migration/v0.1-to-v0.2.md" in message
    with pytest.raises(CompatibilityError):  # without a configuration: the shipped matrix, which knows no v2
        read_bundle(path.parent)
    with pytest.raises(CompatibilityError, match="not compatible"):
        KbRelease(cfg).data_index("current")


def test_warn_mode_reads_it_and_the_alert_channels_hear_of_it_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver() as hooks:
        cfg = _project(tmp_path, "  fail_on_incompatible: false\n", env={"KBRELEASE_ALERT_WEBHOOKS": hooks.url()})
        _future_index(cfg)
        caplog.set_level(logging.WARNING, "kbrelease.compat")

        for _ in range(3):
            bundle = read_bundle(cfg.workspace / "index", VersionCheck.of(cfg))

    assert bundle.meta["schema_version"] == 2 and bundle.data_manifest
    assert "fail_on_incompatible is false: reading it anyway" in caplog.text
    assert len(hooks.texts) == 1  # the matrix file's notification_channels (slack://data-ops → webhook), once
    assert hooks.texts[0].startswith(":warning: kbrelease [default] compatibility:")
    assert "docs/migration/v0.1-to-v0.2.md" in hooks.texts[0]


def test_a_disabled_check_and_a_bad_matrix_file(tmp_path: Path) -> None:
    cfg = _project(tmp_path, "  enable_automatic_check: false\n")
    _future_index(cfg)
    assert read_bundle(cfg.workspace / "index", VersionCheck.of(cfg)).meta["schema_version"] == 2

    bad = tmp_path / "bad.yaml"
    bad.write_text("compatibility_matrix:\n  kbrelease_versions:\n    '0.1': {breaking_changes: []}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: compatibility_matrix\.kbrelease_versions\.0\.1 needs compatible_dataindex_versions"):
        load_matrix(bad)
    missing = load_config(write_config(tmp_path, "version_check:\n  matrix: missing.yaml\n"), env={}).version_check.matrix
    assert missing == tmp_path / "missing.yaml"  # relative to the config file
    with pytest.raises(ConfigError, match=r"not found; fix version_check\.matrix"):
        VersionCheck.of(load_config(tmp_path / "kbrelease.yaml", env={}))


def test_kbrelease_check_reports_the_incompatibility(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    cfg = _project(tmp_path, milvus=isolated_milvus)
    with KbRelease(cfg) as kb:
        ok = kb.check()
        assert ok.ok and any(f.subject == "data index" and "compatible with kbrelease" in f.message for f in ok.findings), str(ok)

    cfg = load_config(tmp_path / "kbrelease.yaml", env={}, overrides=isolated_milvus)
    _future_index(cfg)
    with KbRelease(cfg) as kb:
        report = kb.check()
    assert not report.ok
    finding = next(f for f in report.findings if f.subject == "compatibility")
    assert finding.level == "error" and "data index version v2 (written by kbrelease 0.2.0)" in finding.message


def test_the_service_answers_409_for_an_incompatible_index(tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    _future_index(cfg)

    with UvicornServer(data_app(cfg)) as server:
        answer = httpx.get(f"{server.url}/api/v1/bundles/current")

    assert answer.status_code == 409
    assert "migration guide docs/migration/v0.1-to-v0.2.md" in answer.text
