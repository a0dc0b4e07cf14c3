"""Another fsspec protocol through the normal sync path: ftp:// against a real FTP server (pyftpdlib) on 127.0.0.1."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kbrelease import ConfigError, KbRelease, load_config
from kbrelease.sources.source import Source

FTP_PASSWORD = "ftp-Secret-4711"


@pytest.fixture
def ftp_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with warnings.catch_warnings():  # pyftpdlib still imports asyncore (deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import ThreadedFTPServer

    root = tmp_path / "ftp"
    (root / "kb" / "it").mkdir(parents=True)
    (root / "kb" / "it" / "vpn.md").write_text("# VPN\n\nConnect with the client, then sign in.\n", encoding="utf-8")
    (root / "kb" / "faq.txt").write_text("Opening hours are nine to five.\n", encoding="utf-8")
    (root / "kb" / "notes.bin").write_bytes(b"\x00\x01")
    authorizer = DummyAuthorizer()
    authorizer.add_user("kb", FTP_PASSWORD, str(root), perm="elr")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "passive_ports": None})
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"ftp://kb@127.0.0.1:{server.address[1]}/kb", root / "kb"
    finally:
        server.close_all()
        thread.join(5)


def test_an_ftp_source_syncs_incrementally_through_the_normal_path(tmp_path: Path, ftp_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec.config

    url, folder = ftp_root
    # The password as a deployment gives it: FSSPEC_FTP_PASSWORD, read the way fsspec reads the environment at import.
    monkeypatch.setattr(fsspec.config, "conf", {})
    fsspec.config.set_conf_env(fsspec.config.conf, {"FSSPEC_FTP_PASSWORD": FTP_PASSWORD})
    config = tmp_path / "kbrelease.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\nsources:\n  - {{name: docs, path: '{url}', modality: text}}\n", encoding="utf-8")
    cfg = load_config(config, env={})
    with KbRelease(cfg) as kb:
        first = kb.sync(index_only=False)
        mirror = tmp_path / "ws" / "mirror" / "docs"
        assert sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file()) == ["faq.txt", "it/vpn.md"]
        assert (mirror / "it" / "vpn.md").read_text(encoding="utf-8").startswith("# VPN")
        listed = Source(cfg.sources[0], cfg.s3).scan().files
        assert [f.relative_path for f in listed] == ["faq.txt", "it/vpn.md"]
        assert all(abs((f.timestamp - datetime.now(UTC)).total_seconds()) < 3600 for f in listed)  # the server's modification times
        (folder / "faq.txt").write_text("Opening hours are eight to six, all week long.\n", encoding="utf-8")
        (folder / "it" / "vpn.md").unlink()
        second = kb.sync()
    assert (first.asdict()["sources"][0]["files"], first.asdict()["sources"][0]["downloaded"]) == (2, 2), first.asdict()
    assert (mirror / "faq.txt").read_text(encoding="utf-8").startswith("Opening hours are eight")
    assert not (mirror / "it" / "vpn.md").exists()
    again = second.asdict()["sources"][0]
    assert (again["files"], again["downloaded"], again["deleted"]) == (1, 1, 1), again


def test_a_password_in_an_ftp_path_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "kbrelease.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\nsources:\n  - {{name: docs, path: 'ftp://kb:hunter22@127.0.0.1:2121/kb', modality: text}}\n")
    with KbRelease(load_config(config, env={})) as kb, pytest.raises(ConfigError, match="FSSPEC_FTP_PASSWORD") as caught:
        kb.sync()
    assert "hunter22" not in str(caught.value)
