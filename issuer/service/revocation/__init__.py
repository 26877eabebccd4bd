"""Revocation: revoking certificates, and the lists the authorizer and TLS servers read (CRLs, JSON)."""
