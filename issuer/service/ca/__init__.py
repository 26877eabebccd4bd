"""The private CA as the service runs it.

The issuer registry, set-up (files, KMS), rotation, roots, status, signers, publishing.
"""
