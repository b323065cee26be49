"""Docker reference parsing and normalisation (docker/distribution's `ParseNormalizedNamed`)."""

from __future__ import annotations

import pytest

from nydusify_core.errors import UsageError
from nydusify_registry.reference import (
    DOCKER_HUB_API_HOST,
    InvalidReferenceError,
    Reference,
    is_loopback_host,
    is_registry_reference,
    parse_reference,
    target_from_suffix,
)
from nydusify_registry.reference import accepts

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
        ("docker://nginx", "docker.io/library/nginx:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("127.0.0.1:5000/a/b/c:v1.0", "127.0.0.1:5000/a/b/c:v1.0"),
        ("[::1]:5000/app:x", "[::1]:5000/app:x"),
        ("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"),
        ("Registry.Example/app", "Registry.Example/app:latest"),
        ("abc/a_b__c-d--e.f:_tag.1-2", "docker.io/abc/a_b__c-d--e.f:_tag.1-2"),
    ],
)
def test_references_normalise_like_the_docker_cli(text: str, normalised: str) -> None:
    assert str(parse_reference(text)) == normalised


def test_digest_reference_gets_no_default_tag() -> None:
    ref = parse_reference(f"nginx@{DIGEST}")
    assert ref.tag is None and ref.digest == DIGEST
    assert str(ref) == f"docker.io/library/nginx@{DIGEST}"
    assert ref.reference == DIGEST


def test_tag_and_digest_are_both_kept_and_the_digest_is_what_is_fetched() -> None:
    ref = parse_reference(f"localhost:5000/app:v1@{DIGEST}")
    assert (ref.tag, ref.digest, ref.reference) == ("v1", DIGEST, DIGEST)


def test_docker_hub_is_reached_at_its_api_host() -> None:
    assert parse_reference("nginx").registry == DOCKER_HUB_API_HOST
    assert parse_reference("localhost:5000/app").registry == "localhost:5000"


def test_familiar_form_drops_the_implied_parts() -> None:
    assert parse_reference("docker.io/library/nginx").familiar() == "nginx:latest"
    assert parse_reference("user/app:1").familiar() == "user/app:1"
    assert parse_reference("ghcr.io/org/app:v1").familiar() == "ghcr.io/org/app:v1"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("Nginx", "lowercase"),
        ("ghcr.io/Org/app", "lowercase"),
        ("nginx:", "invalid tag"),
        ("nginx:-x", "invalid tag"),
        ("nginx:" + "a" * 129, "invalid tag"),
        ("nginx@sha256:abc", "invalid digest"),
        ("nginx@md5:" + "a" * 32, "only sha256"),
        ("nginx@sha256:" + "AB" * 32, "only sha256"),
        ("a" * 64, "image ID"),
        ("foo//bar", "component"),
        ("foo/-bar", "component"),
        ("foo bar", "whitespace"),
        ("localhost:99999/app", "port"),
        ("oci:/tmp/layout", "transport"),
        ("dir:/tmp/x", "transport"),
        ("docker-archive:/tmp/x.tar", "transport"),
        ("x/" + "a" * 260, "longer than 255"),
    ],
)
def test_invalid_references_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    assert reason in str(info.value)
    assert isinstance(info.value, UsageError)


def test_target_suffix_extends_the_normalised_source_tag() -> None:
    assert str(target_from_suffix("localhost:5000/nginx", "-nydus")) == "localhost:5000/nginx:latest-nydus"
    assert str(target_from_suffix("nginx:1.25", "-nydus")) == "docker.io/library/nginx:1.25-nydus"


def test_target_suffix_rejects_a_digest_source_and_an_empty_suffix() -> None:
    with pytest.raises(InvalidReferenceError, match="digest"):
        target_from_suffix(f"nginx@{DIGEST}", "-nydus")
    with pytest.raises(InvalidReferenceError, match="empty"):
        target_from_suffix("nginx", "")


def test_target_suffix_must_keep_a_valid_tag() -> None:
    with pytest.raises(InvalidReferenceError, match="invalid tag"):
        target_from_suffix("nginx:" + "a" * 120, "-" + "b" * 10)


def test_with_tag_and_with_digest_validate() -> None:
    ref = parse_reference("localhost:5000/app:v1")
    assert str(ref.with_tag("v2")) == "localhost:5000/app:v2"
    assert str(ref.with_digest(DIGEST)) == f"localhost:5000/app:v1@{DIGEST}"
    with pytest.raises(InvalidReferenceError):
        ref.with_tag("bad tag")
    with pytest.raises(InvalidReferenceError):
        ref.with_digest("sha256:xyz")


def test_reference_parse_classmethod_matches_function() -> None:
    assert Reference.parse("nginx") == parse_reference("nginx")


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1:1", "127.9.9.9", "[::1]:5000", "foo.localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["example.com", "10.0.0.1:5000", "registry-1.docker.io", "[2001:db8::1]:5000"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def test_source_accepts_registry_references_and_not_other_transports() -> None:
    assert accepts("nginx") and accepts("localhost:5000/app:v1") and accepts("docker://nginx")
    for other in ("oci:/tmp/layout", "oci:layout:tag", "dir:/tmp/x", "docker-archive:/tmp/x.tar", "/abs/path", "Upper/Case"):
        assert not accepts(other)
    assert is_registry_reference("nginx") and not is_registry_reference("oci:x")
