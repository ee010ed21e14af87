"""What goes wrong with SOPS files, and what fleetd says about it.

Every failure has its own exception and message naming the file, the key
path where there is one, and what to do. No message, nor any exception
chained to it, may contain a decrypted value: each case is checked for the
plaintext `SECRET` it was built around. Fixtures come from the real sops
binary and are then damaged the way a bad merge or a hand edit would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.errors import FleetdError
from fleetd.inventory.model import Decryption
from fleetd.secrets.sops import (
    InvalidSopsFile,
    KeyFileError,
    KeyRing,
    MacMismatch,
    NoKeysConfigured,
    SopsBinaryFailed,
    SopsError,
    TamperedValue,
    UnsupportedKeyType,
    WrongKey,
    decrypt,
    format_for,
)
from tests.unit.test_sops_native import SECRET, SOPS, SopsKit, age, shamir_config

pytestmark = pytest.mark.timeout(20)

PLAIN = f"""\
metadata:
    name_unencrypted: app
stringData:
    password: {SECRET}
    token: other-{SECRET}
"""


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SopsKit]:
    made = SopsKit(root=tmp_path_factory.mktemp("sops-errors"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def encrypted(kit: SopsKit) -> str:
    return kit.encrypt(PLAIN, *age(kit, "main")).decode()


def failure(data: str | bytes, keys: KeyRing, fmt: str = "yaml", **kwargs: object) -> SopsError:
    """The error decrypting `data` raises, after checking it leaks no plaintext."""
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(SopsError) as info:
        decrypt(raw, fmt, keys, source="secrets/app.yaml", **kwargs)  # type: ignore[arg-type]
    assert_no_plaintext(info.value)
    return info.value


def assert_no_plaintext(error: BaseException) -> None:
    chain: BaseException | None = error
    while chain is not None:
        assert SECRET not in str(chain), f"{type(chain).__name__} leaks the plaintext"
        assert SECRET not in repr(chain.args)
        chain = chain.__cause__ or chain.__context__


def sops_value(text: str, key: str) -> str:
    match = re.search(rf"^\s*{key}: (ENC\[.*\])$", text, re.MULTILINE)
    assert match, f"no encrypted {key} in the fixture"
    return match[1]


def test_every_sops_error_is_a_fleetd_error() -> None:
    assert issubclass(SopsError, FleetdError)


def test_an_edited_ciphertext_fails_authentication_naming_the_key_path(kit: SopsKit, encrypted: str) -> None:
    value = sops_value(encrypted, "password")
    data = value.replace("data:", "data:AAAA", 1)
    error = failure(encrypted.replace(value, data), kit.keyring("main"))
    assert isinstance(error, TamperedValue)
    assert error.key == "stringData.password"
    assert str(error).startswith("secrets/app.yaml: the encrypted value at stringData.password failed")


def test_a_value_moved_to_another_key_fails_authentication_there(kit: SopsKit, encrypted: str) -> None:
    password, token = sops_value(encrypted, "password"), sops_value(encrypted, "token")
    swapped = encrypted.replace(token, "TOKEN").replace(password, token).replace("TOKEN", password)
    error = failure(swapped, kit.keyring("main"))
    assert isinstance(error, TamperedValue)
    assert "stringData.password" in str(error)


def test_an_edited_plain_value_breaks_the_mac(kit: SopsKit, encrypted: str) -> None:
    error = failure(encrypted.replace("name_unencrypted: app", "name_unencrypted: evil"), kit.keyring("main"))
    assert isinstance(error, MacMismatch)
    assert "changed without sops" in str(error)


def test_a_deleted_value_breaks_the_mac(kit: SopsKit, encrypted: str) -> None:
    token_line = f"    token: {sops_value(encrypted, 'token')}\n"
    error = failure(encrypted.replace(token_line, ""), kit.keyring("main"))
    assert isinstance(error, MacMismatch)


def test_a_replaced_mac_is_rejected(kit: SopsKit, encrypted: str) -> None:
    other = kit.encrypt(PLAIN.replace("app", "other"), *age(kit, "main")).decode()
    forged = re.sub(r"mac: ENC\[.*\]", lambda _: f"mac: {sops_value(other, 'mac')}", encrypted)
    error = failure(forged, kit.keyring("main"))
    assert isinstance(error, MacMismatch)
    assert "sops.mac failed authentication" in str(error)


def test_an_edited_lastmodified_is_rejected(kit: SopsKit, encrypted: str) -> None:
    edited = re.sub(r'lastmodified: "\d{4}', 'lastmodified: "1999', encrypted)
    error = failure(edited, kit.keyring("main"))
    assert isinstance(error, MacMismatch)
    assert "lastmodified" in str(error)


def test_without_a_matching_key_the_error_lists_recipients_and_key_files(
    kit: SopsKit, encrypted: str
) -> None:
    keys = kit.keyring("stranger")
    error = failure(encrypted, keys)
    assert isinstance(error, WrongKey)
    assert kit.recipient("main") in str(error)
    assert kit.recipient("stranger") in str(error)
    assert str(keys.key_files[0]) in str(error)


def test_a_pgp_only_file_without_the_secret_key_lists_its_fingerprint(kit: SopsKit) -> None:
    _ = kit.gnupg_home
    data = kit.encrypt(PLAIN, "--pgp", kit.gnupg_fingerprint)
    error = failure(data, kit.keyring("main"))
    assert isinstance(error, WrongKey)
    assert f"pgp {kit.gnupg_fingerprint}" in str(error)


def test_too_few_shamir_groups_are_named_with_how_many_opened(kit: SopsKit) -> None:
    data = kit.encrypt(PLAIN, config=shamir_config(kit))
    error = failure(data, kit.keyring("g3"))
    assert isinstance(error, WrongKey)
    assert "open only 1 of the 2 Shamir key groups" in str(error)


def test_with_no_keys_configured_at_all_the_error_says_so(kit: SopsKit, encrypted: str) -> None:
    error = failure(encrypted, kit.keyring())
    assert isinstance(error, NoKeysConfigured)
    assert "no decryption keys are configured" in str(error)
    assert kit.recipient("main") in str(error)


@pytest.mark.parametrize("fmt", ["yaml", "json", "dotenv"])
def test_a_truncated_file_is_invalid(kit: SopsKit, fmt: str) -> None:
    plain = {"yaml": PLAIN, "json": f'{{"password": "{SECRET}"}}', "dotenv": f"PASSWORD={SECRET}\n"}[fmt]
    data = kit.encrypt(plain, *age(kit, "main"), fmt=fmt)
    error = failure(data[: len(data) // 3], kit.keyring("main"), fmt=fmt)
    assert isinstance(error, InvalidSopsFile)
    assert str(error).startswith("secrets/app.yaml: ")


def test_a_plain_file_is_not_a_sops_file(kit: SopsKit) -> None:
    error = failure(PLAIN, kit.keyring("main"))
    assert isinstance(error, InvalidSopsFile)
    assert "not a SOPS-encrypted file" in str(error)


@pytest.mark.parametrize("field", ["mac", "lastmodified"])
def test_missing_metadata_fields_make_the_file_invalid(kit: SopsKit, encrypted: str, field: str) -> None:
    edited = re.sub(rf"^    {field}: .*\n", "", encrypted, flags=re.MULTILINE)
    error = failure(edited, kit.keyring("main"))
    assert isinstance(error, InvalidSopsFile)
    assert f"has no {field}" in str(error)


def test_broken_yaml_is_reported_by_position_without_quoting_the_line(kit: SopsKit, encrypted: str) -> None:
    error = failure(encrypted.replace("stringData:", f"stringData: {SECRET}: ["), kit.keyring("main"))
    assert isinstance(error, InvalidSopsFile)
    assert re.search(r"invalid YAML: line \d+, column \d+", str(error))


def test_a_secret_pasted_in_plain_text_is_refused_without_echoing_it(kit: SopsKit, encrypted: str) -> None:
    edited = encrypted.replace(sops_value(encrypted, "password"), SECRET)
    error = failure(edited, kit.keyring("main"))
    assert isinstance(error, InvalidSopsFile)
    assert "stringData.password should be encrypted" in str(error)


def test_a_foreign_key_type_without_the_binary_is_unsupported(kit: SopsKit, encrypted: str) -> None:
    vault = encrypted.replace(
        "sops:\n",
        "sops:\n    hc_vault:\n        - vault_address: https://vault.invalid\n          enc: x\n",
        1,
    )
    error = failure(vault, kit.keyring("stranger", sops_binary="no-such-sops-binary"))
    assert isinstance(error, UnsupportedKeyType)
    assert "hc_vault https://vault.invalid" in str(error)
    assert "'no-such-sops-binary' was not found" in str(error)


def test_a_failing_binary_reports_sanitised_stderr(kit: SopsKit, encrypted: str) -> None:
    edited = encrypted.replace(sops_value(encrypted, "password"), SECRET)
    error = failure(edited, kit.keyring("main"), use_binary=True)
    assert isinstance(error, SopsBinaryFailed)
    assert "sops decrypt failed (exit" in str(error)
    assert "<redacted>" in str(error)


def test_a_binary_that_hangs_is_killed_after_the_timeout(kit: SopsKit, encrypted: str) -> None:
    hanging = kit.root / "hanging-sops"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    keys = KeyRing(sops_binary=str(hanging), binary_timeout=0.5)
    error = failure(encrypted, keys, use_binary=True)
    assert isinstance(error, SopsBinaryFailed)
    assert "did not finish within 0.5s" in str(error)


def test_a_key_file_that_is_missing_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(KeyFileError, match=f"^{missing}: cannot read the age key file"):
        KeyRing.from_decryption(Decryption(age_key_files=(missing,)))


def test_a_corrupt_identity_is_named_by_line_without_echoing_it(tmp_path: Path) -> None:
    bad = tmp_path / "keys.txt"
    bad.write_text("# my key\nAGE-SECRET-KEY-1NOTAKEY\n")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        KeyRing.from_decryption(Decryption(age_key_files=(bad,)))
    assert str(info.value) == f"{bad}: line 2 is not a valid age identity"


def test_each_failure_has_its_own_exception_class() -> None:
    classes = [
        InvalidSopsFile,
        TamperedValue,
        MacMismatch,
        KeyFileError,
        NoKeysConfigured,
        WrongKey,
        UnsupportedKeyType,
        SopsBinaryFailed,
    ]
    assert len(set(classes)) == len(classes)
    assert all(issubclass(cls, SopsError) for cls in classes)
    assert SOPS.exists()


def test_ini_files_are_refused_by_name() -> None:
    with pytest.raises(InvalidSopsFile, match=r"^app\.ini: INI SOPS files are not supported"):
        format_for("app.ini")


def test_a_missing_gnupg_home_warns_and_leaves_pgp_off(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="GnuPG home does not exist"):
        keys = KeyRing.from_decryption(Decryption(gnupg_home=tmp_path / "missing"))
    assert not keys.use_gnupg
    assert not (tmp_path / "missing").exists()
