"""A small private CA: CSR checks, the certificate profiles, signer backends and CRLs.

Pure where it can be: every function takes values and ``now`` and returns values
or raises a :class:`CAError`; only ``ca.files`` touches the disk, and only the
``ca.kms*`` modules call AWS KMS and the ``ca.pca*`` modules AWS Private CA, through a client
they are given. Importing this
package needs the server extra (botocore, asn1crypto); ``clients`` never imports it.
Nothing here imports the issuer service.
"""

from __future__ import annotations

from ca.crl import RevokedEntry, crl_builder, load_verified_crl
from ca.csr import CheckedCSR, parse_csr
from ca.errors import (
    CAError,
    CAKeyError,
    CAStateError,
    CSRError,
    KMSKeyError,
    SignerCapabilityMissing,
    SignerDenied,
    SignerResultRejected,
    SignerUnavailable,
)
from ca.files import (
    CAFiles,
    CAInfo,
    CertificateInfo,
    describe_ca,
    generate_passphrase,
    init_ca,
    load_local_signer,
)
from ca.hierarchy import CAHierarchy, CertifiedKey, create_hierarchy, create_issuing, create_root
from ca.issued_check import check_issued
from ca.keys import (
    DEFAULT_KEY_TYPES,
    KEY_TYPES,
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    key_type_of,
)
from ca.kms import KmsSigner, kms_botocore_config, load_kms_signer
from ca.kms_client import KmsClient, KmsKey, kms_public_key
from ca.kms_setup import KmsAdminClient, KmsCertifiedKey, create_issuing_for_kms_key, create_kms_key, create_kms_root
from ca.pca import PcaSigner, load_pca_signer
from ca.pca_client import PcaClient, pca_botocore_config
from ca.profile import LeafTemplate, issuing_builder, leaf_builder, root_builder
from ca.signer import IssuedCertificate, LocalFileSigner, Signer, SignerCapabilities, SignerHealth, SigningRequest

__all__ = [
    "DEFAULT_KEY_TYPES",
    "KEY_TYPES",
    "CAError",
    "CAFiles",
    "CAHierarchy",
    "CAInfo",
    "CAKeyError",
    "CAStateError",
    "CSRError",
    "CertificateInfo",
    "CertifiedKey",
    "CheckedCSR",
    "IssuedCertificate",
    "KMSKeyError",
    "KeyType",
    "KmsAdminClient",
    "KmsCertifiedKey",
    "KmsClient",
    "KmsKey",
    "KmsSigner",
    "LeafTemplate",
    "LocalFileSigner",
    "PcaClient",
    "PcaSigner",
    "PrivateKey",
    "PublicKey",
    "RevokedEntry",
    "Signer",
    "SignerCapabilities",
    "SignerCapabilityMissing",
    "SignerDenied",
    "SignerHealth",
    "SignerResultRejected",
    "SignerUnavailable",
    "SigningRequest",
    "check_issued",
    "create_hierarchy",
    "create_issuing",
    "create_issuing_for_kms_key",
    "create_kms_key",
    "create_kms_root",
    "create_root",
    "crl_builder",
    "describe_ca",
    "generate_passphrase",
    "generate_private_key",
    "init_ca",
    "issuing_builder",
    "key_type_of",
    "kms_botocore_config",
    "kms_public_key",
    "leaf_builder",
    "load_kms_signer",
    "load_local_signer",
    "load_pca_signer",
    "load_verified_crl",
    "parse_csr",
    "pca_botocore_config",
    "root_builder",
]
