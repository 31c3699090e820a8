"""Keys in a PKCS#11 token (SoftHSM2, a real one of the test's own): made inside it, never readable from it, signing
images and catalogs that verify as file-signed ones do, and every way of naming one wrongly refused in words."""

from __future__ import annotations

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from pkcs11.util.ec import encode_named_curve_parameters

from firmware_catalog.catalog import load_catalog
from firmware_catalog.catalog_source import build_catalog
from firmware_catalog.errors import KeyFileError
from firmware_catalog.image import build_signed_image, parse_image
from firmware_catalog.key_reference import make_key_in_token, open_signer
from firmware_catalog.keys import fingerprint, verify_raw
from firmware_catalog.pkcs11_token import TokenSigner
from firmware_catalog.pkcs11_uri import PIN_ENV, Pkcs11Uri
from firmware_catalog.signature_scope import DEFAULT_SCOPE
from tests.firmware_catalog.conftest import NOW, World
from tests.softhsm import MODULE, SoftHsm


@pytest.fixture
def token(softhsm: SoftHsm) -> SoftHsm:
    softhsm.init_token("reflash")
    return softhsm


def test_a_key_made_in_the_token_signs_raw_r_s_that_verify(token: SoftHsm) -> None:
    public = make_key_in_token(token.uri("reflash", "authority"), "--pkcs11")
    signer = open_signer(token.uri("reflash", "authority"), "--key")
    assert fingerprint(signer.public_key()) == fingerprint(public)
    signature = signer.sign(b"catalog bytes")
    assert len(signature) == 64
    assert verify_raw(public, b"catalog bytes", signature)
    assert not verify_raw(public, b"other bytes", signature)


def test_the_private_key_cannot_be_read_from_the_token(token: SoftHsm) -> None:
    make_key_in_token(token.uri("reflash", "authority"), "--pkcs11")
    with token.session("reflash") as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="authority")
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(AttributeSensitive):
            key[Attribute.VALUE]  # the token refuses the private scalar itself


def test_keygen_never_replaces_a_key_in_the_token(token: SoftHsm) -> None:
    make_key_in_token(token.uri("reflash", "authority"), "--pkcs11")
    with pytest.raises(KeyFileError, match=r"^--pkcs11: token 'reflash' already holds a key for object 'authority'"):
        make_key_in_token(token.uri("reflash", "authority"), "--pkcs11")


def test_an_image_and_a_catalog_signed_in_the_token_verify(token: SoftHsm, world: World) -> None:
    authority_public = make_key_in_token(token.uri("reflash", "authority"), "--pkcs11")
    maker_public = make_key_in_token(token.uri("reflash", "maker"), "--pkcs11")
    image = build_signed_image(
        open_signer(token.uri("reflash", "maker"), "--key"),
        manufacturer=0x121D, image_type=0, file_version=0x01020000, min_hardware_version=0x1111,
        max_hardware_version=0x1211, manufacturer_image=b"firmware" * 100,
    )  # fmt: skip
    assert parse_image(image).verify(maker_public, DEFAULT_SCOPE)
    world.image(version="01020000")
    build_catalog(world.write_source(), open_signer(token.uri("reflash", "authority"), "--key"), world.root / "c", NOW)
    assert load_catalog(world.root / "c", authority_public, NOW).serial == world.serial


