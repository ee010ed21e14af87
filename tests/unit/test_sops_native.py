"""Native SOPS decryption, checked against files the real sops binary encrypted.

Every fixture is produced at test time by ``sops --encrypt`` (the test bed's
build, v3.13.x) from plaintext written here, so each test states what went
in and checks that exactly that comes out: per format, per encryption rule,
per key arrangement (several identity files, rotated keys, PGP, Shamir key
groups), and through the binary fallback. A module-scoped `SopsKit` holds
the age identities, the GnuPG home and a cache of encrypted files.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import pickle
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fleetd.inventory.model import Decryption
from fleetd.secrets.crypto import go_float, parse_go_time, typed
from fleetd.secrets.sops import (
    KeyFilePermissionWarning,
    KeyRing,
    decrypt,
    decrypt_bytes,
    decrypt_file,
    format_for,
    is_sops_encrypted,
)
from testbed.build import toolset

SOPS = toolset().path("sops")
if not SOPS.exists():
    pytest.fail(f"sops is not built at {SOPS}: run `python -m testbed build`", pytrace=False)

pytestmark = pytest.mark.timeout(20)

SECRET = "correct-horse-battery-staple-4711"


@dataclass
class SopsKit:
    """Age identities, an optional GnuPG home, and `sops --encrypt` with a cache."""

    root: Path
    identities: dict[str, Any] = field(default_factory=dict)
    gnupg_fingerprint: str = ""
    _cache: dict[tuple[object, ...], bytes] = field(default_factory=dict)
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def recipient(self, name: str) -> str:
        if name not in self.identities:
            self.identities[name] = pyrage.x25519.Identity.generate()
        return str(self.identities[name].to_public())

    def key_file(self, *names: str, mode: int = 0o600) -> Path:
        """A key file holding the named identities, with comments and blank lines like age-keygen's."""
        lines = [f"# created by the test for {', '.join(names)}"]
        for name in names:
            lines += [f"# public key: {self.recipient(name)}", str(self.identities[name]), ""]
        path = self.root / f"keys-{next(self._counter)}.txt"
        path.write_text("\n".join(lines))
        path.chmod(mode)
        return path

    def keyring(self, *names: str, sops_binary: str = str(SOPS), pgp: bool = False) -> KeyRing:
        files = tuple(self.key_file(name) for name in names)
        home = self.gnupg_home if pgp else self.root / "empty-gnupg"
        home.mkdir(mode=0o700, exist_ok=True)
        decryption = Decryption(age_key_files=files, gnupg_home=home, sops_binary=sops_binary)
        return KeyRing.from_decryption(decryption)

    @property
    def gnupg_home(self) -> Path:
        home = self.root / "gnupg"
        if not self.gnupg_fingerprint:
            home.mkdir(mode=0o700)
            self._gpg(
                home,
                "--passphrase",
                "",
                "--quick-gen-key",
                "fleetd test <t@fleetd.invalid>",
                "future-default",
            )
            listing = self._gpg(home, "--list-secret-keys", "--with-colons")
            self.gnupg_fingerprint = next(
                line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
            )
        return home

    def encrypt(self, plain: str | bytes, *flags: str, fmt: str = "yaml", config: str | None = None) -> bytes:
        """`plain` as `sops --encrypt` writes it (cached per arguments)."""
        key = (plain, flags, fmt, config)
        if key not in self._cache:
            self._cache[key] = self._run_sops(plain, flags, fmt, config)
        return self._cache[key]

    def _run_sops(self, plain: str | bytes, flags: tuple[str, ...], fmt: str, config: str | None) -> bytes:
        source = self.root / f"plain-{next(self._counter)}"
        source.write_bytes(plain.encode() if isinstance(plain, str) else plain)
        argv = [str(SOPS)]
        if config is not None:
            (self.root / "sops-config.yaml").write_text(config)
            argv += ["--config", str(self.root / "sops-config.yaml")]
        argv += ["--encrypt", "--input-type", fmt, "--output-type", fmt, *flags, str(source)]
        env = {"PATH": os.environ["PATH"], "HOME": str(self.root), "GNUPGHOME": str(self.root / "gnupg")}
        done = subprocess.run(argv, capture_output=True, env=env, cwd=self.root, timeout=30, check=False)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    def close(self) -> None:
        if self.gnupg_fingerprint:
            home = str(self.root / "gnupg")
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False, timeout=10)

    @staticmethod
    def _gpg(home: Path, *args: str) -> str:
        argv = ["gpg", "--homedir", str(home), "--batch", *args]
        return subprocess.run(argv, capture_output=True, check=True, text=True, timeout=30).stdout


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SopsKit]:
    made = SopsKit(root=tmp_path_factory.mktemp("sops"))
    yield made
    made.close()


