"""Ed25519 signatures of packages: who made a package, not only that it is whole.

``SHA256SUMS`` proves a package is what its maker wrote; anyone can write a new
one. A signature proves the maker held a private key: the package's
``SHA256SUMS`` (which covers the manifest and every member) is hashed and the
digest, behind a fixed context string, is signed with Ed25519. The signature is
stored as a small JSON document (``SIGNATURE`` in a release package, the same
file name in a per-file content package) holding the algorithm, the signer's
public key and fingerprint, the signed digest and the signature.

An environment trusts the public keys listed in ``packages.trusted_keys``
(``KBRELEASE_TRUSTED_KEYS``); when it lists any, only packages signed by one of
them are imported. A fingerprint is ``ed25519:`` and the first 32 hex digits
of the sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbrelease.errors import ConfigError, SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FORMAT = "kbrelease-signature-1"
ALGORITHM = "ed25519"
CONTEXT = b"kbrelease signed SHA256SUMS v1\n"
"""Signed bytes are ``CONTEXT + sha256(SHA256SUMS)``: a signature cannot be replayed as one over something else."""
MAX_SIGNATURE_BYTES = 4096


def fingerprint_of(public_key: Ed25519PublicKey) -> str:
    """``ed25519:<32 hex digits>`` of a public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{ALGORITHM}:{hashlib.sha256(raw).hexdigest()[:32]}"


def payload(sums: bytes) -> bytes:
    """What is signed for a package whose ``SHA256SUMS`` is ``sums``."""
    return CONTEXT + hashlib.sha256(sums).hexdigest().encode()


@dataclass(frozen=True)
class Signature:
    """A parsed ``SIGNATURE`` document."""

    fingerprint: str
    public_key: bytes
    digest: str
    signature: bytes

    def to_bytes(self) -> bytes:
        doc = {
            "format": SIGNATURE_FORMAT,
            "algorithm": ALGORITHM,
            "key": self.fingerprint,
            "public_key": base64.b64encode(self.public_key).decode(),
            "signed": f"sha256:{self.digest}",
            "signature": base64.b64encode(self.signature).decode(),
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, where: str) -> Signature:
        """A signature document, or :class:`SignatureError` saying it is damaged."""
        bad = f"{where}: the signature is damaged or truncated"
        fix = "; export and sign the package again"
        if len(data) > MAX_SIGNATURE_BYTES:
            raise SignatureError(f"{bad} (over {MAX_SIGNATURE_BYTES} bytes){fix}")
        try:
            doc = json.loads(data)
        except ValueError:
            raise SignatureError(f"{bad} (not JSON){fix}") from None
        if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT or doc.get("algorithm") != ALGORITHM:
            raise SignatureError(f"{bad} (not a {SIGNATURE_FORMAT} {ALGORITHM} signature){fix}")
        try:
            public = base64.b64decode(str(doc["public_key"]), validate=True)
            sig = base64.b64decode(str(doc["signature"]), validate=True)
            signed = str(doc["signed"])
            key = str(doc["key"])
        except (KeyError, binascii.Error, ValueError):
            raise SignatureError(f"{bad} (fields missing or not base64){fix}") from None
        if len(public) != 32 or len(sig) != 64 or not signed.startswith("sha256:") or len(signed) != 71:
            raise SignatureError(f"{bad} (key {len(public)} bytes, signature {len(sig)} bytes; Ed25519 has 32 and 64){fix}")
        return cls(key, public, signed.removeprefix("sha256:"), sig)

    def key(self) -> Ed25519PublicKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return Ed25519PublicKey.from_public_bytes(self.public_key)


@dataclass(frozen=True)
class Verdict:
    """What a signature check found: whether a valid signature is there, whose, and whether it is trusted."""

    signed: bool = False
    signer: str | None = None
    trusted: bool = False

    def asdict(self) -> dict[str, Any]:
        return {"signed": self.signed, "signer": self.signer, "signer_trusted": self.trusted}


