"""Packages, content packages and data indexes made by someone else: at worst refused by name.

Every forged package here is *self-consistent*: made by the real exporter, then
edited, with its data-index checksums, bundle checksum and SHA256SUMS made
again, so only the checks of names, paths, sizes and signatures can stop it.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.errors import DataIndexError, FileChanged, KbReleaseError, PackageError, SignatureError
from kbrelease.index.data_index import Bundle, FileRecord, SourceIndex, arrow_schema, index_checksum, summarize_source, write_bundle, write_source_index
from kbrelease.package.format import format_sums, sha256_hex
from kbrelease.trust.signing import generate_keypair

from data_workspace import data_app, make_workspace
from helpers import mini_corpus, write_config
from local_http import UvicornServer

Members = list[tuple[tarfile.TarInfo, bytes]]
Edit = Callable[[dict[str, Any], dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, Any]], None]
"""``edit(manifest, bundle, index_rows_by_member, part_tables_by_member)``: changes a package in place."""
_n = itertools.count()


# --- a real package, and a forger that keeps it self-consistent -------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any, image_embedder: Any) -> Iterator[dict[str, Path]]:
    """A published release of a small corpus, exported unsigned, signed by key A, and signed by key B; and both key pairs."""
    folder = tmp_path_factory.mktemp("hostile")
    mini = mini_corpus(folder / "corpus")
    key_a, pub_a, _ = generate_keypair(folder / "keys" / "a")
    key_b, pub_b, _ = generate_keypair(folder / "keys" / "b")
    overrides = {"milvus.uri": lite_server, "milvus.db_prefix": "hp_", "milvus.registry_db": "hp_registry", "environment": "dev"}
    cfg = load_config(write_config(folder, mini), env={}, overrides=overrides)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
        kb.package_export("v1", folder / "v1.tar", part_mb=0.0625)
        kb.package_export("v1", folder / "v1-a.tar", sign=key_a)
        kb.package_export("v1", folder / "v1-b.tar", sign=key_b)
    yield {"plain": folder / "v1.tar", "a": folder / "v1-a.tar", "b": folder / "v1-b.tar", "key_a": key_a, "pub_a": pub_a, "key_b": key_b, "pub_b": pub_b}


@pytest.fixture
def target(tmp_path: Path, corpus: Path, lite_server: str) -> Iterator[Callable[..., KbRelease]]:
    """``target(env={...})``: a fresh "prod" project without loaded models (like a CLI that only imports)."""
    made_here: list[KbRelease] = []

    def make(env: dict[str, str] | None = None, extra: str = "") -> KbRelease:
        n = next(_n)
        folder = tmp_path / f"prod-{n}"
        folder.mkdir()
        overrides = {"milvus.uri": lite_server, "milvus.db_prefix": f"hq{n}_", "milvus.registry_db": f"hq{n}_registry", "environment": "prod"}
        kb = KbRelease(load_config(write_config(folder, corpus, extra), env=env or {}, overrides=overrides))
        made_here.append(kb)
        return kb

    yield make
    for kb in made_here:
        kb.close()


def _members(package: Path) -> Members:
    with tarfile.open(package) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]


def _write(path: Path, members: Members) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _resum(members: Members) -> Members:
    sums = [(m.name, sha256_hex(d)) for m, d in members if m.isreg() and m.name not in ("SHA256SUMS", "SIGNATURE")]
    return [(m, format_sums(sums) if m.name == "SHA256SUMS" else d) for m, d in members]


def _parquet(table: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def forge(package: Path, out: Path, edit: Edit) -> Path:
    """``package`` changed by ``edit``, then made consistent again: index checksums and counts, bundle checksum,
    the release's data-index checksum, the member list and SHA256SUMS (a forger who read the format)."""
    members = [(i, d) for i, d in _members(package) if i.name != "SIGNATURE"]
    data = {i.name: d for i, d in members}
    manifest = json.loads(data["manifest.json"])
    bundle = yaml.safe_load(data["index/bundle.yaml"])
    rows = {n: pq.read_table(io.BytesIO(d)).to_pylist() for n, d in data.items() if n.startswith("index/") and n.endswith(".parquet")}
    parts = {n: pq.read_table(io.BytesIO(d)) for n, d in data.items() if n.startswith("collections/")}
    edit(manifest, bundle, rows, parts)
    for entry in bundle["data_manifest"]:
        records = rows.get(f"index/{entry['index_file']}", [])
        entry["checksum"] = index_checksum(FileRecord(**{**r, "metadata": {}}) for r in records)
        entry["file_count"] = len(records)
    checksum = Bundle(bundle["meta"], [SourceIndex(**s) for s in bundle["data_manifest"]]).checksum
    bundle["meta"]["checksum"] = manifest["release"]["data_index_checksum"] = checksum
    manifest["data_index"]["members"] = ["index/bundle.yaml", *rows]
    new: Members = []
    for info, blob in members:
        if (info.name.startswith("index/") and info.name != "index/bundle.yaml") or info.name.startswith("collections/"):
            continue
        if info.name == "SHA256SUMS":
            new += [(tarfile.TarInfo("index/bundle.yaml"), yaml.safe_dump(bundle).encode())]
            new += [(tarfile.TarInfo(n), _parquet(pa.Table.from_pylist(r, schema=arrow_schema()))) for n, r in rows.items()]
            new += [(tarfile.TarInfo(n), _parquet(t)) for n, t in parts.items()]
        elif info.name == "manifest.json":
            blob = json.dumps(manifest).encode()
        elif info.name == "index/bundle.yaml":
            continue
        new.append((info, blob))
    return _write(out, _resum(new))


