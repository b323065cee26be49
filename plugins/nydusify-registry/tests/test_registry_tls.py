"""Per-host TLS trust from docker/containerd ``certs.d`` directories, against the test
kit's TLS registry: a CA placed there is trusted for that host only, a client certificate
there answers a registry that demands mutual TLS, and without either the failure is one
line that says where the CA goes or which flag skips verification.

`NYDUSIFY_CERTS_DIRS` points the lookup at temporary directories; REQUESTS_CA_BUNDLE and
CURL_CA_BUNDLE point at a file that trusts nothing, so only certs.d can make verification pass.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import NydusifyError, UsageError
from nydusify_core.testing.certs import TlsFiles, make_tls_files
from nydusify_core.testing.images import BuiltImage, expected_rootfs, push_image
from nydusify_core.testing.nydus import open_nydus_registry, pull_to_layout, unpack_nydus_image
from nydusify_core.testing.servers import RegistryServer, unique_name
from nydusify_core.testing.trees import diff_trees, snapshot
from nydusify_registry.client import ClientOptions, RegistryClient, RegistryError, RetryPolicy
from nydusify_registry.tlsconfig import CERTS_DIRS_ENV, host_tls, trust_bundle

FAST = ClientOptions(retry=RetryPolicy(attempts=2, backoff=0.01))
DATA = b"bytes behind TLS" * 64
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
IGNORE = ("dir:size",)
IGNORE_PATHS = {b"/": ("mtime", "mode", "uid", "gid", "nlink")}


@pytest.fixture
def certs_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty docker-style and containerd-style base dirs, the only ones searched; the
    environment's CA bundles point at a file that trusts nothing."""
    docker, containerd = tmp_path / "docker-certs.d", tmp_path / "containerd-certs.d"
    docker.mkdir()
    containerd.mkdir()
    monkeypatch.setenv(CERTS_DIRS_ENV, f"{docker}:{containerd}")
    bogus = tmp_path / "elsewhere.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bogus))
    return docker, containerd


def place_ca(base: Path, host: str, ca: Path, name: str = "ca.crt") -> Path:
    directory = base / host
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, directory / name)
    return directory


def test_without_certs_d_verification_fails_in_one_line_with_a_hint(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path]) -> None:
    with RegistryClient(registry_tls.host, options=FAST) as client:
        with pytest.raises(RegistryError) as info:
            client.ping()
        assert client.scheme == "https"  # never downgraded
    message = str(info.value)
    assert "\n" not in message and "certificate verify failed" in message
    assert f"{certs_dirs[0] / registry_tls.host}/ca.crt" in message
    assert "--source-insecure" in message and "--target-insecure" in message


def test_docker_certs_d_ca_makes_a_verified_client_work(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path]) -> None:
    place_ca(certs_dirs[0], registry_tls.host, registry_tls.ca_path, "registry-ca.crt")  # any *.crt name
    with RegistryClient(registry_tls.host, options=FAST) as client:
        client.ping()
        assert client.scheme == "https"
        repo = unique_name("tls")
        client.push_blob(repo, DIGEST, len(DATA), DATA)
        assert client.get_blob(repo, DIGEST) == DATA


def test_containerd_certs_d_ca_works_too(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path]) -> None:
    place_ca(certs_dirs[1], registry_tls.host, registry_tls.ca_path)
    with RegistryClient(registry_tls.host, options=FAST) as client:
        client.ping()


def test_a_ca_is_trusted_for_its_own_host_only(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path]) -> None:
    # the server certificate is valid for both names; only `localhost:PORT` trusts the CA
    other = registry_tls.host.replace("127.0.0.1", "localhost")
    place_ca(certs_dirs[0], other, registry_tls.ca_path)
    with RegistryClient(other, options=FAST) as client:
        client.ping()
    with RegistryClient(registry_tls.host, options=FAST) as client:
        with pytest.raises(RegistryError, match="certificate verify failed"):
            client.ping()


def test_certs_d_ca_adds_to_the_system_cas_without_replacing_them(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    directory = place_ca(certs_dirs[0], registry_tls.host, registry_tls.ca_path)
    info = host_tls(registry_tls.host)
    assert info.ca_files == (directory / "ca.crt",) and info.client_cert is None
    # the combined bundle keeps the base bundle's certificates
    base = tmp_path / "base.pem"
    base.write_bytes(registry_tls.ca_path.read_bytes())
    bundle = Path(str(trust_bundle(str(base), info.ca_files)))
    assert bundle.read_bytes().count(b"BEGIN CERTIFICATE") == 2


def test_verified_pull_and_convert_through_certs_d(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path], synthetic_image: BuiltImage, tmp_path: Path) -> None:
    repo = unique_name("tls")
    # skopeo may reuse layers of another compression already in this session's registry,
    # so the pushed digest, not the layout's, is what a pull must find
    pushed = push_image(synthetic_image, registry_tls.host, f"{repo}:v1")
    place_ca(certs_dirs[0], registry_tls.host, registry_tls.ca_path)
    root = pull_to_layout(f"{registry_tls.host}/{repo}:v1", tmp_path / "pulled")
    assert root.digest == pushed
    target = f"{registry_tls.host}/{repo}:v1-nydus"
    convert(ConvertOptions(source=f"{registry_tls.host}/{repo}:v1", target=target, work_dir=tmp_path / "work"))
    nydus = open_nydus_registry(target, tmp_path / "nydus")
    unpacked = unpack_nydus_image(nydus, tmp_path / "unpacked")
    diffs = diff_trees(snapshot(expected_rootfs(synthetic_image)), snapshot(unpacked), ignore=IGNORE, ignore_paths=IGNORE_PATHS)
    assert not diffs, "\n".join(diffs)


