"""Signing a leaf for a template and a bare public key, as tests of the signers do (no CSR at hand)."""

from __future__ import annotations

from typing import Any

from cryptography import x509

from ca.profile import LeafTemplate
from ca.signer import Signer, SigningRequest


async def sign(signer: Signer, template: LeafTemplate, public_key: Any) -> x509.Certificate:
    """``signer.issue`` for ``template`` and ``public_key``; the certificate alone."""
    return (await signer.issue(SigningRequest(template=template, public_key=public_key))).certificate
