"""Where a store lives: a local directory, or an fsspec URL (object stores have no rename).

The store and its lease talk to files only through a ``Backend``; which one is chosen
once, from ``store.path``. Paths inside the store are relative, with ``/``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.request import url2pathname

from sweep.errors import ConfigError, StoreError
from sweep.pids import pid_alive


class Backend(ABC):
    """The files of one store, named relative to its root."""

    location: str
    """What zarr and xarray open: a local path or a URL."""
    builds_aside: bool
    """A new store is built elsewhere and renamed into place (its lease file inside), rather
    than built in place after its lease is taken."""

    @property
    @abstractmethod
    def path(self) -> Path | str:
        """What the user is shown and given back: a resolved Path, or the URL."""

    def __str__(self) -> str:
        return self.location

    @abstractmethod
    def exists(self, rel: str = "") -> bool: ...

    @abstractmethod
    def is_dir(self) -> bool: ...

    @abstractmethod
    def entries(self) -> list[str]:
        """Names directly inside the root."""

    @abstractmethod
    def read(self, rel: str) -> bytes: ...

    @abstractmethod
    def write(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` whole (readers see the old or the new bytes, never a mix, where
        the filesystem allows)."""

    @abstractmethod
    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` only if it does not exist; False if it did."""

    def read_tagged(self, rel: str) -> tuple[bytes, str]:
        """The bytes of ``rel`` and a tag that changes whenever they are replaced."""
        data = self.read(rel)
        return data, hashlib.sha256(data).hexdigest()

    def replace_if(self, rel: str, data: bytes, tag: str) -> bool:
        """Replace ``rel`` only if it still has ``tag`` (compare-and-swap); False if it
        changed or is gone. Here a read, a compare and a write: atomic among processes of
        one host under ``locked``; object stores that can do better override it."""
        try:
            if self.read_tagged(rel)[1] != tag:
                return False
        except FileNotFoundError:
            return False
        self.write(rel, data)
        return True

    @abstractmethod
    def remove(self, rel: str) -> None: ...

    @abstractmethod
    def files(self, rel: str) -> set[str]:
        """Every file under ``rel``, as paths relative to ``rel``."""

    @abstractmethod
    def create(self, populate: Callable[[str], None], replace: bool) -> None:
        """Make a new store: ``populate(location)`` writes it; ``replace`` swaps it in for
        the store at the root (which the caller holds the lease of)."""

    @abstractmethod
    def check_writable(self) -> None:
        """Raise a StoreError naming the path when a store cannot be written there."""

    def check_reachable(self) -> None:
        """Raise a StoreError naming what to fix when the store's place cannot be reached
        (an object store's bucket, credentials, endpoint); local paths always can."""
        return None

    @contextlib.contextmanager
    def locked(self, rel: str) -> Iterator[None]:
        """A critical section among processes of this host (no-op where unsupported)."""
        yield


def backend_for(path: str) -> Backend:
    """``store.path`` as a Backend: URLs through fsspec, local paths resolved."""
    if path.startswith("file://"):  # a local path in URL form: atomic creation applies
        path = url2pathname(path.removeprefix("file://"))
    if "://" not in path:
        return LocalBackend(Path(path).expanduser().resolve())
    try:
        import fsspec  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"store.path: {path} is a URL; URLs need fsspec (pip install 'patchsweep[cluster]'"
            " and the filesystem's package, e.g. s3fs)"
        ) from None
    return FsspecBackend(path)


class LocalBackend(Backend):
    """A directory: built in a temporary sibling and renamed into place."""

    builds_aside = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    @property
    def path(self) -> Path:
        return self.root

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def exists(self, rel: str = "") -> bool:
        return self._p(rel).exists()

    def is_dir(self) -> bool:
        return self.root.is_dir()

    def entries(self) -> list[str]:
        return sorted(os.listdir(self.root))

    def read(self, rel: str) -> bytes:
        return self._p(rel).read_bytes()

    def write(self, rel: str, data: bytes) -> None:
        target = self._p(rel)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        target = self._p(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def remove(self, rel: str) -> None:
        self._p(rel).unlink(missing_ok=True)

    def files(self, rel: str) -> set[str]:
        base = self._p(rel)
        if not base.is_dir():
            return set()
        out = set()
        for directory, _, names in os.walk(base):
            prefix = Path(directory).relative_to(base)
            out |= {(prefix / n).as_posix() for n in names}
        return out

    def create(self, populate: Callable[[str], None], replace: bool) -> None:
        parent = self.root.parent
        parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(parent, self.root.name)
        tmp = parent / f".{self.root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            populate(str(tmp))
            if replace:
                old = parent / f".{self.root.name}.old-{os.getpid()}"
                os.rename(self.root, old)
                os.rename(tmp, self.root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, self.root)  # fails if another driver got there first
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(str(self.root)) from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def check_writable(self) -> None:
        here = self.root if self.root.exists() else _existing_parent(self.root)
        if here.is_file():
            if here == self.root:
                return  # is_store names it: a file, not a store
            raise StoreError(f"store.path: {here} is a file, so {self.root} cannot be created")
        try:  # a real write: permission bits, read-only mounts and root all answer truly
            fd, probe = tempfile.mkstemp(dir=here, prefix=".patchsweep-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise StoreError(
                f"store.path: cannot write in {here} ({e.strerror}); choose a writable store.path"
            ) from None

    @contextlib.contextmanager
    def locked(self, rel: str) -> Iterator[None]:
        import fcntl

        target = self._p(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _existing_parent(path: Path) -> Path:
    for p in path.parents:
        if p.exists():
            return p
    return Path("/")


def remove_leftovers(parent: Path, name: str) -> list[Path]:
    """Temporary directories of store creations whose process died (``.NAME.tmp-PID``,
    ``.NAME.old-PID``): patchsweep made them, nobody else will finish them."""

    removed = []
    for d in parent.glob(f".{name}.*-*"):
        kind, _, pid = d.name.removeprefix(f".{name}.").partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class FsspecBackend(Backend):
    """An fsspec URL: no rename, so a store is built in place with its fingerprint written
    last (a half-made store is never taken for a finished one)."""

    builds_aside = False

    def __init__(self, url: str) -> None:
        from fsspec.core import url_to_fs

        self.location = url
        try:  # no listings cache: another process writes the store while we watch it
            self.fs, self.root = url_to_fs(url, use_listings_cache=False)
        except (ImportError, ValueError) as e:  # its package missing, or an unknown scheme
            raise ConfigError(f"store.path: {url}: {e}") from None
        self.root = self.root.rstrip("/")

    @property
    def path(self) -> str:
        return self.location

    def _p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str = "") -> bool:
        return bool(self.fs.exists(self._p(rel)))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.root))

    def entries(self) -> list[str]:
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))

    def read(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self._p(rel)))

    def write(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(rel), data)

    @property
    def _s3(self) -> bool:
        protocol = self.fs.protocol
        return "s3" in (protocol if isinstance(protocol, tuple | list) else (protocol,))

    def read_tagged(self, rel: str) -> tuple[bytes, str]:
        """On S3 the tag is the object's ETag, read before its bytes (so the bytes are at
        least as new as the tag: a compare-and-swap on a newer object fails, never the
        reverse)."""
        if not self._s3:
            return super().read_tagged(rel)
        tag = str(self.fs.info(self._p(rel), refresh=True)["ETag"])
        return self.read(rel), tag

    def replace_if(self, rel: str, data: bytes, tag: str) -> bool:
        """On S3 an atomic compare-and-swap: a PUT with ``If-Match: ETAG``, which the
        server refuses if another writer replaced the object first."""
        if not self._s3:
            return super().replace_if(rel, data, tag)
        try:
            self.fs.pipe_file(self._p(rel), data, IfMatch=tag)
        except FileNotFoundError:
            return False
        except OSError as e:
            code = getattr(e.__cause__, "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        try:
            with self.fs.open(self._p(rel), "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):  # no exclusive mode here
            if self.exists(rel):
                return False
            self.write(rel, data)
            return True

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self._p(rel))

    def files(self, rel: str) -> set[str]:
        base = self._p(rel)
        if not self.fs.exists(base):
            return set()
        prefix = self.fs._strip_protocol(base).rstrip("/") + "/"
        found: Any = self.fs.find(base)
        return {str(p)[len(prefix) :] for p in found if str(p).startswith(prefix)}

    def create(self, populate: Callable[[str], None], replace: bool) -> None:
        if replace:  # keep the lease file, which the caller holds
            for name in self.entries():
                if name != "_patchsweep":
                    self.fs.rm(self._p(name), recursive=True)
            for rel in self.files("_patchsweep"):
                if not rel.startswith("lease"):
                    self.fs.rm(self._p(f"_patchsweep/{rel}"))
        populate(self.location)

    def check_writable(self) -> None:
        self.check_reachable()  # object stores report write permissions on the first write

    def check_reachable(self) -> None:
        """Reach the store's bucket (or its parent directory) once, before the model
        loads or a store is read: a missing bucket, missing credentials or an unreachable
        endpoint is one line here rather than a traceback later."""
        bucketed = _has_buckets(self.fs.protocol)
        where = self.root.split("/", 1)[0] if bucketed else self.root.rsplit("/", 1)[0]
        try:
            self.fs.ls(where, detail=False)
        except FileNotFoundError:
            if bucketed:
                raise StoreError(
                    f"store.path: {self.location}: bucket {where!r} does not exist"
                    f"{self._at()}; create it, or choose a bucket that exists"
                ) from None
        except Exception as e:
            if (message := object_store_error(e, self.location, self._at())) is None:
                raise
            raise StoreError(message) from None

    def _at(self) -> str:
        """Where the object store is, for messages (the endpoint, never credentials)."""
        kwargs = getattr(self.fs, "client_kwargs", None) or {}
        endpoint = kwargs.get("endpoint_url") or getattr(self.fs, "endpoint_url", None)
        if not endpoint and self._s3:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return f" at {endpoint}" if endpoint else ""


def _has_buckets(protocol: str | tuple[str, ...]) -> bool:
    names = protocol if isinstance(protocol, tuple | list) else (protocol,)
    return bool({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"} & set(names))


def object_store_error(e: BaseException, url: str, at: str = "") -> str | None:
    """One line for an object store's credential or connection failure (botocore's and
    aiohttp's errors, told apart by name so that neither is imported here); None for
    any other error."""
    names = {c.__name__ for c in type(e).__mro__}
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return (
            f"store.path: {url}: no credentials for the object store{at} ({detail}); set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the environment"
        )
    if isinstance(e, PermissionError) or "InvalidAccessKeyId" in detail:
        return (
            f"store.path: {url}: the object store{at} refused access ({detail}); check the "
            "credentials in the environment and the bucket's permissions"
        )
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                "ServerDisconnectedError", "ReadTimeoutError"}:  # fmt: skip
        return (
            f"store.path: {url}: cannot reach the object store{at} ({detail}); check "
            "AWS_ENDPOINT_URL and the network. Units already written are kept: run the "
            "same command again once it is reachable"
        )
    return None
