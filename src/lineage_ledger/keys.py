"""Loading and storing note keys: where key material meets the filesystem and the environment.

Signing keys never live in the ledger database. The database is the thing the signatures protect: whoever
can write it must not also be able to re-sign a rewritten history. A signing key therefore comes from a
key file readable by its owner alone, or from an environment variable filled by a secret store, and is
held only inside a :class:`~lineage_ledger.core.crypto.Signer`. A KMS or HSM plugs in by implementing
that protocol instead of calling :func:`load_signer`; nothing else in the project touches private key
bytes.

Key files hold one C2SP signer key string (``PRIVATE+KEY+<name>+<key id>+<base64>``) on one line, as
Go's golang.org/x/mod/sumdb/note writes them. Verifier keys are public and may be passed inline.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat

from lineage_ledger.core.crypto import Ed25519Signer, Signer
from lineage_ledger.core.note import NoteVerifier, parse_signer_key, parse_verifier_key, signer_key
from lineage_ledger.errors import InputError, KeyringError

__all__ = [
    "DEFAULT_KEY_ENV_VAR",
    "load_signer",
    "load_verifier",
    "read_private_file",
    "write_private_file",
    "write_signer_key",
]

DEFAULT_KEY_ENV_VAR = "LINEAGE_LOG_KEY"

_KEY_FILE_MODE = 0o600
_GROUP_OTHER_BITS = 0o077
_MAX_KEY_FILE_SIZE = 4096


def read_private_file(
    path: str | os.PathLike[str], *, what: str, max_bytes: int, follow_symlinks: bool = True
) -> bytes:
    """The bytes of a regular file only its owner can access (like ssh, a file readable or writable by its
    group or others is refused), at most ``max_bytes``. KeyringError names ``what`` and says what is wrong.

    The mode is checked on the open descriptor, so it is the mode of the file actually read, and the file
    is opened non-blocking, so a FIFO planted at the path cannot hang the caller before the check.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(name, flags)
    except OSError as e:
        raise KeyringError(f"cannot open {what} {name}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"{what} {name} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if os.name == "posix" and mode & _GROUP_OTHER_BITS:
            raise KeyringError(
                f"{what} {name} has mode {mode:04o}, so its group or others can access it; "
                f"refusing to use it (chmod 600 {name})"
            )
        chunks = []
        size = 0
        while size <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise KeyringError(f"cannot read {what} {name}: {e.strerror}") from e
    finally:
        os.close(fd)
    if size > max_bytes:
        raise KeyringError(f"{what} {name} is larger than {max_bytes} bytes")
    return b"".join(chunks)


def _read_key_file(path: str | os.PathLike[str], *, private: bool) -> str:
    if private:
        data = read_private_file(path, what="key file", max_bytes=_MAX_KEY_FILE_SIZE)
    else:
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_KEY_FILE_SIZE + 1)
        except OSError as e:
            raise KeyringError(f"cannot read key file {os.fspath(path)}: {e.strerror}") from e
        if len(data) > _MAX_KEY_FILE_SIZE:
            raise KeyringError(f"key file {os.fspath(path)} is larger than {_MAX_KEY_FILE_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyringError(f"key file {os.fspath(path)} is not UTF-8 text") from None
    line = text.strip()
    if "\n" in line:
        raise KeyringError(f"key file {os.fspath(path)} must hold a single line")
    return line


def load_signer(path: str | os.PathLike[str] | None = None, env_var: str = DEFAULT_KEY_ENV_VAR) -> Signer:
    """Return the signer for the key in the file at ``path``, or, when ``path`` is None, in ``env_var``.

    Like ssh, refuses a key file that its group or others can access. Raises :class:`KeyringError` naming
    the source (never the key) if the key is missing, unreadable or malformed.
    """
    if path is not None:
        key_text = _read_key_file(path, private=True)
        source = f"key file {os.fspath(path)}"
    else:
        env_value = os.environ.get(env_var)
        if not env_value:
            raise KeyringError(f"no signing key: pass a key file path or set the environment variable {env_var}")
        key_text = env_value.strip()
        source = f"environment variable {env_var}"
    try:
        return parse_signer_key(key_text)
    except InputError as e:
        raise KeyringError(f"{source} does not hold a valid signer key: {e}") from None


def write_signer_key(path: str | os.PathLike[str], signer: Ed25519Signer) -> None:
    """Write ``signer``'s key to a new file at ``path`` with mode 0600, atomically.

    The key is written and fsynced under a temporary name created with O_CREAT|O_EXCL and mode 0600, then
    hard-linked to ``path``, which fails if ``path`` exists: an existing key is never overwritten and
    ``path`` never holds a partial key, even after a crash.
    """
    target = os.fspath(path)
    data = (signer_key(signer.name, signer.private_seed()) + "\n").encode("utf-8")
    try:
        write_private_file(target, data, overwrite=False)
    except FileExistsError:
        raise KeyringError(f"key file {target} already exists; refusing to overwrite a key") from None
    except OSError as e:
        raise KeyringError(f"cannot write key file {target}: {e.strerror}") from e


def write_private_file(path: str | os.PathLike[str], data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically: ``path`` holds the old bytes or all the new ones.

    The bytes are written and fsynced under a temporary name in the same directory, created with
    O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, then renamed over ``path`` (``overwrite``) or hard-linked to it,
    which raises FileExistsError if ``path`` exists; the directory is fsynced last. Other failures raise
    OSError; the temporary file never survives.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    temporary = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, _KEY_FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the new directory entry durable; not every platform lets a directory be opened for this.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_verifier(path_or_text: str | os.PathLike[str]) -> NoteVerifier:
    """Return the verifier for a verifier key given inline (``<name>+<key id>+<base64>``) or in a file.

    A ``str`` that parses as a verifier key is used as one; anything else is read as a path.
    """
    if isinstance(path_or_text, str):
        try:
            return parse_verifier_key(path_or_text.strip())
        except InputError as e:
            inline_error = e
        if not os.path.isfile(path_or_text):
            raise KeyringError(
                f"{path_or_text!r} is neither a verifier key ({inline_error}) nor a key file"
            ) from inline_error
    key_text = _read_key_file(path_or_text, private=False)
    try:
        return parse_verifier_key(key_text)
    except InputError as e:
        raise KeyringError(f"key file {os.fspath(path_or_text)} does not hold a valid verifier key: {e}") from e