def test_convert_without_the_ca_fails_in_one_line(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path], synthetic_image: BuiltImage, tmp_path: Path) -> None:
    repo = unique_name("tls")
    push_image(synthetic_image, registry_tls.host, f"{repo}:v1")
    with pytest.raises(NydusifyError) as info:
        convert(ConvertOptions(source=f"{registry_tls.host}/{repo}:v1", target=f"{registry_tls.host}/{repo}:x", work_dir=tmp_path / "work"))
    message = str(info.value)
    assert "\n" not in message and "certificate verify failed" in message and "certs.d" in message


# --- mutual TLS ------------------------------------------------------------------------------


@dataclass
class ClientPki:
    ca: Path
    cert: Path
    key: Path


def make_client_pki(directory: Path) -> ClientPki:
    """A CA that the registry trusts for clients, and a client certificate it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    span = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("client CA")).issuer_name(name("client CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(span[0]).not_valid_after(span[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("nydusify test client")).issuer_name(name("client CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(span[0]).not_valid_after(span[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = ClientPki(directory / "client-ca.pem", directory / "client.cert", directory / "client.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pki.key.chmod(0o600)
    return pki


class MutualTlsFront:
    """A TLS terminator on loopback that demands a client certificate signed by `client_ca`
    and forwards the bytes to a plain-HTTP registry. (docker-registry can demand client
    certificates itself, but then the test kit's readiness probe cannot reach it.)"""

    def __init__(self, upstream: str, tls: TlsFiles, client_ca: Path) -> None:
        self.upstream = upstream
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tls.cert_path, tls.key_path)
        self.context.load_verify_locations(cafile=client_ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        conn = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError):
            # the alert is sent; read what the client sent meanwhile before closing, or the
            # close would reset the connection and the client might never read the alert
            plain = socket.socket(fileno=conn.detach())
            plain.settimeout(5)
            try:
                plain.shutdown(socket.SHUT_WR)
                while plain.recv(1 << 16):
                    pass
            except OSError:
                pass
            plain.close()
            return
        host, port = self.upstream.rsplit(":", 1)
        back = socket.create_connection((host, int(port)))
        reverse = threading.Thread(target=self._pipe, args=(back, conn), daemon=True)
        reverse.start()
        self._pipe(conn, back)
        reverse.join()
        conn.close()
        back.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_client_certificate_from_certs_d_answers_a_mutual_tls_registry(registry_factory, certs_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    pki = make_client_pki(tmp_path / "pki")
    tls = make_tls_files(tmp_path / "server-tls")
    # relative upload URLs: the registry behind the terminator would otherwise say http://
    registry: RegistryServer = registry_factory(config={"http": {"relativeurls": True}})
    front = MutualTlsFront(registry.host, tls, pki.ca)
    try:
        directory = place_ca(certs_dirs[0], front.host, tls.ca_path)
        with RegistryClient(front.host, options=FAST) as client:  # no client certificate yet
            with pytest.raises(RegistryError) as info:
                client.ping()
        message = str(info.value)
        assert "\n" not in message
        assert "CERTIFICATE_REQUIRED" in message and f"client.key in {directory}" in message
        shutil.copyfile(pki.cert, directory / "client.cert")
        shutil.copyfile(pki.key, directory / "client.key")
        with RegistryClient(front.host, options=FAST) as client:
            client.ping()
            repo = unique_name("mtls")
            client.push_blob(repo, DIGEST, len(DATA), DATA)
            assert client.get_blob(repo, DIGEST) == DATA
    finally:
        front.close()


# --- broken directories ------------------------------------------------------------------------


def test_a_client_certificate_without_its_key_is_a_clear_error(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    directory = certs_dirs[0] / registry_tls.host
    directory.mkdir()
    (directory / "client.cert").write_bytes(registry_tls.ca_path.read_bytes())
    with pytest.raises(UsageError, match=r"missing key .*client\.key for client certificate"):
        RegistryClient(registry_tls.host, options=FAST)


def test_a_ca_file_that_is_not_pem_is_a_clear_error(registry_tls: RegistryServer, certs_dirs: tuple[Path, Path]) -> None:
    directory = certs_dirs[0] / registry_tls.host
    directory.mkdir()
    (directory / "ca.crt").write_text("garbage\n")
    with pytest.raises(UsageError, match=r"ca\.crt holds no usable PEM certificate"):
        RegistryClient(registry_tls.host, options=FAST)

