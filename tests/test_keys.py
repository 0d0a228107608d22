"""Tests for lineage_ledger.keys: key files, permissions, environment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lineage_ledger.core.crypto import Ed25519Signer, verify_ed25519
from lineage_ledger.core.note import parse_signer_key, signer_key, verifier_key
from lineage_ledger.errors import KeyringError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, load_signer, load_verifier, write_private_file, write_signer_key

pytestmark = pytest.mark.skipif(os.name != "posix", reason="key file modes are POSIX permissions")

SIGNER = Ed25519Signer("lineage.example/log", bytes(range(32)))
SIGNER_KEY = signer_key(SIGNER.name, SIGNER.private_seed())
VERIFIER_KEY = verifier_key(SIGNER.name, SIGNER.public_key)
SEED_TEXT = SIGNER_KEY.rsplit("+", 1)[1]


def _key_file(tmp_path: Path, content: str, mode: int) -> Path:
    path = tmp_path / "log.key"
    path.write_text(content, "utf-8")
    path.chmod(mode)
    return path


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_KEY_ENV_VAR, raising=False)


class TestLoadSigner:
    @pytest.mark.parametrize("mode", [0o600, 0o400])
    def test_loads_private_key_file(self, tmp_path: Path, mode: int) -> None:
        signer = load_signer(_key_file(tmp_path, SIGNER_KEY + "\n", mode))
        assert signer.name == SIGNER.name
        assert signer.public_key == SIGNER.public_key
        verify_ed25519(signer.public_key, signer.sign(b"m"), b"m")

    def test_accepts_path_string(self, tmp_path: Path) -> None:
        assert load_signer(str(_key_file(tmp_path, SIGNER_KEY, 0o600))).public_key == SIGNER.public_key

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610, 0o666, 0o777])
    def test_refuses_key_file_open_to_group_or_others(self, tmp_path: Path, mode: int) -> None:
        path = _key_file(tmp_path, SIGNER_KEY, mode)
        with pytest.raises(KeyringError) as info:
            load_signer(path)
        message = str(info.value)
        assert str(path) in message
        assert f"{mode:04o}" in message
        assert SEED_TEXT not in message

    def test_refuses_0644_even_with_environment_key(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(DEFAULT_KEY_ENV_VAR, SIGNER_KEY)
        with pytest.raises(KeyringError):
            load_signer(_key_file(tmp_path, SIGNER_KEY, 0o644))

    def test_loads_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(DEFAULT_KEY_ENV_VAR, SIGNER_KEY + "\n")
        assert load_signer().public_key == SIGNER.public_key

    def test_loads_from_named_environment_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTHER_LOG_KEY", SIGNER_KEY)
        assert load_signer(env_var="OTHER_LOG_KEY").public_key == SIGNER.public_key

    @pytest.mark.parametrize("value", [None, ""])
    def test_neither_file_nor_environment(self, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
        if value is not None:
            monkeypatch.setenv(DEFAULT_KEY_ENV_VAR, value)
        with pytest.raises(KeyringError, match=DEFAULT_KEY_ENV_VAR):
            load_signer()

    def test_malformed_environment_key_does_not_leak(self, monkeypatch: pytest.MonkeyPatch) -> None:
        wrong_id = SIGNER_KEY.replace("+lineage.example/log+", "+other+")
        monkeypatch.setenv(DEFAULT_KEY_ENV_VAR, wrong_id)
        with pytest.raises(KeyringError) as info:
            load_signer()
        assert DEFAULT_KEY_ENV_VAR in str(info.value)
        assert SEED_TEXT not in str(info.value)
        assert info.value.__cause__ is None

    @pytest.mark.parametrize(
        "content",
        [
            "",
            VERIFIER_KEY,
            SIGNER_KEY + "\n" + SIGNER_KEY + "\n",
            SIGNER_KEY[:-2],
            "x" * 5000,
        ],
        ids=["empty", "verifier-key", "two-lines", "truncated", "too-large"],
    )
    def test_malformed_key_file(self, tmp_path: Path, content: str) -> None:
        path = _key_file(tmp_path, content, 0o600)
        with pytest.raises(KeyringError) as info:
            load_signer(path)
        assert str(path) in str(info.value)
        assert SEED_TEXT not in str(info.value)

    def test_missing_key_file(self, tmp_path: Path) -> None:
        with pytest.raises(KeyringError, match=r"missing\.key"):
            load_signer(tmp_path / "missing.key")

    def test_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        fifo = tmp_path / "log.key"
        os.mkfifo(fifo, 0o600)
        with pytest.raises(KeyringError, match="not a regular file"):
            load_signer(fifo)

    def test_directory_is_not_a_key_file(self, tmp_path: Path) -> None:
        directory = tmp_path / "keys"
        directory.mkdir(mode=0o700)
        with pytest.raises(KeyringError):
            load_signer(directory)


class TestWriteSignerKey:
    def test_creates_0600_file_that_loads(self, tmp_path: Path) -> None:
        path = tmp_path / "log.key"
        write_signer_key(path, SIGNER)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text("utf-8") == SIGNER_KEY + "\n"
        assert parse_signer_key(path.read_text("utf-8").strip()).public_key == SIGNER.public_key
        assert load_signer(path).public_key == SIGNER.public_key
        assert sorted(p.name for p in tmp_path.iterdir()) == ["log.key"]

    def test_mode_ignores_permissive_umask(self, tmp_path: Path) -> None:
        previous = os.umask(0)
        try:
            write_signer_key(tmp_path / "log.key", SIGNER)
        finally:
            os.umask(previous)
        assert stat.S_IMODE((tmp_path / "log.key").stat().st_mode) == 0o600

    def test_refuses_to_overwrite(self, tmp_path: Path) -> None:
        path = tmp_path / "log.key"
        path.write_text("existing\n", "utf-8")
        with pytest.raises(KeyringError, match="already exists"):
            write_signer_key(path, Ed25519Signer.generate("other"))
        assert path.read_text("utf-8") == "existing\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["log.key"]

    def test_refuses_to_overwrite_through_a_dangling_symlink(self, tmp_path: Path) -> None:
        path = tmp_path / "log.key"
        path.symlink_to(tmp_path / "elsewhere")
        with pytest.raises(KeyringError):
            write_signer_key(path, SIGNER)
        assert not (tmp_path / "elsewhere").exists()

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(KeyringError):
            write_signer_key(tmp_path / "absent" / "log.key", SIGNER)


class TestLoadVerifier:
    def test_inline_key(self) -> None:
        verifier = load_verifier(VERIFIER_KEY)
        assert (verifier.name, verifier.public_key) == (SIGNER.name, SIGNER.public_key)

    @pytest.mark.parametrize("mode", [0o644, 0o600])
    def test_key_file_any_mode(self, tmp_path: Path, mode: int) -> None:
        path = _key_file(tmp_path, VERIFIER_KEY + "\n", mode)
        assert load_verifier(str(path)).public_key == SIGNER.public_key
        assert load_verifier(path).public_key == SIGNER.public_key

    def test_neither_key_nor_file(self, tmp_path: Path) -> None:
        with pytest.raises(KeyringError, match="neither"):
            load_verifier(str(tmp_path / "absent.pub"))

    def test_file_with_malformed_key(self, tmp_path: Path) -> None:
        path = _key_file(tmp_path, "not a key\n", 0o644)
        with pytest.raises(KeyringError, match=r"log\.key"):
            load_verifier(str(path))


def test_private_files_are_written_whole_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_private_file(path, b"first\n", overwrite=False)
    assert path.read_bytes() == b"first\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private_file(path, b"second\n", overwrite=False)
    assert path.read_bytes() == b"first\n"
    write_private_file(path, b"second\n", overwrite=True)
    assert path.read_bytes() == b"second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]  # no temporary file left behind
