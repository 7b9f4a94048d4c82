"""Check that the DVC remote answers before `mlops run --pull` or `mlops push`.

DVC reads an HTTP remote that cannot be reached as one that lacks the files
(fsspec's ``exists`` turns a connection error into False): `dvc repro --pull`
then says "Unable to pull data" and runs every stage again, which on CI means
retraining and registering a new model instead of restoring the pull
request's run, and exits 0. One request first tells "down" from "empty":

- ``http``/``https``: any HTTP answer below 500 (404 and 401/403 included: DVC
  asks for files, not the folder, and may hold credentials we do not send)
  counts as reachable; a refused or reset connection, a timeout, or a 5xx
  answer fails the command, naming the remote and its URL;
- a local folder: not checked (DVC creates it on the first push, so a
  missing one may just be empty);
- other schemes (s3://, gs://, ...): not checked here (no plugin for them
  is installed to test against).

The wait is the remote's own ``read_timeout``/``connect_timeout`` as DVC's
config sets them (DVC's default: 60 s each), so a remote that
accepts and never answers fails in that time, not after DVC's retries.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runner.errors import RunError

# dvc_http.HTTPFileSystem.REQUEST_TIMEOUT, the default of both timeouts
# (tests/reliability/test_remote_faults.py checks they agree).
DVC_HTTP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Remote:
    """The default DVC remote as the repository's config files set it."""

    name: str
    url: str
    timeout: float
    ssl_verify: str = "true"  # DVC's setting: true, false or a CA bundle's path


def default_remote(root: Path) -> Remote | None:
    """The repository's default remote, or None when it has none.

    Read by DVC's own config loader (every level: system, global, the
    repository's config and config.local), as `dvc repro --pull` reads it.
    """
    from dvc.config import Config, ConfigError

    try:
        config = Config(dvc_dir=str(root / ".dvc"))
    except ConfigError:
        return None  # DVC reads the same files and says what is wrong in them
    name = config["core"].get("remote")
    settings = config["remote"].get(name) if name else None
    if not settings:
        return None
    waits = [
        float(settings.get(key, DVC_HTTP_TIMEOUT))
        for key in ("connect_timeout", "read_timeout")
    ]
    verify = settings.get("ssl_verify", True)  # a bool, or a CA bundle's path
    shown = str(verify).lower() if isinstance(verify, bool) else str(verify)
    return Remote(name, str(settings["url"]), max(waits), shown)


def _tls(remote: Remote) -> ssl.SSLContext:
    """The TLS context DVC's ssl_verify asks for."""
    if remote.ssl_verify.lower() == "false":
        return ssl._create_unverified_context()  # noqa: S323 (the user said so)
    if remote.ssl_verify.lower() == "true":
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=remote.ssl_verify)


def _shown(url: str) -> str:
    """The URL without any user or password in it (they belong in no log)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _check_http(remote: Remote) -> None:
    request = urllib.request.Request(remote.url, method="HEAD")  # noqa: S310
    try:
        opened = urllib.request.urlopen(  # noqa: S310
            request, timeout=remote.timeout, context=_tls(remote)
        )
        with opened:
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:  # noqa: PLR2004
            return
        why = f"answered {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            why = f"did not answer within {remote.timeout:g}s"
        else:
            why = f"could not be reached: {exc.reason}"
    except TimeoutError:
        why = f"did not answer within {remote.timeout:g}s"
    except OSError as exc:  # a reset or dropped connection
        why = f"could not be reached: {exc}"
    raise RunError(
        f"the DVC remote {remote.name!r} at {_shown(remote.url)} {why}; nothing was "
        "pulled, pushed or run (its read_timeout and connect_timeout set how "
        f"long to wait: `dvc remote modify --local {remote.name} read_timeout 30`)"
    )


def check(root: Path) -> None:
    """Raise RunError, naming the remote and its URL, if it cannot be reached."""
    remote = default_remote(root)
    if remote is None:
        return
    if remote.url.split("://", 1)[0].lower() in ("http", "https"):
        _check_http(remote)
