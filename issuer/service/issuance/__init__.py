"""The one issuance pipeline and each attestation method's own steps."""
