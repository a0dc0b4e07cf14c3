"""The trust primitives: one grammar for names, one rule for paths, escaped filter literals, redaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kbrelease.errors import InvalidName, UnsafePath
from kbrelease.trust import check_name, contained, eq, redact, redact_url, safe_relpath, str_literal
from kbrelease.trust.names import is_name
from kbrelease.trust.paths import is_regular_file, path_problem
from kbrelease.trust.redact import register_secret

HOSTILE_PATHS = [
    "",
    "/etc/passwd",
    "../x",
    "a/../../b",
    "a/./b",
    ".",
    "..",
    "a//b",
    "/tmp/x/pwned.md",
    "a\\..\\b",
    "C:/windows",
    "a\0b",
    "a\nb",
    "x" * 2000,
    "a/" + "y" * 300,
    "dir/",
    "caf\udce9.md",
]


@pytest.mark.parametrize("rel", HOSTILE_PATHS)
def test_hostile_relative_paths_are_refused(rel: str) -> None:
    assert path_problem(rel) is not None
    with pytest.raises(UnsafePath):
        safe_relpath(rel, "key")


@pytest.mark.parametrize("rel", ["a.md", "docs/guide/intro.md", "ünïcödé/файл.txt", "a b/c d.png", ".hidden/x.md", "a..b.txt"])
def test_plain_relative_paths_pass(rel: str) -> None:
    assert safe_relpath(rel) == rel


def test_contained_follows_links_and_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    assert contained(root, "sub/f.txt") == (root / "sub" / "f.txt").resolve()
    with pytest.raises(UnsafePath, match="outside"):
        contained(root, "link/secret")
    with pytest.raises(UnsafePath):
        contained(root, "../outside")


def test_devices_are_not_regular_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    assert is_regular_file(tmp_path / "f")
    assert not is_regular_file(Path("/dev/zero"))
    assert not is_regular_file(tmp_path)
    assert not is_regular_file(tmp_path / "missing")


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("release", 'zz" or key == "default/release/v6'),
        ("release", "v1/../v2"),
        ("release", ""),
        ("release", "x" * 49),
        ("source", "1abc"),
        ("source", "a-b"),
        ("bundle", "../../../../.."),
        ("channel", ".."),
        ("channel", "a/b"),
        ("channel", ".hidden"),
        ("bundle", "a..b"),
        ("environment", "prod;rm"),
    ],
)
def test_hostile_names_are_refused(kind: str, value: str) -> None:
    assert not is_name(kind, value)  # type: ignore[arg-type]
    with pytest.raises(InvalidName, match=kind):
        check_name(kind, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value"), [("release", "v12"), ("release", "2024_01"), ("source", "docs"), ("bundle", "camera-front.v1"), ("channel", "lidar_top")]
)
def test_good_names_pass(kind: str, value: str) -> None:
    assert check_name(kind, value) == value  # type: ignore[arg-type]


def test_filter_literals_escape_quotes_and_backslashes() -> None:
    assert str_literal('a"b') == '"a\\"b"'
    assert str_literal("a\\") == '"a\\\\"'
    assert eq("key", 'zz" or key == "x') == 'key == "zz\\" or key == \\"x"'
    with pytest.raises(ValueError):
        eq("key or 1", "x")
    with pytest.raises(ValueError):
        str_literal("a\0")


def test_redaction_masks_userinfo_tokens_and_registered_secrets() -> None:
    assert redact("GET http://user:pass@host:9/v1 failed") == "GET http://***@host:9/v1 failed"
    assert "pass" not in redact_url("https://user:pass@h/v1?api_key=abcd1234")
    assert "abcd1234" not in redact_url("https://h/v1?api_key=abcd1234")
    assert redact("Authorization: Bearer sk-abcdef123456") == "Authorization: Bearer ***"
    assert redact("MILVUS_TOKEN=root:Milvus rest") == "MILVUS_TOKEN=*** rest"
    register_secret("s3cr3t-value-xyz")
    assert "s3cr3t" not in redact("the endpoint said: bad key s3cr3t-value-xyz")
    assert redact("nothing secret here") == "nothing secret here"
