"""The use cases, a room per concern; each owns its transactions and none speaks HTTP.

- :mod:`.issuance`: the one issuance pipeline and the attestation methods' steps;
- :mod:`.ca`: the issuer registry every replica reads, CA set-up, rotation, roots, status, signers, publishing;
- :mod:`.revocation`: revoking certificates and the published revocation lists;
- :mod:`.admin`: the operator's use cases behind the CLI.
"""
