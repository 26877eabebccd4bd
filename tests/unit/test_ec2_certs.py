"""The pinned AWS certificate store: shipped package data and the operator's extras."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from issuer.attest.ec2_certs import FORMS, AwsCertStore, load_extra_certs
from issuer.errors import ConfigError
from tests.support.fake_aws_iid import FakeAwsSigner


@pytest.fixture(scope="module")
def store() -> AwsCertStore:
    return AwsCertStore.builtin()


@pytest.fixture(scope="module")
def fake() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa1024")


def test_every_form_ships_the_commercial_regions(store: AwsCertStore) -> None:
    for form in FORMS:
        regions = store.regions(form)
        assert {"us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2", "us-gov-west-1"} <= regions
        assert len(regions) >= 36


@pytest.mark.parametrize(
    ("form", "serial", "key_type", "bits"),
    [
        ("rsa2048", 0xB64BDE5AD00924CC, rsa.RSAPublicKey, 2048),
        ("pkcs7", 0x96BA48D9E55E1A67, dsa.DSAPublicKey, 1024),
        ("signature", 0x171F0FC4291B1F0A43DF56CEC82B72CF719C95B8, rsa.RSAPublicKey, 1024),
    ],
)
def test_us_west_2_certificate_per_form(store: AwsCertStore, form: str, serial: int, key_type: type, bits: int) -> None:
    (cert,) = store.for_region("us-west-2", form)  # type: ignore[arg-type]
    assert cert.serial_number == serial
    key = cert.public_key()
    assert isinstance(key, key_type)
    assert key.key_size == bits  # type: ignore[attr-defined]


def test_nineteen_regions_share_one_dsa_certificate(store: AwsCertStore) -> None:
    shared = [r for r in store.regions("pkcs7") if store.for_region(r, "pkcs7")[0].serial_number == 0x96BA48D9E55E1A67]
    assert len(shared) == 19


def test_china_pkcs7_certificates_are_rsa(store: AwsCertStore) -> None:
    for region in ("cn-north-1", "cn-northwest-1"):
        (cert,) = store.for_region(region, "pkcs7")
        assert isinstance(cert.public_key(), rsa.RSAPublicKey)


def test_unknown_region_or_missing_form_has_no_certificate(store: AwsCertStore) -> None:
    assert store.for_region("xx-nowhere-1", "rsa2048") == ()
    # AWS publishes no DSA certificate for the newest regions.
    assert store.for_region("ap-east-2", "pkcs7") == ()
    assert store.for_region("ap-east-2", "rsa2048") != ()


def test_unknown_form_is_a_programming_error(store: AwsCertStore) -> None:
    with pytest.raises(ValueError, match="unknown signature form"):
        store.for_region("us-east-1", "rsa4096")  # type: ignore[arg-type]


def test_extra_certs_follow_the_shipped_ones_for_every_form(fake: FakeAwsSigner) -> None:
    store = AwsCertStore.builtin(extra={"us-east-1": [fake.cert], "xx-new-1": [fake.cert]})
    for form in FORMS:
        certs = store.for_region("us-east-1", form)
        assert len(certs) == 2
        assert certs[-1] == fake.cert
        assert store.for_region("xx-new-1", form) == (fake.cert,)
        assert "xx-new-1" in store.regions(form)
    assert AwsCertStore.builtin().for_region("xx-new-1", "rsa2048") == ()


def test_extra_certs_with_a_malformed_region_name_are_refused(fake: FakeAwsSigner) -> None:
    with pytest.raises(ConfigError, match="us_east_1"):
        AwsCertStore.builtin(extra={"us_east_1": [fake.cert]})


def test_load_extra_certs_reads_every_certificate_of_every_file(tmp_path: Path, fake: FakeAwsSigner) -> None:
    other = FakeAwsSigner.create(kind="rsa1024")
    one = tmp_path / "one.pem"
    two = tmp_path / "two.pem"
    one.write_bytes(fake.cert.public_bytes(Encoding.PEM))
    two.write_bytes(other.cert.public_bytes(Encoding.PEM) + fake.cert.public_bytes(Encoding.PEM))

    loaded = load_extra_certs({"eu-west-1": [one, two], "us-east-1": []})

    assert loaded == {"eu-west-1": [fake.cert, other.cert, fake.cert], "us-east-1": []}


def test_load_extra_certs_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as err:
        load_extra_certs({"eu-west-1": [missing]})
    assert str(missing) in err.value.detail
    assert "eu-west-1" in err.value.detail


def test_load_extra_certs_names_a_file_that_is_not_pem(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"junk\.pem is not a PEM certificate"):
        load_extra_certs({"eu-west-1": [junk]})