def test_the_pin_comes_from_the_environment_when_no_pin_source_is_given(
    token: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_key_in_token(token.uri("reflash", "station"), "--pkcs11")
    uri = f"pkcs11:token=reflash;object=station?module-path={MODULE}"
    monkeypatch.delenv(PIN_ENV, raising=False)
    with pytest.raises(KeyFileError, match=rf"^\[station\] key: no PIN: .*\${PIN_ENV}"):
        open_signer(uri, "[station] key")
    monkeypatch.setenv(PIN_ENV, token.pin_file.read_text().strip())
    assert len(open_signer(uri, "[station] key").sign(b"x")) == 64
    monkeypatch.setenv("STATION_PIN", token.pin_file.read_text().strip())
    assert len(open_signer(uri + "&pin-source=env:STATION_PIN", "[station] key").sign(b"x")) == 64


def test_a_key_not_allowed_to_sign_is_refused(token: SoftHsm) -> None:
    with token.session("reflash") as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        params.generate_keypair(store=True, label="derive-only", private_template={Attribute.SIGN: False})
    with pytest.raises(KeyFileError, match=r"object 'derive-only' in token 'reflash' is not allowed to sign"):
        open_signer(token.uri("reflash", "derive-only"), "--key")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-pin", r"^--key: wrong PIN for token 'reflash'$"),
        ("missing-token", r"^--key: token 'elsewhere' not found in PKCS#11 module "),
        ("missing-object", r"^--key: token 'reflash' holds no EC public key for object 'nobody'$"),
        ("missing-module", r"^--key: PKCS#11 module /nowhere/libpkcs11\.so not found$"),
        ("unreadable-pin-file", r"^--key: pin-source=file:.*/absent: cannot read the PIN file"),
    ],
)
def test_a_key_that_cannot_be_had_is_refused_in_words(token: SoftHsm, case: str, expected: str) -> None:
    make_key_in_token(token.uri("reflash", "authority"), "--pkcs11")
    wrong_pin = token.root / "wrong-pin"
    wrong_pin.write_text("0000\n")
    uri = {
        "wrong-pin": token.uri("reflash", "authority", wrong_pin),
        "missing-token": token.uri("elsewhere", "authority"),
        "missing-object": token.uri("reflash", "nobody"),
        "missing-module": token.uri("reflash", "authority").replace(MODULE, "/nowhere/libpkcs11.so"),
        "unreadable-pin-file": token.uri("reflash", "authority", token.root / "absent"),
    }[case]
    with pytest.raises(KeyFileError, match=expected):
        open_signer(uri, "--key")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pkcs11:token=t;object=k?pin-value=1234", "pin-value is refused: a PIN must never be on a command line"),
        ("pkcs11:token=t;object=k;pin-value=1234", "pin-value is refused"),
        ("pkcs11:tokn=t;object=k", "path attribute 'tokn' is not supported here"),
        ("pkcs11:object=k", "name the token: token=LABEL or serial=SERIAL"),
        ("pkcs11:token=t", "name the key: object=LABEL or id="),
        ("pkcs11:token=t;object=k;type=public", "type=public: the key that signs is a private key"),
        ("pkcs11:token=t;object=k;object=j", "path attribute 'object' is given twice"),
        ("pkcs11:token=t;object=k?module-name=softhsm2", "query attribute 'module-name' is not supported here"),
    ],
)
def test_a_uri_that_breaks_the_rules_is_refused_naming_the_option(uri: str, expected: str) -> None:
    with pytest.raises(KeyFileError, match=r"^--key: ") as raised:
        open_signer(uri, "--key")
    assert expected in str(raised.value)
    assert "1234" not in str(raised.value)  # a PIN given by mistake is not repeated back


def test_uri_values_are_percent_decoded() -> None:
    uri = Pkcs11Uri.parse("pkcs11:token=CSP%20authority;id=%01%02?module-path=/usr/lib/x.so&pin-source=file:/run/p")
    assert (uri.token, uri.id, uri.module_path, uri.pin_source) == (
        "CSP authority",
        b"\x01\x02",
        "/usr/lib/x.so",
        "file:/run/p",
    )


def test_two_signers_on_one_token_share_its_login(token: SoftHsm) -> None:
    make_key_in_token(token.uri("reflash", "old"), "--pkcs11")
    make_key_in_token(token.uri("reflash", "new"), "--pkcs11")
    old = TokenSigner(Pkcs11Uri.parse(token.uri("reflash", "old")))
    new = TokenSigner(Pkcs11Uri.parse(token.uri("reflash", "new")))
    assert verify_raw(old.public_key(), b"m", old.sign(b"m"))
    assert verify_raw(new.public_key(), b"m", new.sign(b"m"))
    old.close()
    assert verify_raw(new.public_key(), b"m", new.sign(b"m"))
    new.close()
    assert pkcs11.lib(MODULE).get_token(token_label="reflash").label == "reflash"