def age(kit: SopsKit, *names: str) -> tuple[str, str]:
    return ("--age", ",".join(kit.recipient(name) for name in names))


def same(value: Any) -> Any:
    """`value` with NaN made comparable (NaN != NaN)."""
    if isinstance(value, dict):
        return {key: same(item) for key, item in value.items()}
    if isinstance(value, list):
        return [same(item) for item in value]
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


# --- formats and types --------------------------------------------------------------------------

TYPED_YAML = f"""\
password: {SECRET}
port: 5432
ratio: 0.25
enabled: true
created: 2024-05-06T07:08:09.123456789Z
nothing: null
empty: ""
hosts: [alpha, 2, {{nested: deep}}]
multi: |
  line one
  line two
"""
TYPED = {
    "password": SECRET,
    "port": 5432,
    "ratio": 0.25,
    "enabled": True,
    "created": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
    "nothing": None,
    "empty": "",
    "hosts": ["alpha", 2, {"nested": "deep"}],
    "multi": "line one\nline two\n",
}
JSON_PLAIN = json.dumps(
    {"user": "admin", "password": SECRET, "port": 5432, "ratio": 0.5, "tls": True, "tags": ["x", 1, None]}
)
DOTENV_PLAIN = f"# database\nDB_USER=admin\nDB_PASSWORD={SECRET}\nCERT=line1\\nline2\nEMPTY=\n"
BINARY_PLAIN = bytes(range(256)) * 8 + SECRET.encode()


def test_yaml_decrypts_to_the_mapping_that_went_in_with_every_type_kept(kit: SopsKit) -> None:
    data = kit.encrypt(TYPED_YAML, *age(kit, "main"))
    assert decrypt(data, "yaml", kit.keyring("main")) == TYPED


def test_typed_values_are_stored_encrypted_with_their_type(kit: SopsKit) -> None:
    stored = yaml.safe_load(kit.encrypt(TYPED_YAML, *age(kit, "main")))
    kinds = {key: str(stored[key]).rsplit("type:", 1)[-1] for key in ("port", "ratio", "enabled", "created")}
    assert kinds == {"port": "int]", "ratio": "float]", "enabled": "bool]", "created": "time]"}


def test_json_decrypts_to_the_object_that_went_in(kit: SopsKit) -> None:
    data = kit.encrypt(JSON_PLAIN, *age(kit, "main"), fmt="json")
    assert decrypt(data, "json", kit.keyring("main")) == json.loads(JSON_PLAIN)


def test_dotenv_decrypts_to_a_dict_of_strings_with_newlines_restored(kit: SopsKit) -> None:
    data = kit.encrypt(DOTENV_PLAIN, *age(kit, "main"), fmt="dotenv")
    expected = {"DB_USER": "admin", "DB_PASSWORD": SECRET, "CERT": "line1\nline2", "EMPTY": ""}
    assert decrypt(data, "dotenv", kit.keyring("main")) == expected


def test_binary_decrypts_to_the_exact_bytes_that_went_in(kit: SopsKit) -> None:
    data = kit.encrypt(BINARY_PLAIN, *age(kit, "main"), fmt="binary")
    assert decrypt(data, "binary", kit.keyring("main")) == BINARY_PLAIN


