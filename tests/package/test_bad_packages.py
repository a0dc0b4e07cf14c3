"""Every damaged, unsafe, newer or foreign package is refused with a message naming the problem,
and the target environment is left exactly as it was: no database, no registry row, no folder."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kbrelease import KbRelease, load_config
from kbrelease.errors import CompatibilityError, KbReleaseError, PackageError
from kbrelease.package.format import format_sums, sha256_hex

from .support import MakeTarget, footprint
from helpers import ENDPOINT, mini_corpus, write_config

Members = list[tuple[tarfile.TarInfo, bytes]]


@pytest.fixture(scope="module")
def good_package(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any, image_embedder: Any) -> Iterator[Path]:
    """One small published release of a "dev" environment, exported with small parts (several per source)."""
    folder = tmp_path_factory.mktemp("dev")
    mini = mini_corpus(folder / "corpus")
    overrides = {"milvus.uri": lite_server, "milvus.db_prefix": "bad_", "milvus.registry_db": "bad_registry", "environment": "dev"}
    cfg = load_config(write_config(folder, mini), env={}, overrides=overrides)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
        kb.package_export("v1", folder / "v1.tar", part_mb=0.0625)
    yield folder / "v1.tar"


def _members(package: Path) -> Members:
    with tarfile.open(package) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]


def _write(path: Path, members: Members, resum: bool = False) -> Path:
    """A tar of ``members``; with ``resum``, SHA256SUMS is recomputed (a consistently made package)."""
    if resum:
        sums = [(m.name, sha256_hex(data)) for m, data in members if m.isreg() and m.name != "SHA256SUMS"]
        members = [(m, format_sums(sums) if m.name == "SHA256SUMS" else data) for m, data in members]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _extra(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, data


def _insert_before_sums(members: Members, extra: tuple[tarfile.TarInfo, bytes]) -> Members:
    return [*members[:-1], extra, members[-1]]


def _tampered(members: Members) -> Members:
    out = []
    for info, data in members:
        if info.name == "collections/docs/part-000000.parquet":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        out.append((info, data))
    return out


def _future_index(members: Members) -> Members:
    """The data index rewritten as a future kbrelease's (its checksum covers the manifest entries, which stay)."""
    import yaml

    out = []
    for info, data in members:
        if info.name == "index/bundle.yaml":
            bundle = yaml.safe_load(data)
            bundle["meta"].update(schema_version=7, kbrelease_version="9.0.0")
            data = yaml.safe_dump(bundle, sort_keys=False).encode()
        out.append((info, data))
    return out


def _zstd(path: Path) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(path.read_bytes())


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _manifest(members: Members, change: Callable[[dict[str, Any]], None]) -> Members:
    out = []
    for info, data in members:
        if info.name == "manifest.json":
            manifest = json.loads(data)
            change(manifest)
            data = json.dumps(manifest).encode()
        out.append((info, data))
    return out


