"""Real servers on loopback for tests: the distribution registry (4 flavours) and moto's S3.

Every server binds 127.0.0.1 on a free port, is started lazily (session fixtures start only
when a test asks for them) and is always stopped: processes run in their own process group
and are killed as a group at teardown, at interpreter exit, and when pytest itself dies
(PR_SET_PDEATHSIG; so start servers from a thread that outlives them, e.g. the main one).
A server that does not come up within a bounded time raises `ServerStartError` with the
tail of its log.

Clients: `REQUESTS_CA_BUNDLE` silently overrides `Session.verify` in requests, and proxy
variables would route loopback through a proxy. Use `server.session()` (trust_env off,
verify set), or pass `verify=server.verify` on every request. While any kit server runs,
`NO_PROXY`/`no_proxy` include 127.0.0.1 and localhost.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from nydusify_core.testing.certs import make_tls_files
from nydusify_core.testing.tokenserver import ALL_ACTIONS, TokenServer

if TYPE_CHECKING:
    import requests

__all__ = [
    "ServerStartError",
    "TEST_USER",
    "READONLY_USER",
    "RegistryServer",
    "S3Server",
    "start_registry",
    "start_s3_server",
    "unique_name",
    "registry_plain",
    "registry_basic_auth",
    "registry_tls",
    "registry_token_auth",
    "registry_factory",
    "s3_server",
    "s3_bucket",
    "s3_backend_config",
    "BACKEND_OBJECT_PREFIX",
    "loopback_no_proxy",
]

BACKEND_OBJECT_PREFIX = "nydus/blobs/"  # object_prefix of the *_backend_config fixtures

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT = 30.0  # seconds; generous for loaded CI machines, only paid on failure
STOP_TIMEOUT = 5.0
LOOPBACK = "127.0.0.1"
TEST_USER = "nydus"
READONLY_USER = "reader"


class ServerStartError(RuntimeError):
    """A kit server failed to start; the message carries the tail of its log."""


def unique_name(prefix: str = "test") -> str:
    """A name no other test uses (repositories, buckets) so session servers can be shared."""
    return f"{prefix}-{secrets.token_hex(4)}"


# -- processes ----------------------------------------------------------------------------------

_live: set["_Process"] = set()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _parent_death_signal() -> Callable[[], None] | None:
    """A child-side hook (resolved here, in the parent: the child must not import or dlopen
    while other threads may hold locks) that makes the server get SIGKILL when the thread
    that started it dies, so a killed pytest leaves no servers behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no prctl: teardown and atexit still apply
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return hook


_PDEATHSIG_HOOK = _parent_death_signal()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class _Process:
    """A server subprocess in its own process group, logging to a file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True,
            preexec_fn=_PDEATHSIG_HOOK,
        )
        _live.add(self)

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, name: str, probe: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                self.stop()
                raise ServerStartError(
                    f"{name} exited with status {self.popen.returncode} while starting; "
                    f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{name} not ready after {timeout:.0f}s; log {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it if it lingers; idempotent."""
        if self.running():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(STOP_TIMEOUT)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # the leader may be gone while children it forked still hold the group
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.popen.wait()
        self._log.close()
        _live.discard(self)


@atexit.register
def _stop_all() -> None:
    for proc in list(_live):
        proc.stop()