def test_a_multi_document_yaml_stream_decrypts_to_a_list_of_documents(kit: SopsKit) -> None:
    data = kit.encrypt(f"a: {SECRET}\n---\nb: 2\n", *age(kit, "main"))
    assert decrypt(data, "yaml", kit.keyring("main")) == [{"a": SECRET}, {"b": 2}]


AWKWARD_YAML = """\
# comment at the top
loose:
  word_yes: yes
  word_on: on
  octal: 0755
  octal_new: 0o17
  underscored: 1_000
  hex: 0x1F
  exponent: 1e3
  leading_dot: .5
  infinite: -.Inf
  not_a_number: .nan
  date: 2024-01-02
  short_time: 2024-1-2T3:4:5.120Z
  spaced_time: 2024-01-02 03:04:05
  zoneless: 2024-01-02T03:04:05
  tilde: ~
  quoted_number: "123"
  float_one: 1.0
  trailing_zero: 100.50
  binary: !!binary aGVsbG8=
  custom: !Ref something
  folded: >
    a b
    c
  unicode: "héllo ✓"
  flow: [1, "two", 3.0, false, null]
"""


@pytest.mark.parametrize(
    "flags",
    [(), ("--unencrypted-regex", "^loose$"), ("--unencrypted-regex", "^loose$", "--mac-only-encrypted")],
    ids=["all-encrypted", "all-plain", "all-plain-mac-only"],
)
def test_awkward_yaml_scalars_decrypt_exactly_as_the_sops_binary_reads_them(
    kit: SopsKit, flags: tuple[str, ...]
) -> None:
    data = kit.encrypt(AWKWARD_YAML, *age(kit, "main"), *flags)
    keys = kit.keyring("main")
    assert same(decrypt(data, "yaml", keys)) == same(decrypt(data, "yaml", keys, use_binary=True))


# --- encryption rules ---------------------------------------------------------------------------

RULES_YAML = f"""\
apiVersion: v1
kind: Secret
metadata:
    name: app
    labels:
        tier: backend
public_unencrypted: visible
stringData:
    # sops:enc
    password: {SECRET}
    token: abc123
ports:
    - 80
    - scheme: https
      port: 443
"""
RULES = yaml.safe_load(RULES_YAML)


@pytest.mark.parametrize(
    ("flags", "encrypted", "plain"),
    [
        ((), ["name", "password", "token", "port"], ["public_unencrypted"]),
        (("--encrypted-regex", "^(stringData|port)$"), ["password", "token", "port"], ["name", "tier"]),
        (("--unencrypted-regex", "^(apiVersion|kind|metadata)$"), ["password", "port"], ["name", "kind"]),
        (("--encrypted-suffix", "Data"), ["password", "token"], ["name", "port"]),
        (("--unencrypted-suffix", "Data"), ["public_unencrypted", "name"], ["password", "token"]),
        (("--encrypted-comment-regex", "sops:enc"), ["password"], ["token", "name"]),
        (("--unencrypted-comment-regex", "sops:enc"), ["token", "name"], ["password"]),
        (("--encrypted-regex", "^password$", "--mac-only-encrypted"), ["password"], ["token", "name"]),
    ],
    ids=[
        "default-unencrypted-suffix",
        "encrypted-regex",
        "unencrypted-regex",
        "encrypted-suffix",
        "unencrypted-suffix",
        "encrypted-comment-regex",
        "unencrypted-comment-regex",
        "mac-only-encrypted",
    ],
)
def test_every_encryption_rule_decrypts_to_exactly_what_went_in(
    kit: SopsKit, flags: tuple[str, ...], encrypted: list[str], plain: list[str]
) -> None:
    data = kit.encrypt(RULES_YAML, *age(kit, "main"), *flags)
    stored = _leaves(yaml.safe_load(data))
    assert all(str(stored[key]).startswith("ENC[") for key in encrypted), "the rule did not apply"
    assert not any(str(stored[key]).startswith("ENC[") for key in plain), "the rule did not apply"
    assert decrypt(data, "yaml", kit.keyring("main")) == RULES