CASES: dict[str, tuple[Callable[[Members, Path], Path], type[KbReleaseError], str]] = {
    "tampered member": (lambda m, p: _write(p, _tampered(m)), PackageError, r"checksum mismatch for 'collections/docs/part-000000\.parquet'.*tampered"),
    "truncated archive": (lambda m, p: p.write_bytes(_write(p, m).read_bytes()[: p.stat().st_size // 2]) and p, PackageError, r"truncated"),
    "cut at a member boundary": (lambda m, p: _write(p, m[:-1]), PackageError, r"no SHA256SUMS at the end: the archive is truncated"),
    "truncated zstd archive": (lambda m, p: p.write_bytes(_half(_zstd(_write(p, m)))) and p, PackageError, r"truncated"),
    "corrupted zstd archive": (lambda m, p: p.write_bytes(_flip(_zstd(_write(p, m)))) and p, PackageError, r"damaged|checksum mismatch"),
    "../ path": (lambda m, p: _write(p, _insert_before_sums(m, _extra("index/../../evil.txt"))), PackageError, r"'index/\.\./\.\./evil\.txt' points outside"),
    "absolute path": (lambda m, p: _write(p, _insert_before_sums(m, _extra("/etc/cron.d/evil"))), PackageError, r"'/etc/cron\.d/evil' has an absolute path"),
    "symlink outside": (
        lambda m, p: _write(p, _insert_before_sums(m, _extra("index/passwd.parquet", tarfile.SYMTYPE, link="/etc/passwd"))),
        PackageError,
        r"'index/passwd\.parquet' is a symbolic link to '/etc/passwd'",
    ),
    "hard link": (lambda m, p: _write(p, _insert_before_sums(m, _extra("index/x.parquet", tarfile.LNKTYPE, link="../../x"))), PackageError, r"hard link"),
    "device": (lambda m, p: _write(p, _insert_before_sums(m, _extra("index/null.parquet", tarfile.CHRTYPE))), PackageError, r"not a regular file"),
    "unlisted member": (lambda m, p: _write(p, _insert_before_sums(m, _extra("index/extra.parquet"))), PackageError, r"'index/extra\.parquet' is not listed"),
    "member after SHA256SUMS": (lambda m, p: _write(p, [*m, _extra("index/late.parquet")]), PackageError, r"'index/late\.parquet' follows SHA256SUMS"),
    "not a package": (lambda m, p: (p.write_bytes(b"hello, not a tar file\n" * 100), p)[1], PackageError, r"not a readable package|truncated or damaged"),
    "newer package format": (
        lambda m, p: _write(p, _manifest(m, lambda d: d.update(package_version=99)), resum=True),
        CompatibilityError,
        r"package format 99, newer than kbrelease .* reads \(formats 1\); upgrade kbrelease",
    ),
    "newer manifest schema": (
        lambda m, p: _write(p, _manifest(m, lambda d: d["release"].update(schema_version=7)), resum=True),
        CompatibilityError,
        r"manifest schema version 7, newer than kbrelease .* reads \(versions 1, 2, 3\); upgrade kbrelease",
    ),
    "data index of an incompatible version": (
        lambda m, p: _write(p, _future_index(m), resum=True),
        CompatibilityError,
        r"its data index: data index version v7 \(written by kbrelease 9\.0\.0\) is not compatible with kbrelease .*, which reads v1",
    ),
    "rows missing from a collection": (
        lambda m, p: _write(p, [(i, d) for i, d in m if i.name != "collections/docs/part-000000.parquet"], resum=True),
        PackageError,
        r"collection 'docs' has \d+ rows in its parts, the manifest says \d+",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_package_is_refused_and_nothing_is_written(case: str, good_package: Path, make_target: MakeTarget, tmp_path: Path) -> None:
    make, error, message = CASES[case]
    bad = make(_members(good_package), tmp_path / "bad.tar")
    prod = make_target("prod", models=False)
    before = footprint(prod)

    with pytest.raises(error, match=message) as caught:
        prod.package_import(bad)

    assert str(bad) in str(caught.value)  # names the package
    assert footprint(prod) == before == {"databases": [], "registry": [], "workspace": []}
    assert not prod.registry.exists()


def test_a_package_of_another_model_is_refused_before_anything_is_written(good_package: Path, make_target: MakeTarget) -> None:
    prod = make_target("prod", models=False, environ={**ENDPOINT, "TEXT_EMBEDDING_MODEL": "paraphrase-multilingual-MiniLM-L12-v2"})

    with pytest.raises(CompatibilityError, match=r"text vectors of model 'all-MiniLM-L6-v2' .* configured for 'paraphrase-multilingual-MiniLM-L12-v2'"):
        prod.package_import(good_package)

    assert footprint(prod) == {"databases": [], "registry": [], "workspace": []}


def test_the_good_package_itself_imports(good_package: Path, make_target: MakeTarget) -> None:
    """The cases above differ from this package only by what they break."""
    prod = make_target("prod", models=False)

    info = prod.package_import(good_package, switch=True)

    assert (info.state, info.live) == ("verified", "v1")
    prefix = prod.cfg.milvus.db_prefix
    assert footprint(prod)["databases"] == [f"{prefix}prod_v1", f"{prefix}registry"]