def _footprint(kb: KbRelease) -> dict[str, Any]:
    prefix = kb.cfg.milvus.db_prefix
    return {
        "databases": sorted(d for d in kb.store.databases() if d.startswith(prefix)),
        "registry": kb.registry.list_raw() if kb.registry.exists() else [],
        "workspace": sorted(str(p) for p in kb.cfg.workspace.rglob("*")) if kb.cfg.workspace.exists() else [],
    }


def _refused(kb: KbRelease, package: Path, error: type[KbReleaseError], match: str) -> KbReleaseError:
    """Import ``package`` into ``kb``: refused with ``error`` matching ``match``, naming the package, leaving nothing behind."""
    with pytest.raises(error, match=match) as caught:
        kb.package_import(package)
    assert str(package) in str(caught.value)
    assert _footprint(kb) == {"databases": [], "registry": [], "workspace": []}
    return caught.value


# --- attack 1: names and paths of a forged package ----------------------------------------


def _channel(value: str) -> Edit:
    def edit(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
        bundle["data_manifest"][0]["channel"] = value

    return edit


def _passwd_row(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    first = next(iter(rows.values()))
    first.append({**first[0], "file_id": "passwd", "relative_path": "etc/passwd", "size_bytes": len(passwd), "checksum": hashlib.sha256(passwd).hexdigest()})
    bundle["data_manifest"][0]["channel"] = "../../../../.."


def _rename_source(new: str) -> Edit:
    """Source ``docs`` renamed to ``new`` everywhere (manifest, record, bundle, members)."""

    def edit(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
        manifest["collections"][new] = manifest["collections"].pop("docs")
        manifest["release"]["sources"][new] = manifest["release"]["sources"].pop("docs")
        for entry in bundle["data_manifest"]:
            if entry["channel"] == "docs":
                entry["channel"], entry["index_file"] = new, f"{new}.parquet"
        rows[f"index/{new}.parquet"] = rows.pop("index/docs.parquet")

    return edit


def _set(path: str, value: Any) -> Edit:
    def edit(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
        node: Any = manifest
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value

    return edit


def _index_row(**change: Any) -> Edit:
    def edit(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
        rows["index/docs.parquet"][0].update(change)

    return edit


def _part_column(name: str, value: str) -> Edit:
    def edit(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
        member = next(n for n in parts if n.startswith("collections/docs/"))
        table = parts[member]
        column = pa.array([value] * table.num_rows, pa.string())
        parts[member] = table.set_column(table.schema.get_field_index(name), name, column)

    return edit


def _swap_collections(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
    """The bundle says docs feeds pictures' collection: an index row pointing into another source's mirror."""
    for entry in bundle["data_manifest"]:
        if entry["channel"] == "docs":
            entry["collection"] = manifest["collections"]["pictures"]["collection"]


def _yaml_aliases(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
    """A shared object: yaml.safe_dump writes an anchor and an alias (the building block of a "billion laughs")."""
    shared = ["lol"] * 10
    bundle["meta"]["a"], bundle["meta"]["b"] = shared, shared


def _rows_lie(manifest: dict[str, Any], bundle: dict[str, Any], rows: dict[str, list[dict[str, Any]]], parts: dict[str, Any]) -> None:
    manifest["collections"]["docs"]["rows"] -= 1
    manifest["release"]["sources"]["docs"]["rows"] -= 1


FORGED: dict[str, tuple[Edit, type[KbReleaseError], str]] = {
    "release name of 49 characters": (_set("release.name", "v" * 49), PackageError, r"release name 'v{49}'.* is invalid"),
    "release name with unicode": (_set("release.name", "v1é"), PackageError, r"release name 'v1é'.* is invalid"),
    "release name with NUL": (_set("release.name", "v1\x00"), PackageError, r"release name 'v1\\x00'.* is invalid"),
    "bundle.yaml with YAML aliases": (_yaml_aliases, PackageError, r"index/bundle\.yaml cannot be read \(a YAML alias"),
    "release record without embedders": (_set("release.embedders", ["text"]), PackageError, r"embedders are not text/image model descriptions"),
    "channel ../../../../.. listing etc/passwd": (
        _passwd_row,
        PackageError,
        r"source name '\.\./\.\./\.\./\.\./\.\.'.*index/bundle\.yaml channel.* is invalid",
    ),
    "channel with a slash": (_channel("docs/../pictures"), PackageError, r"source name 'docs/\.\./pictures'.* is invalid"),
    "channel with NUL": (_channel("docs\x00"), PackageError, r"source name 'docs\\x00'.* is invalid"),
    "channel of another source": (_channel("pictures"), PackageError, r"gives source 'pictures' index file 'docs\.parquet', expected pictures\.parquet"),
    "channel the release lacks": (_channel("other"), PackageError, r"lists source 'other', which the release does not have"),
    "source named ..": (_rename_source(".."), PackageError, r"unexpected member 'index/\.\.\.parquet'|source name '\.\.'"),
    "source named with unicode": (_rename_source("döcs"), PackageError, r"unexpected member|source name 'döcs'"),
    "very long source name": (_rename_source("s" * 300), PackageError, r"source name 's{20,}.* is invalid"),
    "release name with a quote": (_set("release.name", 'v1" or key like "'), PackageError, r"release name .* is invalid"),
    "release name with ..": (_set("release.name", "../v1"), PackageError, r"release name '\.\./v1'.* is invalid"),
    "collection name with a slash": (_set("collections.docs.collection", "../x"), PackageError, r"collection name '\.\./x'.* is invalid"),
    "collection differs from its source's record": (
        _set("collections.docs.collection", "other_docs"),
        PackageError,
        r"collection 'other_docs'.*release record",
    ),
    "index row pointing into another source's collection": (_swap_collections, PackageError, r"feeds .* the manifest says"),
    "index path ../pictures/x": (
        _index_row(relative_path="../pictures/checker.png"),
        PackageError,
        r"relative_path '\.\./pictures/checker\.png' has a '\.\.' part",
    ),
    "absolute index path": (_index_row(relative_path="/etc/hostname"), PackageError, r"relative_path '/etc/hostname' is absolute"),
    "index path with NUL": (_index_row(relative_path="a\x00b.md"), PackageError, r"contains a NUL"),
    "index file id that is a path": (_index_row(file_id="../../victim"), PackageError, r"file_id '\.\./\.\./victim' is not an id"),
    "index checksum not sha256": (_index_row(checksum="x" * 64), PackageError, r"is not a sha256 hex digest"),
    "row file id ../../victim": (_part_column("file_id", "../../victim"), PackageError, r"file_id '\.\./\.\./victim' is not an id"),
    "row path absolute": (_part_column("file", "/etc/passwd"), PackageError, r"file '/etc/passwd' is absolute"),
    "manifest says fewer rows than the parts hold": (_rows_lie, PackageError, r"brings collection 'docs' to \d+ rows, the manifest says \d+"),
    "negative row count": (_set("collections.docs.rows", -5), PackageError, r"declares -5 rows"),
    "absurd vector size": (_set("collections.docs.dim", 10**9), PackageError, r"declares vectors of 1000000000 dimensions"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_self_consistent_package_is_refused_by_name(case: str, made: dict[str, Path], target: Callable[..., KbRelease], tmp_path: Path) -> None:
    edit, error, match = FORGED[case]
    forged = forge(made["plain"], tmp_path / "forged.tar", edit)
    prod = target()

    _refused(prod, forged, error, match)


def test_the_forger_itself_makes_importable_packages(made: dict[str, Path], target: Callable[..., KbRelease], tmp_path: Path) -> None:
    """The cases above fail only because of what they change: an unchanged forgery imports."""
    forged = forge(made["plain"], tmp_path / "same.tar", lambda *_: None)
    info = target().package_import(forged)
    assert (info.state, info.signed, info.signer) == ("verified", False, None)


def _entry(info: tarfile.TarInfo | str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    out = tarfile.TarInfo(info) if isinstance(info, str) else info
    out.type, out.linkname = kind, link
    return out


MEMBERS: dict[str, tuple[Callable[[Members], Members], str]] = {
    "symlink member": (lambda m: [*m[:2], (_entry("index/x.parquet", tarfile.SYMTYPE, "/etc/passwd"), b""), *m[2:]], r"symbolic link to '/etc/passwd'"),
    "hardlink member": (lambda m: [*m[:2], (_entry("index/x.parquet", tarfile.LNKTYPE, "/etc/passwd"), b""), *m[2:]], r"hard link"),
    "device member": (lambda m: [*m[:2], (_entry("index/zero.parquet", tarfile.CHRTYPE), b""), *m[2:]], r"not a regular file"),
    "fifo member": (lambda m: [*m[:2], (_entry("index/fifo.parquet", tarfile.FIFOTYPE), b""), *m[2:]], r"not a regular file"),
    "duplicate manifest": (lambda m: [*m[:2], m[1], *m[2:]], r"'manifest\.json' appears twice"),
    "member named with NUL": (lambda m: [*m[:-1], (_entry("index/a\x00.parquet"), b"x"), m[-1]], r"unexpected member|not a readable|damaged"),
    "member after the signature": (lambda m: [*m, (_entry("SIGNATURE"), b"{}"), (_entry("index/late.parquet"), b"x")], r"follows SHA256SUMS"),
    "signature before SHA256SUMS": (lambda m: [*m[:-1], (_entry("SIGNATURE"), b"{}"), m[-1]], r"SIGNATURE comes before SHA256SUMS"),
}


@pytest.mark.parametrize("case", list(MEMBERS))
def test_unsafe_archive_members_are_refused(case: str, made: dict[str, Path], target: Callable[..., KbRelease], tmp_path: Path) -> None:
    change, match = MEMBERS[case]
    bad = _write(tmp_path / "bad.tar", change(_members(made["plain"])))
    _refused(target(), bad, PackageError, match)


# --- attack 4: Parquet bombs ------------------------------------------------------------------


def test_an_index_that_holds_more_rows_than_its_bundle_says_is_refused_before_it_is_decoded(
    made: dict[str, Path], target: Callable[..., KbRelease], tmp_path: Path
) -> None:
    """A small compressed index of 600,000 identical rows (a bomb) whose bundle says 2 files."""
    members = _members(made["plain"])
    data = {i.name: d for i, d in members}
    honest = pq.read_table(io.BytesIO(data["index/docs.parquet"]))
    n = 600_000
    bomb = pa.table({name: pa.repeat(honest[name][0], n) for name in honest.column_names}, schema=honest.schema)
    blob = io.BytesIO()
    pq.write_table(bomb, blob, compression="zstd", use_dictionary=True)
    assert len(blob.getvalue()) < 1 << 20  # under a megabyte that decodes to hundreds of megabytes of Python objects
    forged = _write(tmp_path / "bomb.tar", _resum([(i, blob.getvalue() if i.name == "index/docs.parquet" else d) for i, d in members]))

    _refused(target(), forged, PackageError, r"'index/docs\.parquet' has 600000 rows, its manifest says \d+")


def test_a_row_part_with_more_rows_than_the_manifest_is_refused_before_it_is_decoded(
    made: dict[str, Path], target: Callable[..., KbRelease], tmp_path: Path
) -> None:
    members = _members(made["plain"])
    name = next(i.name for i, _ in members if i.name.startswith("collections/docs/"))
    part = pq.read_table(io.BytesIO(dict((i.name, d) for i, d in members)[name]))
    big = pa.concat_tables([part] * 500)  # repeated rows: small once compressed
    blob = _parquet(big)
    forged = _write(tmp_path / "bomb.tar", _resum([(i, blob if i.name == name else d) for i, d in members]))

    _refused(target(), forged, PackageError, rf"'{name}' brings collection 'docs' to \d+ rows, the manifest says \d+")


# --- attack 6: signatures ---------------------------------------------------------------------


def test_a_signed_package_imports_where_its_key_is_trusted(made: dict[str, Path], target: Callable[..., KbRelease]) -> None:
    prod = target(env={"KBRELEASE_TRUSTED_KEYS": f"{made['pub_b']}:{made['pub_a']}"})

    info = prod.package_import(made["a"])

    assert (info.state, info.signed, info.signer_trusted) == ("verified", True, True)
    assert info.signer is not None and info.signer.startswith("ed25519:")
    assert prod.release("v1").origin["signer"] == info.signer  # type: ignore[index]
    assert f"signed by {info.signer} (trusted)" in str(info)


def test_trusted_keys_per_environment_from_the_config_file(made: dict[str, Path], target: Callable[..., KbRelease]) -> None:
    extra = f"environments:\n  prod:\n    trusted_keys: [{made['pub_a']}]\npackages:\n  trusted_keys: [{made['pub_b']}]\n"
    prod = target(extra=extra)
    assert prod.cfg.trusted_keys == [made["pub_a"]]
    _refused(prod, made["b"], SignatureError, r"signed by key ed25519:\w+, which environment 'prod' does not trust")
    assert prod.package_import(made["a"]).signer_trusted


def test_an_unsigned_package_is_refused_where_keys_are_trusted(made: dict[str, Path], target: Callable[..., KbRelease]) -> None:
    prod = target(env={"KBRELEASE_TRUSTED_KEYS": str(made["pub_a"])})
    _refused(prod, made["plain"], SignatureError, r"is not signed, and environment 'prod' imports only packages signed by a trusted key \(ed25519:\w+.*--sign")


def test_a_package_signed_by_an_untrusted_key_is_refused_naming_the_key(made: dict[str, Path], target: Callable[..., KbRelease]) -> None:
    prod = target(env={"KBRELEASE_TRUSTED_KEYS": str(made["pub_a"])})
    error = _refused(prod, made["b"], SignatureError, r"signed by key ed25519:\w+, which environment 'prod' does not trust")
    assert "packages.trusted_keys" in str(error)


def test_without_trusted_keys_a_signed_package_says_who_signed_it(made: dict[str, Path], target: Callable[..., KbRelease]) -> None:
    info = target().package_import(made["b"])
    assert (info.signed, info.signer_trusted) == (True, False)
    assert info.signer and info.signer in str(info)


def _with_signature(members: Members, signature: bytes) -> Members:
    return [(i, signature if i.name == "SIGNATURE" else d) for i, d in members]


def _modified_after_signing(members: Members) -> Members:
    """A member changed, SHA256SUMS made again (consistent), the old signature kept."""
    out = []
    for info, data in members:
        if info.name == "RELEASE_INFO.txt":
            data = data + b"\nnothing to see here\n"
        out.append((info, data))
    sig = next(d for i, d in out if i.name == "SIGNATURE")
    return [*_resum([(i, d) for i, d in out if i.name != "SIGNATURE"]), (_entry("SIGNATURE"), sig)]


def _flip_signature(members: Members) -> Members:
    import base64

    doc = json.loads(next(d for i, d in members if i.name == "SIGNATURE"))
    raw = bytearray(base64.b64decode(doc["signature"]))
    raw[10] ^= 0x01
    doc["signature"] = base64.b64encode(bytes(raw)).decode()
    return _with_signature(members, json.dumps(doc).encode())


def _key_swapped(members: Members, pub_a: Path) -> Members:
    """Key B's signature, relabelled as trusted key A's (public key and fingerprint replaced)."""
    from cryptography.hazmat.primitives import serialization

    from kbrelease.trust.signing import fingerprint_of, load_public_key

    key = load_public_key(pub_a)
    sig = json.loads(next(d for i, d in members if i.name == "SIGNATURE"))
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    import base64

    sig.update(public_key=base64.b64encode(raw).decode(), key=fingerprint_of(key))
    return _with_signature(members, json.dumps(sig).encode())


SIGNED: dict[str, tuple[str, Callable[[Members, dict[str, Path]], Members], str]] = {
    "member modified after signing": ("a", lambda m, k: _modified_after_signing(m), r"SHA256SUMS changed after signing"),
    "member modified, SHA256SUMS kept": ("a", lambda m, k: [*_modified_after_signing(m)[:-2], m[-2], m[-1]], r"checksum mismatch for 'RELEASE_INFO\.txt'"),
    "truncated signature": ("a", lambda m, k: _with_signature(m, next(d for i, d in m if i.name == "SIGNATURE")[:90]), r"signature is damaged or truncated"),
    "empty signature": ("a", lambda m, k: _with_signature(m, b""), r"signature is damaged or truncated"),
    "oversized signature": ("a", lambda m, k: _with_signature(m, b" " * 100_000), r"over the 4096 byte limit|damaged"),
    "untrusted signature relabelled as the trusted key": ("b", lambda m, k: _key_swapped(m, k["pub_a"]), r"signature by ed25519:\w+ is invalid"),
    "signature bytes flipped": ("a", lambda m, k: _flip_signature(m), r"signature by ed25519:\w+ is invalid"),
}


@pytest.mark.parametrize("case", list(SIGNED))
def test_a_bad_signature_is_refused(case: str, made: dict[str, Path], target: Callable[..., KbRelease], tmp_path: Path) -> None:
    which, change, match = SIGNED[case]
    bad = _write(tmp_path / "bad.tar", change(_members(made[which]), made))
    for env in ({"KBRELEASE_TRUSTED_KEYS": str(made["pub_a"])}, {}):  # refused whether or not keys are trusted: the package was altered
        _refused(target(env=env), bad, PackageError, match)


def test_keygen_and_an_untrusted_import_on_the_command_line(made: dict[str, Path], tmp_path: Path, corpus: Path, lite_server: str) -> None:
    from kbrelease.cli import app

    runner = CliRunner()
    keygen = runner.invoke(app, ["package", "keygen", str(tmp_path / "k" / "release"), "--json"])
    assert keygen.exit_code == 0, keygen.output
    keys = json.loads(keygen.stdout)
    assert os.stat(keys["private_key"]).st_mode & 0o077 == 0
    again = runner.invoke(app, ["package", "keygen", str(tmp_path / "k" / "release")])
    assert again.exit_code == 2 and "already exists" in again.output
    config = write_config(tmp_path, corpus, f"packages:\n  trusted_keys: [{keys['public_key']}]\n")
    env = {"MILVUS_URI": lite_server, "MILVUS_DB_PREFIX": "hcli_"}
    refused = runner.invoke(app, ["-c", str(config), "package", "import", str(made["a"])], env=env)
    assert refused.exit_code == 4 and "does not trust" in refused.output and "packages.trusted_keys" in refused.output


# --- attack 1 at read time: a forged index already in the workspace ------------------------------


def _plant_bundle(cfg: Any, name: str, channel: str, records: list[FileRecord]) -> None:
    """A resolved bundle whose index names ``channel`` (written as an older kbrelease, or a hand, would)."""
    from kbrelease.workspace import Workspace

    folder = Workspace.of(cfg).bundle_dir(name) / "v1"
    write_source_index(folder / "docs.parquet", records)
    write_bundle(folder, [summarize_source(channel, "text", "docs", "", "", "docs.parquet", records)], name=name)


def _passwd_record(relative_path: str = "etc/passwd", file_id: str = "passwd") -> FileRecord:
    from datetime import UTC, datetime

    data = Path("/etc/passwd").read_bytes()
    return FileRecord(file_id, relative_path, datetime.now(UTC), len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(
    ("channel", "relative_path", "status"),
    [("../../../../..", "etc/passwd", 400), ("docs", "../../../../../../etc/passwd", 400), ("docs", "/etc/passwd", 400)],
)
def test_download_never_leaves_the_mirror(tmp_path: Path, channel: str, relative_path: str, status: int) -> None:
    cfg = make_workspace(tmp_path)
    _plant_bundle(cfg, "evil", channel, [_passwd_record(relative_path)])
    with UvicornServer(data_app(cfg)) as server, httpx.Client(base_url=server.url) as client:
        answer = client.post("/api/v1/bundles/evil/download", json={"file_ids": ["passwd"]})
        probe = client.post("/api/v1/bundles/evil/download", json={"file_ids": ["passwd"]})
    assert answer.status_code == status, answer.text
    assert b"root:" not in answer.content
    assert answer.json() == probe.json()  # nothing that differs with what exists outside


def test_download_refuses_a_link_out_of_the_mirror(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path)
    mirror = cfg.workspace / "mirror" / "docs"
    (mirror / "innocent.md").symlink_to("/etc/passwd")
    _plant_bundle(cfg, "linked", "docs", [_passwd_record("innocent.md")])
    with UvicornServer(data_app(cfg)) as server, httpx.Client(base_url=server.url) as client:
        answer = client.post("/api/v1/bundles/linked/download", json={"file_ids": ["passwd"]})
    assert answer.status_code == 400 and "leads outside" in answer.json()["error"]["message"]
    assert b"root:" not in answer.content


# --- attack 3: thumbnails (ReleaseFiles) of a forged index -------------------------------------


def _release_with_index(cfg: Any, records: list[FileRecord], name: str = "v9") -> Any:
    from kbrelease.release.registry import ReleaseRecord, SourceCounts
    from kbrelease.workspace import Workspace

    folder = Workspace.of(cfg).release_dir(name) / "index"
    write_source_index(folder / "pictures.parquet", records)
    write_bundle(folder, [summarize_source("pictures", "image", "pictures", "", "", "pictures.parquet", records)])
    return ReleaseRecord(name, "default", f"kb_{name}", "verified", sources={"pictures": SourceCounts("pictures", "image")})


@pytest.mark.parametrize("path", ["/etc/hostname", "/dev/zero", "../../../../etc/hostname"])
def test_thumbnails_of_a_forged_index_are_refused_without_touching_the_file(tmp_path: Path, path: str) -> None:
    from datetime import UTC, datetime

    from kbrelease.release.files import ReleaseFiles

    cfg = make_workspace(tmp_path)
    files = ReleaseFiles(cfg.workspace)
    errors = []
    for name, rel in (("v8", path), ("v9", path.replace("hostname", "no-such-file").replace("zero", "no-such-device"))):
        record = _release_with_index(cfg, [FileRecord("a1", rel, datetime.now(UTC), 10, "0" * 64)], name)
        with pytest.raises(DataIndexError, match=r"invalid: relative_path .* (is absolute|has a '\.\.' part)") as caught:
            files.get(record, "pictures", "a1")
        errors.append(str(caught.value).replace(rel, "PATH").replace(name, "NAME"))
    assert errors[0] == errors[1]  # the same answer whether the file exists: no oracle


def _in_thread(fn: Callable[[], Any], seconds: float) -> list[Any]:
    """``fn()`` in a daemon thread; returns [result or exception] or [] if it is still running after ``seconds``."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return out


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "link to /etc/hostname", "folder"])
def test_thumbnails_of_special_files_in_the_mirror_answer_at_once(tmp_path: Path, kind: str) -> None:
    from datetime import UTC, datetime

    from kbrelease.release.files import ReleaseFiles

    cfg = make_workspace(tmp_path)
    target = cfg.workspace / "mirror" / "pictures" / "cat-9.png"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(kind.removeprefix("link to "))
    record = _release_with_index(cfg, [FileRecord("c9", "cat-9.png", datetime.now(UTC), 4096, "0" * 64)])

    result = _in_thread(lambda: ReleaseFiles(cfg.workspace).get(record, "pictures", "c9"), 5.0)

    assert result, "the request is still reading the file"
    assert isinstance(result[0], FileChanged | DataIndexError), result[0]


def test_a_file_that_grew_is_not_hashed_past_its_recorded_size(tmp_path: Path) -> None:
    from kbrelease.release.files import bounded_sha256

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (1 << 20))
    assert bounded_sha256(big, 100) is None
    assert bounded_sha256(big, 1 << 20) == hashlib.sha256(b"x" * (1 << 20)).hexdigest()
    assert bounded_sha256(Path("/dev/zero"), 100) is None


# --- attacks 2 and 5: per-file content packages (cache export / import) ---------------------------------


@pytest.fixture
def published(project: KbRelease) -> KbRelease:
    project.publish()
    return project


def _forge_row(kb: KbRelease, file_id: str, file: str = "x.md") -> None:
    """A row whose file id is a path, as a release imported by an older kbrelease could hold."""
    record = kb.release(kb.registry.pointer().live or "")
    counts = record.sources["docs"]
    row = kb.store.client(record.database).query(counts.collection, filter="", output_fields=["*"], limit=1)[0]
    row.update(id=f"{file_id}:0", file_id=file_id, file=file)
    kb.store.upsert(record.database, counts.collection, [row])


def test_cache_export_never_writes_or_removes_outside_its_folder(published: KbRelease, tmp_path: Path) -> None:
    record = published.release(published.registry.pointer().live or "")
    _forge_row(published, "../../victim")
    checksum = published.store.client(record.database).query(record.sources["docs"].collection, filter="", output_fields=["checksum"], limit=1)[0]["checksum"]
    victim = tmp_path / "exports" / "victim" / checksum  # DIR/files/../../victim/<checksum>
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me", encoding="utf-8")
    out = tmp_path / "exports" / "DIR"

    info = published.cache_export(out)

    assert (victim / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert info.refused == 1 and "'../../victim'" in info.problems[0]
    assert info.files == sum(c.files for c in record.sources.values())


def test_cache_export_does_not_follow_a_planted_link_or_remove_a_foreign_folder(published: KbRelease, tmp_path: Path) -> None:
    out = tmp_path / "DIR"
    outside = tmp_path / "outside"
    outside.mkdir()
    (out).mkdir()
    (out / "files").symlink_to(outside)

    linked = published.cache_export(out)

    assert linked.files == 0 and linked.refused > 0 and "leads outside" in linked.problems[0]
    assert list(outside.iterdir()) == []

    (out / "files").unlink()
    first = published.cache_export(out)
    pkg = next((out / "files").glob("*/*"))
    (pkg / "notes-of-someone.txt").write_text("mine", encoding="utf-8")
    second = published.cache_export(out)
    assert (pkg / "notes-of-someone.txt").read_text(encoding="utf-8") == "mine"
    assert second.refused == 1 and "notes-of-someone.txt" in second.problems[0]
    assert second.files == first.files - 1


def _one_text_package(kb: KbRelease, out: Path, sign: Path | None = None) -> Path:
    kb.cache_export(out, files=["it/vpn-setup.md"], sign=sign)
    return next((out / "files").glob("*/*"))


def _poison(pkg: Path) -> None:
    """Replace every vector by its opposite and make SHA256SUMS consistent again (cache poisoning)."""
    table = pq.read_table(pkg / "chunks.parquet")
    flipped = pa.array([[-v for v in vec] for vec in table["vector"].to_pylist()], table.schema.field("vector").type)
    pq.write_table(table.set_column(table.schema.get_field_index("vector"), "vector", flipped), pkg / "chunks.parquet", compression="zstd")
    sums = "".join(f"{hashlib.sha256((pkg / m).read_bytes()).hexdigest()}  {m}\n" for m in ("metadata.json", "chunks.parquet"))
    (pkg / "SHA256SUMS").write_text(sums, encoding="utf-8")


def test_cache_import_refuses_poisoned_vectors(published: KbRelease, tmp_path: Path) -> None:
    pkg = _one_text_package(published, tmp_path / "packages")
    _poison(pkg)
    before = published.cache_stats().entries

    with pytest.raises(PackageError, match=r"it/vpn-setup\.md\): chunk \d+'s vector does not match the configured model's \(cosine -?[\d.]+ < 0\.99\)"):
        published.cache_import(tmp_path / "packages")

    assert published.cache_stats().entries == before


def test_cache_import_believes_a_trusted_signature_and_checks_everything_else(published: KbRelease, tmp_path: Path, made: dict[str, Path]) -> None:
    signed = _one_text_package(published, tmp_path / "signed", sign=made["key_a"])
    assert (signed / "SIGNATURE").is_file()
    published.cfg.packages.trusted_keys = [made["pub_a"]]

    info = published.cache_import(tmp_path / "signed")
    assert (info.files, info.signed, info.checked) == (1, 1, 0)

    _poison(signed)  # SHA256SUMS made again: the signature no longer covers it
    with pytest.raises(SignatureError, match=r"SHA256SUMS changed after signing"):
        published.cache_import(tmp_path / "signed")

    untrusted = _one_text_package(published, tmp_path / "by-b", sign=made["key_b"])
    info = published.cache_import(tmp_path / "by-b")
    assert (info.signed, info.checked) == (0, 1)  # not trusted: checked like an unsigned one
    assert untrusted.exists()


CONTENT: dict[str, tuple[Callable[[Path], None], type[KbReleaseError], str]] = {
    "SHA256SUMS naming ../../etc/passwd": (
        lambda p: (p / "SHA256SUMS").write_text(f"{hashlib.sha256(Path('/etc/passwd').read_bytes()).hexdigest()}  ../../etc/passwd\n", encoding="utf-8"),
        PackageError,
        r"SHA256SUMS line '.*\.\./\.\./etc/passwd' is not",
    ),
    "member is a link to /dev/zero": (
        lambda p: ((p / "chunks.parquet").unlink(), (p / "chunks.parquet").symlink_to("/dev/zero")),
        PackageError,
        r"chunks\.parquet is missing or not a regular file",
    ),
    "metadata naming another file id": (
        lambda p: _rewrite_meta(p, file_id="0" * 20),
        PackageError,
        r"its file_id and checksum differ from its folder's",
    ),
    "metadata with an absolute path": (lambda p: _rewrite_meta(p, relative_path="/etc/passwd"), PackageError, r"relative_path '/etc/passwd' is absolute"),
    "metadata with a hostile source": (lambda p: _rewrite_meta(p, source="../../x"), PackageError, r"source '\.\./\.\./x' is not a source name"),
    "chunk count that lies": (lambda p: _rewrite_meta(p, chunks=1), PackageError, r"has \d+ rows, its manifest says 1"),
}


def _rewrite_meta(pkg: Path, **change: Any) -> None:
    meta = json.loads((pkg / "metadata.json").read_text(encoding="utf-8")) | change
    (pkg / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    sums = "".join(f"{hashlib.sha256((pkg / m).read_bytes()).hexdigest()}  {m}\n" for m in ("metadata.json", "chunks.parquet"))
    (pkg / "SHA256SUMS").write_text(sums, encoding="utf-8")


@pytest.mark.parametrize("case", list(CONTENT))
def test_cache_import_refuses_hostile_content_packages(case: str, published: KbRelease, tmp_path: Path) -> None:
    change, error, match = CONTENT[case]
    pkg = _one_text_package(published, tmp_path / "packages")
    change(pkg)
    before = published.cache_stats().entries

    result = _in_thread(lambda: published.cache_import(tmp_path / "packages"), 30.0)

    assert result, "the import is still reading"
    assert isinstance(result[0], error) and __import__("re").search(match, str(result[0])), result[0]
    assert published.cache_stats().entries == before


def test_cache_import_refuses_a_package_folder_linked_from_outside(published: KbRelease, tmp_path: Path) -> None:
    real = _one_text_package(published, tmp_path / "elsewhere")
    folder = tmp_path / "packages" / "files" / real.parent.name
    folder.mkdir(parents=True)
    (folder / real.name).symlink_to(real)

    with pytest.raises(PackageError, match=r"leads outside"):
        published.cache_import(tmp_path / "packages")


def test_promote_streams_without_a_signature_into_an_environment_that_trusts_keys(
    published: KbRelease, made: dict[str, Path], target: Callable[..., KbRelease]
) -> None:
    """promote copies between two environments of one configuration: its stream is its own export, not a file from outside."""
    prod = target(env={"KBRELEASE_TRUSTED_KEYS": str(made["pub_a"])})
    live = published.registry.pointer().live or ""

    info = published.promote(live, prod, switch=True)

    assert (info.state, info.live, info.signed) == ("verified", live, False)
    package = prod.cfg.workspace.parent / "out.tar"
    published.package_export(live, package)
    with pytest.raises(SignatureError, match="is not signed"):  # the same release as a file from outside is refused
        prod.package_import(package, name="again")