def _child_env(drop_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
    for var in ("NO_PROXY", "no_proxy"):
        env[var] = _with_loopback(env.get(var, ""))
    return env


def _with_loopback(value: str) -> str:
    hosts = [h for h in value.split(",") if h.strip()]
    for host in (LOOPBACK, "localhost"):
        if host not in hosts:
            hosts.append(host)
    return ",".join(hosts)


def _http_probe(url: str, verify: str | bool, ok: tuple[int, ...]) -> Callable[[], bool]:
    import requests

    session = requests.Session()
    session.trust_env = False

    def probe() -> bool:
        try:
            return session.get(url, verify=verify, timeout=2).status_code in ok
        except requests.RequestException:
            return False

    return probe


def _session(verify: str | bool, auth: tuple[str, str] | None) -> "requests.Session":
    import requests

    session = requests.Session()
    session.trust_env = False  # no REQUESTS_CA_BUNDLE, no proxies, no .netrc
    session.verify = verify
    session.auth = auth
    return session


# -- registry -----------------------------------------------------------------------------------


@dataclass
class RegistryServer:
    """A running `docker-registry`. `host` is `127.0.0.1:PORT`, what image references use."""

    host: str
    scheme: str
    auth: str  # "none", "basic" or "token"
    root: Path  # storage root directory (filesystem driver)
    config_path: Path
    log_path: Path
    username: str | None = None
    password: str | None = None
    ca_path: Path | None = None
    token_server: TokenServer | None = None
    _process: _Process | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def verify(self) -> str | bool:
        """What to pass as requests' `verify=` (the CA path for TLS)."""
        return str(self.ca_path) if self.ca_path else True

    @property
    def credentials(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    def session(self, *, authenticated: bool = True) -> "requests.Session":
        """A requests session that ignores env CA bundles and proxies; Basic auth if `basic`."""
        return _session(self.verify, self.credentials if authenticated and self.auth == "basic" else None)

    def bearer_token(self, scope: str, *, username: str | None = None, password: str | None = None) -> str:
        """A token for `scope` (e.g. `repository:foo:pull,push`) straight from the token server."""
        if self.token_server is None:
            raise ValueError(f"registry {self.host} does not use token auth")
        response = _session(True, (username or self.username or "", password or self.password or "")).get(
            self.token_server.realm, params={"service": self.token_server.service, "scope": scope}, timeout=10
        )
        response.raise_for_status()
        return str(response.json()["token"])

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def stop(self) -> None:
        """Stop the registry (and its token server); idempotent."""
        if self._process is not None:
            self._process.stop()
        if self.token_server is not None:
            self.token_server.stop()


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _htpasswd_line(username: str, password: str) -> str:
    """A bcrypt entry (the only scheme distribution accepts); cost 4 keeps requests fast."""
    import bcrypt

    return f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"


def start_registry(
    workdir: Path,
    *,
    auth: str = "none",
    tls: bool = False,
    config: dict[str, Any] | None = None,
    storage: Path | None = None,
    username: str = TEST_USER,
    password: str | None = None,
) -> RegistryServer:
    """Start `docker-registry serve` on a free loopback port and wait until `/v2/` answers.

    `auth` is "none", "basic" (htpasswd, bcrypt) or "token" (a kit `TokenServer`, which also
    knows a pull-only user `reader`). `config` is deep-merged over the generated config, for
    fault injection (e.g. `{"storage": {"maintenance": {"readonly": {"enabled": True}}}}`).
    The caller must `stop()` it (fixtures do).
    """
    if auth not in ("none", "basic", "token"):
        raise ValueError(f"unknown registry auth {auth!r}")
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise ServerStartError(f"{REGISTRY_BINARY} not found on PATH (Debian package docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    root = storage or workdir / "storage"
    root.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(12)
    server = RegistryServer(
        host="", scheme="https" if tls else "http", auth=auth, root=root,
        config_path=workdir / "config.yml", log_path=workdir / "registry.log",
        username=username if auth != "none" else None, password=password if auth != "none" else None,
    )

    settings: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": "", "secret": secrets.token_hex(16), "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "health": {"storagedriver": {"enabled": False}},
    }
    if tls:
        files = make_tls_files(workdir / "tls")
        server.ca_path = files.ca_path
        settings["http"]["tls"] = {"certificate": str(files.cert_path), "key": str(files.key_path)}
    if auth == "basic":
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(_htpasswd_line(username, password))
        settings["auth"] = {"htpasswd": {"realm": "nydusify-test-registry", "path": str(htpasswd)}}
    elif auth == "token":
        token_server = TokenServer(workdir / "token")
        token_server.add_user(username, password, ALL_ACTIONS)
        token_server.add_user(READONLY_USER, password, {"pull"})
        server.token_server = token_server
        settings["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(token_server.rootcertbundle),
            }
        }
    _deep_merge(settings, config or {})

    last_error: ServerStartError | None = None
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = _free_port()
        server.host = f"{LOOPBACK}:{port}"
        settings["http"]["addr"] = server.host
        server.config_path.write_text(json.dumps(settings, indent=2))  # JSON is valid YAML
        process = _Process([binary, "serve", str(server.config_path)], server.log_path,
                           _child_env(("REGISTRY_", "OTEL_")), workdir)
        server._process = process
        try:
            process.wait_ready(f"registry {server.host}",
                               _http_probe(f"{server.url}/v2/", server.verify, (200, 401)))
            return server
        except ServerStartError as exc:
            last_error = exc
            if "address already in use" not in str(exc):
                break
    server.stop()
    assert last_error is not None
    raise last_error


# -- S3 (moto) ----------------------------------------------------------------------------------

_S3_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
# create_user + put_user_policy + create_access_key; after these moto checks every signature
_BOOTSTRAP_ACTIONS = 3


@dataclass
class S3Server:
    """moto's server with signature checking on; only `access_key_id`/`secret` get in."""

    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: str
    log_path: Path
    _process: _Process | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.endpoint.split("://", 1)[1]

    def client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (path-style, explicit credentials, no proxies)."""
        return _boto3_client(
            "s3", self.endpoint, self.region,
            access_key_id or self.access_key_id, secret_access_key or self.secret_access_key,
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default) and return its name."""
        name = name or unique_name("nydus-test")
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self.client().create_bucket(**kwargs)
        return name

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()


def _boto3_client(service: str, endpoint: str, region: str, key: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=None,
        config=Config(
            s3={"addressing_style": "path"},
            proxies={},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def start_s3_server(workdir: Path, *, region: str = "us-east-1") -> S3Server:
    """Start `python -m moto.server` on a free loopback port; create an IAM user with an
    access key allowed `s3:*`; from then on moto rejects requests not signed with that key."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "moto.log"
    env = _child_env(("AWS_", "MOTO_", "INITIAL_NO_AUTH"))
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_BOOTSTRAP_ACTIONS)
    last_error: ServerStartError | None = None
    for _attempt in range(3):
        port = _free_port()
        endpoint = f"http://{LOOPBACK}:{port}"
        process = _Process([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                           log_path, env, workdir)
        try:
            # the dashboard endpoint does not count as an action
            process.wait_ready(f"moto {endpoint}", _http_probe(f"{endpoint}/moto-api/", True, (200,)))
            break
        except ServerStartError as exc:
            last_error = exc
            if "address already in use" not in str(exc).lower():
                raise
    else:
        assert last_error is not None
        raise last_error

    try:
        iam = _boto3_client("iam", endpoint, region, "bootstrap", "bootstrap")
        user = unique_name("nydus-s3")
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(_S3_POLICY))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        server = S3Server(endpoint, region, key["AccessKeyId"], key["SecretAccessKey"], log_path, process)
        _check_signatures_enforced(server)
    except Exception as exc:
        process.stop()
        raise ServerStartError(f"moto bootstrap failed: {exc}; log {log_path}:\n{_log_tail(log_path)}") from exc
    return server


def _check_signatures_enforced(server: S3Server) -> None:
    """If moto counted our bootstrap differently, a forged request would get through; refuse."""
    from botocore.exceptions import ClientError

    try:
        server.client(secret_access_key="not-the-secret").list_buckets()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "SignatureDoesNotMatch":
            return
        raise
    raise ServerStartError("moto accepted a request signed with a wrong secret; signature checks are off")


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def loopback_no_proxy() -> Iterator[None]:
    """Clients under test honour proxy variables; loopback servers must never go through one."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("NO_PROXY", "no_proxy"):
            mp.setenv(var, _with_loopback(os.environ.get(var, "")))
        yield


def _registry_fixture(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp(name), **kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory: pytest.TempPathFactory, loopback_no_proxy: None) -> Iterator[RegistryServer]:
    """An anonymous http registry (pull, push, delete) shared by the session."""
    yield from _registry_fixture(tmp_path_factory, "registry-plain")


@pytest.fixture(scope="session")
def registry_basic_auth(tmp_path_factory: pytest.TempPathFactory, loopback_no_proxy: None) -> Iterator[RegistryServer]:
    """An http registry with htpasswd (bcrypt) Basic auth; `username`/`password` get in."""
    yield from _registry_fixture(tmp_path_factory, "registry-basic", auth="basic")


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory, loopback_no_proxy: None) -> Iterator[RegistryServer]:
    """An anonymous https registry; clients must trust `ca_path` (pass `verify=` per request)."""
    yield from _registry_fixture(tmp_path_factory, "registry-tls", tls=True)


@pytest.fixture(scope="session")
def registry_token_auth(tmp_path_factory: pytest.TempPathFactory, loopback_no_proxy: None) -> Iterator[RegistryServer]:
    """An http registry behind a kit token server (Bearer flow); `reader` may only pull."""
    yield from _registry_fixture(tmp_path_factory, "registry-token", auth="token")


@pytest.fixture
def registry_factory(tmp_path_factory: pytest.TempPathFactory, loopback_no_proxy: None) -> Iterator[Callable[..., RegistryServer]]:
    """`registry_factory(auth=..., tls=..., config=..., storage=...)` starts an extra registry
    (see `start_registry`) that is stopped when the test ends; for fault injection."""
    started: list[RegistryServer] = []

    def factory(**kwargs: Any) -> RegistryServer:
        server = start_registry(tmp_path_factory.mktemp("registry-extra"), **kwargs)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory, loopback_no_proxy: None) -> Iterator[S3Server]:
    """moto S3 with signature checking; use `client()` or its endpoint/region/keys."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on `s3_server` for one test."""
    return s3_server.create_bucket()


@pytest.fixture
def s3_backend_config(s3_server: S3Server, s3_bucket: str) -> dict[str, str]:
    """`--backend-config` of the `s3` backend for a fresh bucket, objects under BACKEND_OBJECT_PREFIX."""
    return {
        "endpoint": s3_server.host, "scheme": "http", "region": s3_server.region, "bucket_name": s3_bucket,
        "object_prefix": BACKEND_OBJECT_PREFIX, "access_key_id": s3_server.access_key_id,
        "access_key_secret": s3_server.secret_access_key,
    }
