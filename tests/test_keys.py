"""Keys and key providers: material never shows, versions, rotation, the dev keyring's safety rails."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyspark import cloudpickle

from privstage.errors import KeyUnavailable, SpecError
from privstage.keys import (
    DEV_WARNING,
    EnvKeyProvider,
    FileKeyProvider,
    Key,
    KeyProvider,
    LocalKeyring,
    decode_key_text,
    provider_from_spec,
)
from privstage.spec import EnvKeysSpec, FileKeysSpec, LocalKeyringSpec, load_spec

MATERIAL_A = hashlib.sha256(b"key a").digest()
MATERIAL_B = hashlib.sha256(b"key b").digest()
# Chosen so that standard and url-safe base64 differ ('+' and '/' versus '-' and '_').
MATERIAL_URL = bytes([0xFB, 0xFF, 0xBF] * 11)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def forms(raw: bytes) -> list[str]:
    """Every way key material could show up in text."""
    std = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    return [std, std.rstrip("="), url, url.rstrip("="), raw.hex(), raw.hex().upper(), repr(raw), str(raw)]


def assert_no_material(text: str, *materials: bytes) -> None:
    for raw in materials:
        for form in forms(raw):
            assert form not in text


# --------------------------------------------------------------------------------------------
# Key
# --------------------------------------------------------------------------------------------
def test_key_repr_and_str_never_show_material() -> None:
    key = Key("pseudonym-key", 3, MATERIAL_A)
    for text in (repr(key), str(key), f"{key}", f"{key!r}", format(key), "%s" % (key,), repr([key])):  # noqa: UP031
        assert "pseudonym-key" in text
        assert "redacted" in text
        assert_no_material(text, MATERIAL_A)
    assert repr(key) == "Key(key_id='pseudonym-key', version=3, material=<redacted>)"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_key_refuses_pickle(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Key("k1", 1, MATERIAL_A), protocol=protocol)


def test_key_cannot_ride_into_a_spark_closure() -> None:
    key = Key("k1", 1, MATERIAL_A)
    with pytest.raises(TypeError, match="cannot be pickled"):
        cloudpickle.dumps(lambda value: hmac.new(key.material(), value, hashlib.sha256).digest())


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_key_cannot_be_copied_around(copier) -> None:
    with pytest.raises(TypeError):
        copier(Key("k1", 1, MATERIAL_A))


def test_key_is_frozen() -> None:
    key = Key("k1", 1, MATERIAL_A)
    with pytest.raises(AttributeError):
        key.version = 2  # type: ignore[misc]
    assert key.material() == MATERIAL_A


def test_fingerprint_is_stable_public_and_key_specific() -> None:
    a1, a2, b = Key("k1", 1, MATERIAL_A), Key("other-id", 7, MATERIAL_A), Key("k1", 1, MATERIAL_B)
    expected = hmac.new(MATERIAL_A, b"privstage/key-fingerprint/v1", hashlib.sha256).hexdigest()[:16]
    assert a1.fingerprint() == a2.fingerprint() == expected
    assert a1.fingerprint() != b.fingerprint()
    assert len(a1.fingerprint()) == 16
    int(a1.fingerprint(), 16)
    assert_no_material(a1.fingerprint(), MATERIAL_A)


def reference_hkdf(material: bytes, purpose: str, context: bytes) -> bytes:
    info = b"privstage/" + purpose.encode() + b"/" + context
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


@pytest.mark.parametrize(
    ("purpose", "context"),
    [("pseudonymize/tenant", b"tenant-a"), ("pseudonymize/tenant", b""), ("encrypt", b"\x00\xff")],
)
def test_derive_is_hkdf_sha256_with_a_labelled_info(purpose: str, context: bytes) -> None:
    key = Key("k1", 1, MATERIAL_A)
    derived = key.derive(purpose, context)
    assert derived == reference_hkdf(MATERIAL_A, purpose, context)
    assert len(derived) == 32
    assert derived == Key("k1", 1, MATERIAL_A).derive(purpose, context)  # same inputs, same bytes


def test_derive_separates_domains() -> None:
    a, b = Key("k1", 1, MATERIAL_A), Key("k1", 1, MATERIAL_B)
    outputs = {
        a.derive("pseudonymize/tenant", b"tenant-a"),
        a.derive("pseudonymize/tenant", b"tenant-b"),
        a.derive("pseudonymize/tenant", b""),
        a.derive("encrypt", b"tenant-a"),
        a.derive("encrypt"),
        b.derive("pseudonymize/tenant", b"tenant-a"),
        MATERIAL_A,
    }
    assert len(outputs) == 7


# --------------------------------------------------------------------------------------------
# decode_key_text
# --------------------------------------------------------------------------------------------
def _wrapped(text: str, width: int = 20) -> str:
    return "\n".join(text[i : i + width] for i in range(0, len(text), width)) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(MATERIAL_URL).decode(),
        base64.urlsafe_b64encode(MATERIAL_URL).decode(),
        base64.urlsafe_b64encode(MATERIAL_URL).decode().rstrip("="),
        base64.b64encode(MATERIAL_URL).decode().rstrip("="),
        "  " + base64.b64encode(MATERIAL_URL).decode() + "\n",
        _wrapped(base64.b64encode(MATERIAL_URL).decode()),
        "\t" + _wrapped(base64.urlsafe_b64encode(MATERIAL_URL).decode(), 8).replace("\n", " \r\n"),
    ],
    ids=["std", "urlsafe", "urlsafe-unpadded", "std-unpadded", "surrounding-space", "wrapped", "wrapped-crlf"],
)
def test_decode_key_text_accepts_base64_forms(text: str) -> None:
    assert "+" in b64(MATERIAL_URL) and "-" in base64.urlsafe_b64encode(MATERIAL_URL).decode()
    assert decode_key_text(text, key_id="pseudonym-key", where="test") == MATERIAL_URL


def test_decode_key_text_accepts_longer_keys() -> None:
    assert decode_key_text(b64(bytes(64)), key_id="k1", where="test") == bytes(64)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b64(MATERIAL_A[:31]), "248 bits; at least 256"),
        (b64(MATERIAL_A[:16]), "128 bits; at least 256"),
        ("", "0 bits"),
        ("not base64 at all!!", "is not base64"),
        (b64(MATERIAL_A)[:-2] + "*=", "is not base64"),
        ("ключ" * 11, "is not base64"),
        (b64(MATERIAL_A) + "A", "is not base64"),  # length 4n+1 cannot be base64
    ],
)
def test_decode_key_text_rejects_short_or_garbled_keys(text: str, problem: str) -> None:
    with pytest.raises(KeyUnavailable) as info:
        decode_key_text(text, key_id="pseudonym-key", where="environment variable X")
    message = str(info.value)
    assert problem in message
    assert "'pseudonym-key'" in message
    assert "environment variable X" in message
    assert info.value.key_id == "pseudonym-key"
    if text.strip():
        assert text.strip() not in message


# --------------------------------------------------------------------------------------------
# EnvKeyProvider
# --------------------------------------------------------------------------------------------
def test_env_plain_variable_is_version_1() -> None:
    provider = EnvKeyProvider(environ={"PRIVSTAGE_KEY_PSEUDONYM_KEY": b64(MATERIAL_A)})
    assert provider.versions("pseudonym-key") == [1]
    key = provider.get("pseudonym-key")
    assert (key.key_id, key.version, key.material()) == ("pseudonym-key", 1, MATERIAL_A)
    assert provider.get("pseudonym-key", 1).material() == MATERIAL_A


def test_env_versioned_variables_and_current_is_highest() -> None:
    environ = {
        "PRIVSTAGE_KEY_PSEUDONYM_KEY_V2": b64(MATERIAL_A),
        "PRIVSTAGE_KEY_PSEUDONYM_KEY_V10": b64(MATERIAL_B),  # numeric, not lexical, order
        "PRIVSTAGE_KEY_PSEUDONYM_KEY_V3": b64(MATERIAL_URL),
    }
    provider = EnvKeyProvider(environ=environ)
    assert provider.versions("pseudonym-key") == [2, 3, 10]
    current = provider.get("pseudonym-key")
    assert (current.version, current.material()) == (10, MATERIAL_B)
    assert provider.get("pseudonym-key", 2).material() == MATERIAL_A
    assert provider.get("pseudonym-key", 3).material() == MATERIAL_URL


def test_env_plain_variable_stays_version_1_after_rotation() -> None:
    # Documented: a plain PRIVSTAGE_KEY_<ID> is version 1 unless <NAME>_V1 exists, so adding V2 keeps it readable.
    provider = EnvKeyProvider(environ={"PRIVSTAGE_KEY_K1": b64(MATERIAL_A), "PRIVSTAGE_KEY_K1_V2": b64(MATERIAL_B)})
    assert provider.versions("k1") == [1, 2]
    assert provider.get("k1").material() == MATERIAL_B
    assert provider.get("k1", 1).material() == MATERIAL_A
    explicit = EnvKeyProvider(environ={"PRIVSTAGE_KEY_K1": b64(MATERIAL_B), "PRIVSTAGE_KEY_K1_V1": b64(MATERIAL_A)})
    assert explicit.versions("k1") == [1]
    assert explicit.get("k1").material() == MATERIAL_A


def test_env_ignores_other_keys_sharing_a_prefix() -> None:
    environ = {
        "PRIVSTAGE_KEY_K1": b64(MATERIAL_A),
        "PRIVSTAGE_KEY_K12": b64(MATERIAL_B),
        "PRIVSTAGE_KEY_K1_EXTRA_V2": b64(MATERIAL_B),
        "PRIVSTAGE_KEY_K1_V0": b64(MATERIAL_B),
        "OTHER_K1_V5": b64(MATERIAL_B),
    }
    provider = EnvKeyProvider(environ=environ)
    assert provider.versions("k1") == [1]
    assert provider.get("k1").material() == MATERIAL_A


def test_env_missing_key_names_the_variable() -> None:
    provider = EnvKeyProvider(environ={"PRIVSTAGE_KEY_OTHER": b64(MATERIAL_A)})
    assert provider.versions("pseudonym-key") == []
    with pytest.raises(KeyUnavailable, match="set PRIVSTAGE_KEY_PSEUDONYM_KEY ") as info:
        provider.get("pseudonym-key")
    assert info.value.key_id == "pseudonym-key"
    assert info.value.retryable is True


def test_env_missing_version() -> None:
    provider = EnvKeyProvider(environ={"PRIVSTAGE_KEY_K1_V2": b64(MATERIAL_A)})
    with pytest.raises(KeyUnavailable, match="key 'k1' has no version 1"):
        provider.get("k1", 1)


def test_env_custom_prefix() -> None:
    provider = EnvKeyProvider(prefix="APP_", environ={"APP_TENANT_A_KEY": b64(MATERIAL_A)})
    assert provider.get("tenant.a-key").material() == MATERIAL_A
    assert "APP_" in provider.describe()


def test_env_garbled_value_names_variable_not_value() -> None:
    garbled = b64(MATERIAL_A)[:20]
    provider = EnvKeyProvider(environ={"PRIVSTAGE_KEY_K1": garbled})
    with pytest.raises(KeyUnavailable) as info:
        provider.get("k1")
    assert "environment variable PRIVSTAGE_KEY_K1" in str(info.value)
    assert garbled not in str(info.value)


def test_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVSTAGE_KEY_ENV_DEFAULT_TEST", b64(MATERIAL_A))
    assert EnvKeyProvider().get("env-default-test").material() == MATERIAL_A


# --------------------------------------------------------------------------------------------
# FileKeyProvider
# --------------------------------------------------------------------------------------------
def write_key(path: Path, raw: bytes) -> None:
    path.write_text(b64(raw) + "\n", encoding="ascii")


def test_files_plain_file_is_version_1(tmp_path: Path) -> None:
    write_key(tmp_path / "pseudonym-key", MATERIAL_A)
    provider = FileKeyProvider(tmp_path)
    assert provider.versions("pseudonym-key") == [1]
    key = provider.get("pseudonym-key")
    assert (key.version, key.material()) == (1, MATERIAL_A)


def test_files_versioned_files_and_disabled_marker(tmp_path: Path) -> None:
    write_key(tmp_path / "k1.v1", MATERIAL_A)
    write_key(tmp_path / "k1.v2", MATERIAL_B)
    write_key(tmp_path / "k1.v3", MATERIAL_URL)
    write_key(tmp_path / "k10.v7", MATERIAL_URL)  # another key whose id starts with "k1"
    provider = FileKeyProvider(tmp_path)
    assert provider.versions("k1") == [1, 2, 3]
    assert provider.get("k1").version == 3

    (tmp_path / "k1.v3.disabled").touch()
    assert provider.versions("k1") == [1, 2]
    current = provider.get("k1")
    assert (current.version, current.material()) == (2, MATERIAL_B)
    with pytest.raises(KeyUnavailable, match="version 3 is missing or disabled"):
        provider.get("k1", 3)
    assert provider.get("k1", 1).material() == MATERIAL_A


def test_files_missing_key_and_missing_directory(tmp_path: Path) -> None:
    provider = FileKeyProvider(tmp_path)
    with pytest.raises(KeyUnavailable, match=r"key 'k1' not found in key directory"):
        provider.get("k1")

    gone = FileKeyProvider(tmp_path / "not-mounted")
    assert gone.versions("k1") == []
    with pytest.raises(KeyUnavailable, match="does not exist") as info:
        gone.get("k1")
    assert info.value.key_id == "k1"


def test_files_garbled_file_names_file_not_content(tmp_path: Path) -> None:
    (tmp_path / "k1").write_text("short", encoding="ascii")
    with pytest.raises(KeyUnavailable) as info:
        FileKeyProvider(tmp_path).get("k1")
    assert str(tmp_path / "k1") in str(info.value)
    assert "short" not in str(info.value).replace(str(tmp_path), "")


def test_files_unreadable_content_is_key_unavailable(tmp_path: Path) -> None:
    (tmp_path / "k1").write_bytes(b"\xff\xfe" * 30)
    with pytest.raises(KeyUnavailable, match="cannot be read"):
        FileKeyProvider(tmp_path).get("k1")


def mount_secret(root: Path, stamp: str, files: dict[str, bytes]) -> None:
    """Lay out (or update) a directory the way the kubelet mounts a Secret.

    Real files live in ``..<timestamp>/``; ``..data`` links to the current one; each key is a
    top-level link ``<name> -> ..data/<name>``. An update swaps ``..data`` atomically.
    """
    data_dir = root / f"..{stamp}"
    data_dir.mkdir(parents=True)
    for name, raw in files.items():
        write_key(data_dir / name, raw)
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(data_dir.name)
    os.replace(tmp_link, root / "..data")
    for name in files:
        link = root / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)


def test_files_kubernetes_secret_layout(tmp_path: Path) -> None:
    mount_secret(tmp_path, "2024_01_01_00_00_00.000000001", {"pseudonym-key": MATERIAL_A, "tenant-key.v2": MATERIAL_B})
    provider = FileKeyProvider(tmp_path)
    assert provider.versions("pseudonym-key") == [1]
    assert provider.versions("tenant-key") == [2]
    assert provider.get("pseudonym-key").material() == MATERIAL_A
    assert provider.get("tenant-key").material() == MATERIAL_B
    # the dot-entries are not keys
    assert provider.versions("..data") == []


def test_files_rotated_secret_is_seen_without_a_new_provider(tmp_path: Path) -> None:
    mount_secret(tmp_path, "2024_01_01", {"pseudonym-key.v1": MATERIAL_A})
    provider = FileKeyProvider(tmp_path)
    assert provider.get("pseudonym-key").material() == MATERIAL_A

    mount_secret(tmp_path, "2024_02_01", {"pseudonym-key.v1": MATERIAL_A, "pseudonym-key.v2": MATERIAL_B})
    assert provider.versions("pseudonym-key") == [1, 2]
    current = provider.get("pseudonym-key")
    assert (current.version, current.material()) == (2, MATERIAL_B)
    assert provider.get("pseudonym-key", 1).material() == MATERIAL_A


def test_files_updated_value_is_seen_without_a_new_provider(tmp_path: Path) -> None:
    mount_secret(tmp_path, "2024_01_01", {"k1": MATERIAL_A})
    provider = FileKeyProvider(tmp_path)
    assert provider.get("k1").material() == MATERIAL_A
    mount_secret(tmp_path, "2024_02_01", {"k1": MATERIAL_B})
    assert provider.get("k1").material() == MATERIAL_B


# --------------------------------------------------------------------------------------------
# LocalKeyring
# --------------------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def all_material(path: Path) -> list[bytes]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [base64.b64decode(v["material"]) for entry in data["keys"].values() for v in entry["versions"].values()]


def test_init_creates_a_private_file_and_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state" / "dev-keyring.json"
    keyring = LocalKeyring.init(path, ("pseudonym-key", "tenant-key"))
    assert mode(path) == 0o600
    captured = capsys.readouterr()
    assert DEV_WARNING in captured.err
    assert captured.out == ""
    assert keyring.list() == {"pseudonym-key": [1], "tenant-key": [1]}
    a, b = keyring.get("pseudonym-key"), keyring.get("tenant-key")
    assert len(a.material()) == 32
    assert a.material() != b.material()
    assert_no_material(captured.err, a.material(), b.material())


def test_init_can_be_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    LocalKeyring.init(tmp_path / "k.json", warn=False)
    assert capsys.readouterr().err == ""


def test_init_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "dev-keyring.json"
    first = LocalKeyring.init(path, warn=False).get("pseudonym-key").material()
    with pytest.raises(SpecError, match="exists already"):
        LocalKeyring.init(path, warn=False)
    assert LocalKeyring(path).get("pseudonym-key").material() == first


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o010])
def test_refuses_a_keyring_others_can_access(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "dev-keyring.json"
    keyring = LocalKeyring.init(path, warn=False)
    path.chmod(bad_mode)
    with pytest.raises(KeyUnavailable) as info:
        keyring.get("pseudonym-key")
    message = str(info.value)
    assert f"chmod 600 {path}" in message
    assert f"{bad_mode:o}" in message
    assert_no_material(message, *all_material(path))
    path.chmod(0o600)
    assert keyring.get("pseudonym-key").version == 1


def test_missing_keyring_tells_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailable, match="privstage keys init --path"):
        LocalKeyring(tmp_path / "nope.json").get("pseudonym-key")


@pytest.mark.parametrize("content", ["not json", "[]", '{"format": "something-else/1", "keys": {}}'])
def test_not_a_keyring(tmp_path: Path, content: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(content, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(KeyUnavailable):
        LocalKeyring(path).versions("k1")


def test_create_rotate_list_get(tmp_path: Path) -> None:
    path = tmp_path / "dev-keyring.json"
    keyring = LocalKeyring.init(path, ("pseudonym-key",), warn=False)
    v1 = keyring.get("pseudonym-key").material()

    created = keyring.create("tenant-key")
    assert (created.key_id, created.version) == ("tenant-key", 1)
    with pytest.raises(SpecError, match="exists already"):
        keyring.create("tenant-key")

    v2 = keyring.rotate("pseudonym-key")
    v3 = keyring.rotate("pseudonym-key")
    assert (v2.version, v3.version) == (2, 3)
    assert len({v1, v2.material(), v3.material()}) == 3
    assert keyring.versions("pseudonym-key") == [1, 2, 3]
    assert keyring.list() == {"pseudonym-key": [1, 2, 3], "tenant-key": [1]}

    # a fresh reader sees the same state: rotation is persisted and old versions stay readable
    reader = LocalKeyring(path)
    assert reader.get("pseudonym-key").version == 3
    assert reader.get("pseudonym-key").material() == v3.material()
    assert reader.get("pseudonym-key", 1).material() == v1
    assert reader.get("pseudonym-key", 2).material() == v2.material()
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev-keyring.json"]  # no temp files left


def test_disabled_versions_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = LocalKeyring.init(path, ("k1",), warn=False)
    keyring.rotate("k1")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["keys"]["k1"]["versions"]["2"]["enabled"] = False
    path.write_text(json.dumps(data), encoding="utf-8")
    assert keyring.versions("k1") == [1]
    assert keyring.get("k1").version == 1
    with pytest.raises(KeyUnavailable, match="version 2 is missing or disabled"):
        keyring.get("k1", 2)
    assert keyring.rotate("k1").version == 3  # a disabled version number is never reused


def test_unknown_key_id(tmp_path: Path) -> None:
    keyring = LocalKeyring.init(tmp_path / "k.json", warn=False)
    assert keyring.versions("nope") == []
    with pytest.raises(KeyUnavailable, match="key 'nope' is not in dev keyring") as info:
        keyring.get("nope")
    assert info.value.key_id == "nope"
    with pytest.raises(KeyUnavailable, match="'nope'"):
        keyring.rotate("nope")


def test_import_key(tmp_path: Path) -> None:
    keyring = LocalKeyring.init(tmp_path / "k.json", warn=False)
    keyring.import_key("imported", "\n" + base64.urlsafe_b64encode(MATERIAL_URL).decode() + "\n")
    assert keyring.get("imported").material() == MATERIAL_URL
    with pytest.raises(KeyUnavailable, match="bits"):
        keyring.import_key("short", b64(MATERIAL_A[:8]))
    assert "short" not in keyring.list()
    with pytest.raises(SpecError, match="exists already"):
        keyring.import_key("imported", b64(MATERIAL_A))


def test_listing_and_messages_never_hold_material(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = LocalKeyring.init(path, ("pseudonym-key", "tenant-key"), warn=False)
    keyring.rotate("pseudonym-key")
    materials = all_material(path)
    assert len(materials) == 3

    texts = [str(keyring.list()), keyring.describe(), repr(keyring.get("pseudonym-key"))]
    for action in (
        lambda: keyring.get("nope"),
        lambda: keyring.get("pseudonym-key", 9),
        lambda: keyring.create("tenant-key"),
        lambda: keyring.rotate("nope"),
    ):
        with pytest.raises((KeyUnavailable, SpecError)) as info:
            action()
        texts += [str(info.value), json.dumps(info.value.to_dict())]
    for text in texts:
        assert_no_material(text, *materials)


# --------------------------------------------------------------------------------------------
# provider_from_spec
# --------------------------------------------------------------------------------------------
def test_env_provider_from_spec() -> None:
    provider = provider_from_spec(EnvKeysSpec(provider="env", prefix="MY_KEYS_"), state_dir="/unused")
    assert isinstance(provider, EnvKeyProvider)
    assert provider.prefix == "MY_KEYS_"


@pytest.mark.parametrize(
    ("directory", "expected"), [("secrets/keys", "{base}/secrets/keys"), ("/mnt/keys", "/mnt/keys")]
)
def test_files_provider_from_spec_resolves_against_base_dir(tmp_path: Path, directory: str, expected: str) -> None:
    provider = provider_from_spec(
        FileKeysSpec(provider="files", directory=directory), state_dir=tmp_path / "state", base_dir=tmp_path
    )
    assert isinstance(provider, FileKeyProvider)
    assert provider.directory == Path(expected.format(base=tmp_path))


def test_local_provider_from_spec_with_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVSTAGE_KEYRING", str(tmp_path / "env-keyring.json"))  # an explicit path wins
    provider = provider_from_spec(
        LocalKeyringSpec(path="keys/dev.json"), state_dir=tmp_path / "state", base_dir=tmp_path
    )
    assert isinstance(provider, LocalKeyring)
    assert provider.path == tmp_path / "keys" / "dev.json"


def test_local_provider_from_spec_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVSTAGE_KEYRING", raising=False)
    provider = provider_from_spec(LocalKeyringSpec(), state_dir=tmp_path / "state", base_dir="/elsewhere")
    assert isinstance(provider, LocalKeyring)
    assert provider.path == tmp_path / "state" / "dev-keyring.json"

    monkeypatch.setenv("PRIVSTAGE_KEYRING", str(tmp_path / "from-env.json"))
    provider = provider_from_spec(LocalKeyringSpec(), state_dir=tmp_path / "state")
    assert isinstance(provider, LocalKeyring)
    assert provider.path == tmp_path / "from-env.json"


def test_clinic_example_finds_its_dev_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVSTAGE_KEYRING", raising=False)
    spec = load_spec(
        Path(__file__).resolve().parents[1] / "pipelines" / "clinic_visits" / "pipeline.yaml", base_dir=tmp_path, env={}
    )
    provider = provider_from_spec(spec.keys, state_dir=spec.state_path(), base_dir=spec.base_dir)
    assert isinstance(provider, LocalKeyring)
    assert provider.path == tmp_path.resolve() / ".privstage" / "dev-keyring.json"
    LocalKeyring.init(provider.path, warn=False)
    assert provider.get("pseudonym-key").version == 1


@pytest.mark.parametrize(
    "provider",
    [EnvKeyProvider(environ={}), FileKeyProvider("/nonexistent"), LocalKeyring("/nonexistent.json")],
    ids=["env", "files", "local"],
)
def test_every_provider_meets_the_protocol(provider: object) -> None:
    assert isinstance(provider, KeyProvider)
    assert isinstance(provider.describe(), str)  # type: ignore[attr-defined]
