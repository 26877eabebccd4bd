"""Attestation: turn a machine's proof into a :class:`VerifiedIdentity`.

One module per method (``token``, ``ec2``, ``sts``, ``x509pop``), and the compact-JWS
proofs of possession renewal and x509pop share (``jws``). Verification is pure: bytes,
values and ``now`` in, a value out or an :class:`issuer.errors.IssuerError` raised.
The only outbound I/O (the STS call and EC2 ``DescribeInstances``) sits behind small
injectable protocols.
"""

from __future__ import annotations

from issuer.attest.identity import VerifiedIdentity

__all__ = ["VerifiedIdentity"]
