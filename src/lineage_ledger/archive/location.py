"""Where archive files live: a local directory (the default) or an S3-compatible bucket, named by a URL.

* a path, or ``file:///path``: a directory; a file is written to a temporary name beside its final one,
  flushed to disk, renamed into place and the directory flushed, so a crash leaves the whole file or none;
* ``s3://bucket/prefix?endpoint=http://host:port&region=...``: an object store through pyarrow's
  S3FileSystem; one PUT writes a whole object or nothing. Credentials come from the environment
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), never from the URL, so the URL can be recorded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from lineage_ledger.archive.crash import crash_point
from lineage_ledger.errors import InputError, NotFoundError, StoreError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["ArchiveLocation"]


class ArchiveLocation:
    """An archive location: read, write (whole files only), list and delete files by their relative name."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local: Path | None = None
        self._fs: pafs.FileSystem | None = None
        self._base = ""
        if url.startswith("s3://"):
            self._open_s3(url)
        elif "://" in url and not url.startswith("file://"):
            raise InputError("archive", f"{url!r} is neither a directory, a file:// URL nor an s3:// URL")
        else:
            path = url.removeprefix("file://")
            if not path:
                raise InputError("archive", "the archive location names no directory")
            self._local = Path(path)

    def _open_s3(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.netloc:
            raise InputError("archive", f"{url!r} names no bucket")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise InputError("archive", f"{url!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
        try:
            import pyarrow.fs as pafs
        except ModuleNotFoundError as e:
            raise StoreError("the archive needs pyarrow: pip install 'lineage-ledger[archive]'") from e
        options: dict[str, object] = {"region": query.get("region", "us-east-1")}
        endpoint = query.get("endpoint")
        if endpoint:
            ep = urlsplit(endpoint)
            if ep.scheme not in ("http", "https") or not ep.netloc:
                raise InputError("archive", f"endpoint {endpoint!r} is not an http(s)://host:port URL")
            options.update(endpoint_override=ep.netloc, scheme=ep.scheme)
        access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if access and secret:
            options.update(access_key=access, secret_key=secret)
        try:
            self._fs = pafs.S3FileSystem(**options)
        except Exception as e:  # pyarrow raises plain ArrowInvalid/OSError subclasses
            raise StoreError(f"cannot open the archive {url}: {e}") from e
        self._base = (parts.netloc + parts.path).rstrip("/")

    def describe(self) -> str:
        """The location as a user wrote it (never holds a credential)."""
        return self.url

    def _key(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise InputError("file", f"{name!r} is not a file name under the archive")
        return f"{self._base}/{name}"

    def write(self, name: str, data: bytes) -> None:
        """Store ``data`` as the file ``name``, whole or not at all (an existing file is replaced whole)."""
        if self._local is not None:
            target = self._local / name
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".{target.name}.*.tmp"):  # a write a crash cut short
                stale.unlink(missing_ok=True)
            temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                with open(temp, "wb") as out:
                    out.write(data[: len(data) // 2])
                    out.flush()
                    crash_point("writing")
                    out.write(data[len(data) // 2 :])
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, target)
                directory = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
            except OSError as e:
                temp.unlink(missing_ok=True)
                raise StoreError(f"cannot write the archive file {target}: {e}") from e
            return
        assert self._fs is not None
        try:
            with self._fs.open_output_stream(self._key(name)) as out:
                out.write(data)
        except Exception as e:
            raise StoreError(f"cannot write the archive file {name} to {self.url}: {e}") from e

    def read(self, name: str) -> bytes:
        """The bytes of the file ``name``; NotFoundError if there is none."""
        if self._local is not None:
            try:
                return (self._local / name).read_bytes()
            except FileNotFoundError as e:
                raise NotFoundError(f"the archive file {name} is missing from {self.url}") from e
            except OSError as e:
                raise StoreError(f"cannot read the archive file {name}: {e}") from e
        assert self._fs is not None
        try:
            with self._fs.open_input_stream(self._key(name)) as src:
                return bytes(src.read())
        except FileNotFoundError as e:
            raise NotFoundError(f"the archive file {name} is missing from {self.url}") from e
        except Exception as e:
            raise StoreError(f"cannot read the archive file {name} from {self.url}: {e}") from e

    def delete(self, name: str) -> None:
        """Delete the file ``name`` (nothing happens if it is already gone)."""
        if self._local is not None:
            (self._local / name).unlink(missing_ok=True)
            return
        assert self._fs is not None
        try:
            self._fs.delete_file(self._key(name))
        except FileNotFoundError:
            return
        except Exception as e:
            raise StoreError(f"cannot delete the archive file {name} from {self.url}: {e}") from e

    def files(self) -> list[str]:
        """Every ``.parquet`` file under the location, by relative name, sorted."""
        if self._local is not None:
            if not self._local.exists():
                return []
            return sorted(p.relative_to(self._local).as_posix() for p in self._local.rglob("*.parquet"))
        assert self._fs is not None
        import pyarrow.fs as pafs

        try:
            infos = self._fs.get_file_info(pafs.FileSelector(self._base, recursive=True, allow_not_found=True))
        except Exception as e:
            raise StoreError(f"cannot list the archive {self.url}: {e}") from e
        prefix = self._base + "/"
        return sorted(i.path.removeprefix(prefix) for i in infos if i.path.endswith(".parquet"))

    def dataset_source(self, names: list[str]) -> tuple[list[str], pafs.FileSystem]:
        """Paths and filesystem for a pyarrow dataset over the files ``names``."""
        if self._local is not None:
            import pyarrow.fs as pafs

            return [str((self._local / n).absolute()) for n in names], pafs.LocalFileSystem()
        assert self._fs is not None
        return [self._key(n) for n in names], self._fs