def _leaves(tree: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """The last value seen for each key, anywhere in `tree` (enough for these small fixtures)."""
    found = {} if found is None else found
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if isinstance(value, dict | list):
            _leaves(value, found)
        elif isinstance(key, str) and key != "sops":
            found[key] = value
    return found


def test_rules_apply_to_dotenv_and_json_too(kit: SopsKit) -> None:
    env = kit.encrypt(DOTENV_PLAIN, *age(kit, "main"), "--encrypted-regex", "PASSWORD", fmt="dotenv")
    assert b"DB_USER=admin" in env
    assert decrypt(env, "dotenv", kit.keyring("main"))["DB_PASSWORD"] == SECRET
    doc = kit.encrypt(JSON_PLAIN, *age(kit, "main"), "--unencrypted-regex", "^user$", fmt="json")
    assert decrypt(doc, "json", kit.keyring("main")) == json.loads(JSON_PLAIN)


def test_a_rule_regex_python_cannot_compile_falls_back_to_the_binary(kit: SopsKit) -> None:
    data = kit.encrypt(RULES_YAML, *age(kit, "main"), "--encrypted-regex", r"^pass\pL*$")
    assert decrypt(data, "yaml", kit.keyring("main")) == RULES


# --- keys ---------------------------------------------------------------------------------------


def test_any_identity_in_a_key_file_of_several_opens_the_file(kit: SopsKit) -> None:
    data = kit.encrypt(TYPED_YAML, *age(kit, "rotated-new"))
    one_file = Decryption(age_key_files=(kit.key_file("rotated-old", "rotated-new"),))
    assert decrypt(data, "yaml", KeyRing.from_decryption(one_file)) == TYPED


def test_identities_from_several_key_files_are_all_tried(kit: SopsKit) -> None:
    data = kit.encrypt(TYPED_YAML, *age(kit, "rotated-new"))
    files = (kit.key_file("rotated-old"), kit.key_file("other"), kit.key_file("rotated-new"))
    assert decrypt(data, "yaml", KeyRing.from_decryption(Decryption(age_key_files=files))) == TYPED


def test_a_file_for_several_recipients_opens_with_any_one_of_them(kit: SopsKit) -> None:
    data = kit.encrypt(TYPED_YAML, *age(kit, "team-a", "team-b", "team-c"))
    assert decrypt(data, "yaml", kit.keyring("team-c")) == TYPED


def test_pgp_recipients_open_through_the_gnupg_home(kit: SopsKit) -> None:
    home = kit.gnupg_home
    data = kit.encrypt(TYPED_YAML, "--pgp", kit.gnupg_fingerprint)
    keys = KeyRing.from_decryption(Decryption(gnupg_home=home))
    assert decrypt(data, "yaml", keys) == TYPED


def test_a_file_for_age_and_pgp_opens_with_pgp_alone(kit: SopsKit) -> None:
    _ = kit.gnupg_home
    data = kit.encrypt(JSON_PLAIN, *age(kit, "nobody-here"), "--pgp", kit.gnupg_fingerprint, fmt="json")
    assert decrypt(data, "json", kit.keyring(pgp=True)) == json.loads(JSON_PLAIN)


def shamir_config(kit: SopsKit) -> str:
    groups = "".join(f"      - age: [{kit.recipient(name)}]\n" for name in ("g1", "g2", "g3"))
    return f"creation_rules:\n  - path_regex: .*\n    shamir_threshold: 2\n    key_groups:\n{groups}"


@pytest.mark.parametrize("holders", [("g1", "g2"), ("g2", "g3"), ("g1", "g3"), ("g1", "g2", "g3")])
def test_shamir_key_groups_open_with_any_threshold_of_groups(kit: SopsKit, holders: tuple[str, ...]) -> None:
    data = kit.encrypt(TYPED_YAML, config=shamir_config(kit))
    assert b"shamir_threshold: 2" in data
    assert decrypt(data, "yaml", kit.keyring(*holders)) == TYPED


# --- the sops binary ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "fmt"),
    [(TYPED_YAML, "yaml"), (JSON_PLAIN, "json"), (DOTENV_PLAIN, "dotenv"), (BINARY_PLAIN, "binary")],
)
def test_forcing_the_binary_gives_the_same_result_as_native(
    kit: SopsKit, plain: str | bytes, fmt: str
) -> None:
    data = kit.encrypt(plain, *age(kit, "main"), fmt=fmt)
    keys = kit.keyring("main")
    assert decrypt(data, fmt, keys, use_binary=True) == decrypt(data, fmt, keys)


