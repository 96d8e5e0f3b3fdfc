"""Signing and checking the digest document of docs/audit.md.

A signed document is the digest's JSON with one more key, `signature`:
  {"alg": "HMAC-SHA256", "value": <64 hex>}
  {"alg": "Ed25519", "value": <128 hex>, "public_key": <PEM of the signer's public key>}
  {"alg": "none"}                                   (no key was given)
The signature covers `ledger.domain.audit.digest.body_bytes(digest)`: the canonical JSON of
the digest without the signature, so re-indenting or re-ordering the file does not break it.
The embedded public key only helps a reader tell which key signed; it is never trusted:
`check` verifies against the key the caller gives.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.domain.audit.digest import Digest, DigestError, body_bytes

__all__ = ["ALG_ED25519", "ALG_HMAC", "ALG_NONE", "check", "sign", "signature_alg"]

ALG_HMAC = "HMAC-SHA256"
ALG_ED25519 = "Ed25519"
ALG_NONE = "none"
_HEX = frozenset("0123456789abcdef")


def _hmac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def _check_hmac_key(key: object) -> bytes:
    if not isinstance(key, bytes):
        raise DigestError(f"the HMAC key must be bytes, got {type(key).__name__}")
    if not key:
        raise DigestError("the HMAC key is empty")
    return key


def _private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError: the key is encrypted; the first line of the message says so.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DigestError(f"cannot read the Ed25519 private key: {reason}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DigestError(f"the private key is not an Ed25519 key ({type(key).__name__})")
    return key


def _public_key(pem: bytes | str, what: str) -> Ed25519PublicKey:
    if isinstance(pem, str):
        pem = pem.encode("utf-8", "replace")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DigestError(f"cannot read {what}: {reason}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise DigestError(f"{what} is not an Ed25519 key ({type(key).__name__})")
    return key


def _public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(
    digest: Digest,
    *,
    hmac_key: bytes | None = None,
    ed25519_private_pem: bytes | None = None,
) -> dict[str, Any]:
    """The digest as a JSON-ready document with its `signature`: HMAC-SHA256 with
    `hmac_key`, Ed25519 with the PEM private key (unencrypted PKCS#8), or alg "none" when
    neither is given. Giving both is a DigestError: one document has one signature."""
    if hmac_key is not None and ed25519_private_pem is not None:
        raise DigestError("give one signing key: an HMAC key or an Ed25519 private key")
    body = body_bytes(digest)
    signature: dict[str, str]
    if hmac_key is not None:
        signature = {"alg": ALG_HMAC, "value": _hmac(_check_hmac_key(hmac_key), body).hex()}
    elif ed25519_private_pem is not None:
        key = _private_key(ed25519_private_pem)
        signature = {
            "alg": ALG_ED25519,
            "value": key.sign(body).hex(),
            "public_key": _public_pem(key.public_key()),
        }
    else:
        signature = {"alg": ALG_NONE}
    return {**digest.to_json(), "signature": signature}


def signature_alg(document: Any) -> str:
    """The algorithm a document says it is signed with ("none" when unsigned), so that a
    caller can say which key it needs before calling `check`; not checked here."""
    if not isinstance(document, dict):
        raise DigestError(f"a digest document is a JSON object, got {type(document).__name__}")
    sig = document.get("signature")
    if sig is None:
        return ALG_NONE
    if not isinstance(sig, dict) or not isinstance(sig.get("alg"), str):
        raise DigestError("the digest's 'signature' must be an object with a string 'alg'")
    return str(sig["alg"])


def _hex_value(sig: dict[str, Any], nbytes: int, alg: str) -> bytes:
    value = sig.get("value")
    if not isinstance(value, str) or len(value) != 2 * nbytes or not set(value) <= _HEX:
        raise DigestError(
            f"the digest's {alg} signature value must be {2 * nbytes} lowercase hex digits"
        )
    return bytes.fromhex(value)


def check(
    document: Any,
    *,
    hmac_key: bytes | None = None,
    ed25519_public_pem: bytes | None = None,
) -> Digest:
    """The digest in a signed document, once its signature checks with the key given.

    DigestError (one line) when the document is malformed, when its signature does not
    match, when it is unsigned but a key is given, when it is signed with another algorithm
    than the key given, or when it is signed but no key is given (read it unchecked with
    `Digest.from_json` if that is really meant). An unsigned document with no key given is
    returned as is: the caller warns that nothing vouches for it. With both keys given, a
    document signed with either algorithm is checked with the matching key.
    """
    alg = signature_alg(document)
    digest = Digest.from_json(document)
    sig: dict[str, Any] = document.get("signature") or {"alg": ALG_NONE}
    allowed = {ALG_NONE: {"alg"}, ALG_HMAC: {"alg", "value"}}.get(
        alg, {"alg", "value", "public_key"}
    )
    if alg not in (ALG_NONE, ALG_HMAC, ALG_ED25519):
        raise DigestError(f"the digest is signed with an unknown algorithm {alg!r}")
    extra = sorted(str(k) for k in sig if k not in allowed)
    if extra:
        raise DigestError(f"the digest's signature has an unknown field {extra[0]!r}")
    given = [
        name
        for name, key in ((ALG_HMAC, hmac_key), (ALG_ED25519, ed25519_public_pem))
        if key is not None
    ]
    if alg == ALG_NONE:
        if given:
            raise DigestError(
                f"the digest is not signed, but a {' or '.join(given)} key was given to "
                "check it: refusing an unsigned digest"
            )
        return digest
    if alg not in given:
        if not given:
            raise DigestError(f"the digest is signed with {alg}, but no key was given to check it")
        raise DigestError(
            f"the digest is signed with {alg}, but the key given is for {' or '.join(given)}"
        )
    body = body_bytes(digest)
    if alg == ALG_HMAC:
        expected = _hmac(_check_hmac_key(hmac_key), body)
        if not hmac.compare_digest(expected, _hex_value(sig, 32, alg)):
            raise DigestError(
                "the digest's HMAC-SHA256 signature does not match: the digest was changed "
                "after signing, or the key is not the one it was signed with"
            )
        return digest
    assert ed25519_public_pem is not None  # `alg in given` above
    public = _public_key(ed25519_public_pem, "the Ed25519 public key")
    value = _hex_value(sig, 64, alg)
    try:
        public.verify(value, body)
    except InvalidSignature:
        raise DigestError(_ed25519_mismatch(sig, public)) from None
    return digest


def _ed25519_mismatch(sig: dict[str, Any], public: Ed25519PublicKey) -> str:
    # The embedded key is only a hint for the message: it tells "another key signed this"
    # from "this was changed after signing". Either way the document is refused.
    embedded = sig.get("public_key")
    if isinstance(embedded, str):
        try:
            other = _public_key(embedded, "the digest's embedded public key")
        except DigestError:
            other = None
        if other is not None and _raw(other) != _raw(public):
            return (
                "the digest's Ed25519 signature does not match: it was signed by another "
                "key than the public key given"
            )
    return (
        "the digest's Ed25519 signature does not match the public key given: the digest "
        "was changed after signing, or another key signed it"
    )
