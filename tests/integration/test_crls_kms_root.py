"""A root whose key is in AWS KMS keeps its CRL current like a file root: signed through KMS (moto's KMS
server), verified by openssl with the rest of GET /v1/crls (issue 20 §2, §5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509

from tests.integration.test_crls_bundle import by_issuer, get_crls
from tests.integration.test_kms_issuer import NO_PASSPHRASE, issue_token, kms_env, kms_moto, make_kms_ca
from tests.integration.test_revocation import truststore
from tests.support.harness import running_issuer
from tests.support.x509_check import openssl_verify_crl_check_all

__all__ = ["kms_env", "kms_moto"]  # fixtures, imported for pytest


async def test_a_kms_root_signs_its_crl_through_kms(tmp_path: Path, pg_url: str, kms_env: Any) -> None:
    ca = await make_kms_ca(tmp_path, pg_url, root_in_kms=True)
    assert ca.root_key_ref.startswith("kms:")
    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE) as h:
        leaf = await issue_token(h, "kms-root")
        crls, body, _ = await get_crls(h)
        root_crl = by_issuer(crls)[ca.root.subject.rfc4514_string()]
        assert root_crl.is_signature_valid(ca.root.public_key())  # type: ignore[arg-type]
        assert isinstance(root_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number, int)
        passed, output = openssl_verify_crl_check_all(leaf["certificate"].encode(), await truststore(h), body)
        assert passed, output