@pytest.fixture
def ssh_identity(kit: SopsKit, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ssh-ed25519 age recipient; its private key reaches only the binary, via the environment."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = kit.root / f"id-{next(kit._counter)}"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    monkeypatch.setenv("SOPS_AGE_SSH_PRIVATE_KEY_FILE", str(private))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


def test_a_key_type_fleetd_cannot_open_falls_back_to_the_binary(
    kit: SopsKit, ssh_identity: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = kit.encrypt(TYPED_YAML, "--age", ssh_identity)
    with caplog.at_level("INFO", logger="fleetd.secrets.sops"):
        assert decrypt(data, "yaml", kit.keyring("main"), source="ssh.yaml") == TYPED
    assert "ssh.yaml: decrypting with" in caplog.text
    assert SECRET not in caplog.text


def test_the_binary_gets_keys_through_a_pipe_never_argv_or_environment(
    kit: SopsKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = kit.keyring("main")
    data = kit.encrypt(TYPED_YAML, *age(kit, "main"))
    seen: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def spy(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        seen.append((argv, kwargs["env"]))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    assert decrypt(data, "yaml", keys, use_binary=True) == TYPED
    ((argv, env),) = seen
    secret_key = str(kit.identities["main"])
    assert not any(secret_key in part for part in [*argv, *env.values()])
    assert env["SOPS_AGE_KEY_FILE"].startswith("/dev/fd/")


# --- the API around decryption ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "fmt"),
    [(TYPED_YAML, "yaml"), (JSON_PLAIN, "json"), (DOTENV_PLAIN, "dotenv"), (BINARY_PLAIN, "binary")],
)
def test_decrypt_bytes_gives_a_plain_document_that_reads_back_the_same(
    kit: SopsKit, plain: str | bytes, fmt: str
) -> None:
    data = kit.encrypt(plain, *age(kit, "main"), fmt=fmt)
    keys = kit.keyring("main")
    out = decrypt_bytes(data, fmt, keys)
    assert not is_sops_encrypted(out)
    if fmt == "binary":
        assert out == BINARY_PLAIN
    elif fmt == "dotenv":
        assert out.decode() == f"DB_USER=admin\nDB_PASSWORD={SECRET}\nCERT=line1\\nline2\nEMPTY=\n"
    else:
        read = json.loads if fmt == "json" else yaml.safe_load
        assert read(out) == read(decrypt_bytes(data, fmt, keys, use_binary=True))


def test_decrypt_file_takes_the_format_from_the_extension(kit: SopsKit) -> None:
    path = kit.root / "secret.env"
    path.write_bytes(kit.encrypt(DOTENV_PLAIN, *age(kit, "main"), fmt="dotenv"))
    assert decrypt_file(path, kit.keyring("main"))["DB_PASSWORD"] == SECRET


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a/secret.yaml", "yaml"),
        ("secret.yml", "yaml"),
        ("x.json", "json"),
        ("prod.env", "dotenv"),
        ("tls.key", "binary"),
        ("README", "binary"),
        ("secret.YAML", "binary"),  # sops matches extensions case-sensitively
    ],
)
def test_the_format_is_guessed_from_the_extension_as_sops_does(path: str, fmt: str) -> None:
    assert format_for(path) == fmt


@pytest.mark.parametrize(
    ("plain", "fmt"),
    [(TYPED_YAML, "yaml"), (JSON_PLAIN, "json"), (DOTENV_PLAIN, "dotenv"), (BINARY_PLAIN, "binary")],
)
def test_encrypted_files_of_every_format_are_recognised(kit: SopsKit, plain: str | bytes, fmt: str) -> None:
    data = kit.encrypt(plain, *age(kit, "main"), fmt=fmt)
    assert is_sops_encrypted(data)
    assert is_sops_encrypted(data.decode())
    if fmt != "dotenv":
        assert is_sops_encrypted(json.loads(data) if fmt in ("json", "binary") else yaml.safe_load(data))


@pytest.mark.parametrize(
    "thing",
    [
        TYPED_YAML,
        JSON_PLAIN,
        DOTENV_PLAIN.encode(),
        BINARY_PLAIN,
        b"sops:\n  version: 3.13.3\n",
        "mac: x\nlastmodified: y\n",
        {"sops": {"mac": "x"}},
        {"data": "x"},
        b"{ not json, mac lastmodified",
        None,
    ],
)
def test_plain_documents_are_not_taken_for_encrypted_ones(thing: object) -> None:
    assert not is_sops_encrypted(thing)


def test_a_key_file_readable_by_others_warns_naming_the_file(kit: SopsKit) -> None:
    loose = kit.key_file("main", mode=0o644)
    with pytest.warns(KeyFilePermissionWarning, match=f"{loose}.*chmod 600"):
        KeyRing.from_decryption(Decryption(age_key_files=(loose,)))


def test_a_private_key_file_loads_without_warnings(kit: SopsKit) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keys = KeyRing.from_decryption(Decryption(age_key_files=(kit.key_file("main"),)))
    assert keys.recipients == (kit.recipient("main"),)


def test_the_keyring_shows_public_keys_and_files_but_no_key_material(kit: SopsKit) -> None:
    keys = kit.keyring("main", "team-a")
    shown = f"{keys!r} {keys}"
    assert kit.recipient("main") in shown
    assert str(keys.key_files[0]) in shown
    assert "AGE-SECRET-KEY" not in shown
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(keys)


# --- value decoding (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "kind", "value"),
    [
        (b"text", "str", "text"),
        (b"-42", "int", -42),
        (b"2.5", "float", 2.5),
        (b"True", "bool", True),
        (b"false", "bool", False),
        (b"\x00\xffraw", "bytes", b"\x00\xffraw"),
        (b" a comment", "comment", " a comment"),
        (
            b"2024-01-02T03:04:05.5+01:00",
            "time",
            dt.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
    ],
)
def test_each_enc_type_reads_back_as_its_python_type(plain: bytes, kind: str, value: object) -> None:
    assert typed(plain, kind, ("k",), "f.yaml") == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.25, "0.25"),
        (1e16, "10000000000000000"),
        (1e-7, "0.0000001"),
        (-0.0, "-0"),
        (math.inf, "+Inf"),
    ],
)
def test_floats_hash_in_go_s_shortest_fixed_form(value: float, text: str) -> None:
    assert go_float(value) == text


@pytest.mark.parametrize(
    ("text", "go"),
    [
        ("2024-01-02", "2024-01-02T00:00:00Z"),
        ("2024-1-2T3:4:5.120Z", "2024-01-02T03:04:05.12Z"),
        ("2024-01-02 03:04:05", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.123456789+02:00", "2024-01-02T03:04:05.123456789+02:00"),
    ],
)
def test_timestamps_hash_as_go_marshals_them_keeping_nanoseconds(text: str, go: str) -> None:
    parsed = parse_go_time(text)
    assert parsed is not None
    assert parsed[1] == go


def test_a_zoneless_t_timestamp_is_a_string_as_in_yaml_v3() -> None:
    assert parse_go_time("2024-01-02T03:04:05") is None