class SigningKey:
    """A private key, loaded from a PEM file (``kbrelease package keygen`` writes one)."""

    def __init__(self, key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = key
        self.path = path
        self.fingerprint = fingerprint_of(key.public_key())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"signing key {path} cannot be read ({exc.strerror}); give the PEM file `kbrelease package keygen` wrote") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"signing key {path} is not an unencrypted PEM private key ({exc}); create one with `kbrelease package keygen`") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {path} is a {type(key).__name__}; packages are signed with Ed25519 keys (`kbrelease package keygen`)")
        return cls(key, path)

    def sign(self, sums: bytes) -> Signature:
        """The signature of a package whose ``SHA256SUMS`` is ``sums``."""
        from cryptography.hazmat.primitives import serialization

        public = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Signature(self.fingerprint, public, hashlib.sha256(sums).hexdigest(), self._key.sign(payload(sums)))


def generate_keypair(out: Path, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new private key to ``out`` (PEM, mode 0600) and its public key to ``out.pub``; returns both paths and the fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = out.with_name(out.name + ".pub")
    for path in (out, pub):
        if path.exists() and not force:
            raise ConfigError(f"{path} already exists; choose another name or remove it (a key is never overwritten silently)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    out.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(out, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    os.chmod(out, 0o600)
    pub.write_bytes(public)
    return out, pub, fingerprint_of(key.public_key())


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A trusted public key from a PEM file (``<key>.pub`` of keygen); a private key file is accepted too."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"trusted key {path} cannot be read ({exc.strerror}); fix packages.trusted_keys / KBRELEASE_TRUSTED_KEYS") from None
    try:
        key: Any = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise ConfigError(
                f"trusted key {path} is not a PEM public key; give the .pub file `kbrelease package keygen` wrote (packages.trusted_keys)"
            ) from None
    if isinstance(key, Ed25519PrivateKey):  # pragma: no cover - public_key() above already returns the public half
        key = key.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"trusted key {path} is a {type(key).__name__}; packages are signed with Ed25519 keys")
    return key


def load_trusted_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """``fingerprint -> key`` of every trusted key file."""
    return {fingerprint_of(key): key for key in (load_public_key(Path(p)) for p in paths)}


def check_signature(
    data: bytes | None,
    sums: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    where: str,
    environment: str,
    fix: str = "sign it with `kbrelease package export --sign KEY` using a key whose .pub file is listed there",
) -> Verdict:
    """Check a package's signature document ``data`` (None: unsigned) over its ``SHA256SUMS`` bytes.

    A damaged signature, or one that does not match this package, is always
    refused (the package was changed after signing). With ``trusted`` keys, an
    unsigned package, or one signed by any other key, is refused too.
    """
    from cryptography.exceptions import InvalidSignature

    known = ", ".join(sorted(trusted)) or "none"
    if data is None:
        if trusted:
            raise SignatureError(
                f"{where} is not signed, and environment {environment!r} imports only packages signed by a trusted key ({known}; "
                f"packages.trusted_keys / KBRELEASE_TRUSTED_KEYS); {fix}"
            )
        return Verdict()
    sig = Signature.parse(data, where)
    key = sig.key()
    actual = fingerprint_of(key)
    if actual != sig.fingerprint:
        raise SignatureError(f"{where}: the signature names key {sig.fingerprint} but holds key {actual}; the signature was altered — sign the package again")
    if sig.digest != hashlib.sha256(sums).hexdigest():
        raise SignatureError(
            f"{where}: the signature by {actual} is over other contents (SHA256SUMS changed after signing); the package was modified — export and sign it again"
        )
    try:
        key.verify(sig.signature, payload(sums))
    except InvalidSignature:
        raise SignatureError(f"{where}: the signature by {actual} is invalid; the package or its signature was modified — export and sign it again") from None
    if trusted and actual not in trusted:
        raise SignatureError(
            f"{where} is signed by key {actual}, which environment {environment!r} does not trust (trusted: {known}); "
            f"add that key's .pub file to packages.trusted_keys (or KBRELEASE_TRUSTED_KEYS) if you trust it, or {fix}"
        )
    return Verdict(True, actual, actual in trusted)
