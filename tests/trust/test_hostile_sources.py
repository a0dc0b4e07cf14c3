"""Hostile bucket keys and hostile local folders: a key or a file name never writes or reads outside its root.

Each key becomes a relative path once, at listing; keys that are not plain
relative paths, that collide with another on some disk, or that are a file and
a folder at once are skipped and named in the sync summary, and the rest syncs.
Tests run against moto's S3 server on 127.0.0.1 and real local folders.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbrelease import load_config
from kbrelease.index.data_index import read_source_index
from kbrelease.sources.sync import sync

from servers import S3Server

BUCKET = "kb-hostile"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    s3.reset()
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    s3.make_bucket(BUCKET)
    return {**s3.env(), "S3_PATH_TEXT": f"s3://{BUCKET}/corpus", "KBRELEASE_WORKSPACE": str(tmp_path / "ws")}


def _put(s3: S3Server, keys: dict[str, bytes]) -> None:
    client = s3.client()
    for key, body in keys.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)


def _mirrored(tmp_path: Path, source: str = "text") -> dict[str, bytes]:
    mirror = tmp_path / "ws" / "mirror" / source
    return {p.relative_to(mirror).as_posix(): p.read_bytes() for p in mirror.rglob("*") if p.is_file()}


def _skipped(info: Any) -> dict[str, str]:
    return {s["file"]: s["reason"] for s in info.sources[0].skips}


def test_a_key_with_a_double_slash_does_not_write_outside_the_workspace(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "outside" / "pwned.md"
    _put(s3, {f"corpus/{target}": b"# pwned\n", "corpus/ok.md": b"# fine\n"})

    info, _ = sync(load_config(env=s3_env))

    assert not target.exists()
    assert _mirrored(tmp_path) == {"ok.md": b"# fine\n"}
    assert [r.relative_path for r in read_source_index(tmp_path / "ws" / "index" / "text.parquet")] == ["ok.md"]
    assert _skipped(info) == {str(target): "key is absolute; only plain relative paths are mirrored, rename the object"}
    assert info.sources[0].skipped == 1
    assert f"1 skipped:\n      {target}: key is absolute" in str(info)


HOSTILE_KEYS = {
    "../up.md": "has a '..' part",
    "a/../../../up2.md": "has a '..' part",
    "./dot.md": "has a '.' part",
    "back\\..\\slash.md": "contains a backslash",
    "ctl\x01.md": "contains a NUL or control character",
    "tab\t.md": "contains a NUL or control character",
    "x" * 300 + ".md": "has a part longer than 255 bytes",
    "deep/" + "/".join(["d" * 200] * 6) + ".md": "is longer than 1024 characters",
    "trailing.md/": "has an empty part",
}


def test_every_unsafe_key_is_skipped_by_name_and_the_rest_syncs(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    hostile = HOSTILE_KEYS
    _put(s3, {f"corpus/{k}": b"# bad\n" for k in hostile})
    _put(s3, {"corpus/good/one.md": b"# one\n", "corpus/two.txt": b"two\n"})

    info, _ = sync(load_config(env=s3_env))

    assert _mirrored(tmp_path) == {"good/one.md": b"# one\n", "two.txt": b"two\n"}
    assert not (tmp_path / "ws" / "up.md").exists() and not (tmp_path / "up2.md").exists()
    skipped = _skipped(info)
    assert len(skipped) == len(hostile)
    for key, rule in hostile.items():
        shown = key if key.isprintable() else ascii(key)[1:-1]
        shown = shown if len(shown) <= 200 else shown[:199] + "…"
        assert rule in skipped[shown], (key, skipped)


def test_folder_markers_and_the_prefix_itself_are_not_files(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    _put(s3, {"corpus/": b"", "corpus/dir/": b"", "corpus/notes.md/": b"", "corpus/dir/a.md": b"# a\n", "corpus2/other.md": b"# not ours\n"})

    info, _ = sync(load_config(env=s3_env))

    assert _mirrored(tmp_path) == {"dir/a.md": b"# a\n"}
    assert info.sources[0].skipped == 0


def test_keys_that_collide_on_a_case_insensitive_or_normalizing_disk_keep_the_first(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café.md"), unicodedata.normalize("NFD", "café.md")
    assert nfc != nfd
    _put(s3, {"corpus/Readme.md": b"upper", "corpus/README.md": b"caps", "corpus/" + nfc: b"nfc", "corpus/" + nfd: b"nfd"})

    info, _ = sync(load_config(env=s3_env))

    mirrored = _mirrored(tmp_path)
    assert mirrored == {"README.md": b"caps", nfd if nfd < nfc else nfc: b"nfd" if nfd < nfc else b"nfc"}
    skipped = _skipped(info)
    assert skipped["Readme.md"].startswith("same file name as 'README.md' on a case-insensitive or Unicode-normalizing disk")
    assert len(skipped) == 2
    assert len(read_source_index(tmp_path / "ws" / "index" / "text.parquet")) == 2


def test_a_file_and_a_folder_of_the_same_name(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    _put(s3, {"corpus/a.md": b"file", "corpus/a.md/b.md": b"inside", "corpus/A.MD/c.md": b"inside too", "corpus/z.md": b"z"})

    info, _ = sync(load_config(env=s3_env))

    assert _mirrored(tmp_path) == {"A.MD/c.md": b"inside too", "a.md/b.md": b"inside", "z.md": b"z"}
    assert _skipped(info) == {"a.md": "is a file and also the folder of other files; rename it"}


def test_a_file_under_a_folder_that_is_also_a_file(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    _put(s3, {"corpus/b.md": b"file", "corpus/B.md/c.md": b"under"})

    info, _ = sync(load_config(env=s3_env))

    assert _mirrored(tmp_path) == {"b.md": b"file"} or _mirrored(tmp_path) == {"B.md/c.md": b"under"}
    assert len(_skipped(info)) == 1


def test_index_only_skips_the_same_keys_and_reads_nothing_outside(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    _put(s3, {"corpus/../../etc/passwd.md": b"x", "corpus//etc/hosts.md": b"y", "corpus/ok.md": b"# ok\n"})

    info, _ = sync(load_config(env=s3_env), index_only=True)

    assert [r.relative_path for r in read_source_index(tmp_path / "ws" / "index" / "text.parquet")] == ["ok.md"]
    assert sorted(_skipped(info)) == ["../../etc/passwd.md", "/etc/hosts.md"]


def test_a_key_that_turns_from_a_file_into_a_folder_syncs(s3: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    """The old file is removed before the new folder is written (the old sync crashed with NotADirectoryError)."""
    cfg = load_config(env=s3_env)
    _put(s3, {"corpus/topic.md": b"a file"})
    sync(cfg)
    s3.client().delete_object(Bucket=BUCKET, Key="corpus/topic.md")
    _put(s3, {"corpus/topic.md/part.md": b"now a folder"})

    info, _ = sync(cfg)

    assert _mirrored(tmp_path) == {"topic.md/part.md": b"now a folder"}
    assert (info.sources[0].deleted, info.sources[0].downloaded) == (1, 1)


# --- local folders ---------------------------------------------------------------


def _local_config(tmp_path: Path, src: Path) -> Any:
    path = tmp_path / "kbrelease.yaml"
    path.write_text(f"workspace: {tmp_path / 'ws'}\nsources:\n  - name: docs\n    path: {src}\n    modality: text\n", encoding="utf-8")
    return load_config(path, env={})


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Path:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.md").write_text("# private key\n", encoding="utf-8")
    (outside / "more.md").write_text("# more\n", encoding="utf-8")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "real.md").write_text("# real\n", encoding="utf-8")
    (src / "sub" / "inner.md").write_text("# inner\n", encoding="utf-8")
    (src / "to-secret.md").symlink_to(outside / "key.md")
    (src / "to-secret-dir").symlink_to(outside)
    (src / "to-inner.md").symlink_to(src / "sub" / "inner.md")
    (src / "dangling.md").symlink_to(src / "gone.md")
    (src / "etc.md").symlink_to("/etc/hostname")
    os.mkfifo(src / "pipe.md")
    return src


def test_links_out_of_a_local_folder_and_fifos_are_skipped_by_name(hostile_folder: Path, tmp_path: Path) -> None:
    info, _ = sync(_local_config(tmp_path, hostile_folder))  # a FIFO opened for reading would hang the old sync forever

    mirrored = _mirrored(tmp_path, "docs")
    assert mirrored == {"real.md": b"# real\n", "sub/inner.md": b"# inner\n", "to-inner.md": b"# inner\n"}
    skipped = _skipped(info)
    assert skipped["to-secret.md"].startswith("is a link that leads outside the source folder")
    assert skipped["to-secret-dir"].startswith("is a link that leads outside the source folder")
    assert skipped["etc.md"].startswith("is a link that leads outside the source folder")
    assert skipped["dangling.md"].startswith("is a link to something that is not a regular file")
    assert skipped["pipe.md"].startswith("is not a regular file (a FIFO, device or socket)")
    assert b"private key" not in b"".join(mirrored.values())


def test_index_only_does_not_read_through_links_or_fifos(hostile_folder: Path, tmp_path: Path) -> None:
    info, _ = sync(_local_config(tmp_path, hostile_folder), index_only=True)

    assert [r.relative_path for r in read_source_index(tmp_path / "ws" / "index" / "docs.parquet")] == ["real.md", "sub/inner.md", "to-inner.md"]
    assert info.sources[0].skipped == 5


def test_a_link_planted_in_the_mirror_is_removed_not_followed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.md").write_text("# v1\n", encoding="utf-8")
    cfg = _local_config(tmp_path, src)
    sync(cfg)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "a.md").write_text("precious", encoding="utf-8")
    (victim / "other.md").write_text("precious too", encoding="utf-8")
    planted = tmp_path / "ws" / "mirror" / "docs" / "sub"
    (planted / "a.md").unlink()
    planted.rmdir()
    planted.symlink_to(victim)
    (src / "sub" / "a.md").write_text("# v2, longer\n", encoding="utf-8")

    sync(cfg)

    assert (victim / "a.md").read_text(encoding="utf-8") == "precious"
    assert (victim / "other.md").read_text(encoding="utf-8") == "precious too"
    assert not planted.is_symlink()
    assert _mirrored(tmp_path, "docs") == {"sub/a.md": b"# v2, longer\n"}


def test_a_file_name_that_is_not_utf8_is_skipped_by_name(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.md").write_text("# ok\n", encoding="utf-8")
    with open(os.path.join(os.fsencode(src), b"latin1-\xe9.md"), "wb") as fh:
        fh.write(b"# bad name\n")

    info, _ = sync(_local_config(tmp_path, src))

    assert _mirrored(tmp_path, "docs") == {"ok.md": b"# ok\n"}
    assert list(_skipped(info).values()) == ["name is not valid UTF-8; rename the file"]
