"""`pack --backend-push` to OSS and S3 (real loopback servers), and `inspect`/`unpack`
reading the pushed bootstrap and blobs straight from the backend.

Keys follow the spec (§4 steps 8-10): blob `blob_prefix + blob id`, bootstrap
`meta_prefix + name as given`; the local blob is renamed to `<out>/<blob id>`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nydusify_core.testing.cli import cli_ok, one_line_error, pseudo_random, run_cli
from nydusify_core.testing.trees import diff_trees, snapshot

MiB = 1 << 20
BY_DESIGN = {"ignore": ("dir:size",), "ignore_paths": {b"/": ("mtime",)}}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pack-backend") / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("nydus\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(pseudo_random(1, 3 * MiB + 100))
    (root / "bin" / "tool").chmod(0o755)
    (root / "text").write_bytes(b"some compressible text\n" * 5000)
    (root / "empty").write_bytes(b"")
    os.symlink("etc/hostname", root / "link")
    return root


@pytest.fixture
def oss_config(oss_server, oss_bucket) -> dict:
    return {
        "endpoint": oss_server.endpoint, "bucket_name": oss_bucket,
        "access_key_id": oss_server.access_key_id, "access_key_secret": oss_server.access_key_secret,
        "meta_prefix": "nydus/meta/", "blob_prefix": "nydus/blobs/",
    }


@pytest.fixture
def s3_config(s3_server, s3_bucket) -> dict:
    return {
        "endpoint": s3_server.host, "scheme": "http", "region": s3_server.region, "bucket_name": s3_bucket,
        "access_key_id": s3_server.access_key_id, "access_key_secret": s3_server.secret_access_key,
        "meta_prefix": "meta/", "blob_prefix": "blobs/",
    }


@pytest.fixture(params=["oss", "s3"])
def backend(request) -> tuple[str, dict]:
    return request.param, request.getfixturevalue(f"{request.param}_config")


def push(tree: Path, out: Path, backend_type: str, config: dict, *extra: str) -> dict:
    res = cli_ok("pack", "--json", "--source-dir", tree, "--name", "app.meta", "--output-dir", out,
             "--backend-push", "--backend-type", backend_type, "--backend-config", json.dumps(config), *extra)
    return json.loads(res.stdout)


def backend_args(backend_type: str, config: dict) -> list[str]:
    return ["--backend-type", backend_type, "--backend-config", json.dumps(config)]


def test_push_stores_bootstrap_and_blob_under_their_prefixes(tree: Path, tmp_path: Path, backend) -> None:
    backend_type, config = backend
    info = push(tree, tmp_path / "out", backend_type, config)
    blob_id = info["blob_id"]
    assert info["blob"] == str(tmp_path / "out" / blob_id)  # renamed to its id
    pushed = info["backend"]
    assert pushed["bootstrap_url"].endswith(f"/{config['meta_prefix']}app.meta")
    assert [(b["id"], b["uploaded"]) for b in pushed["blobs"]] == [(blob_id, True)]
    assert pushed["blobs"][0]["url"].endswith(f"/{config['blob_prefix']}{blob_id}")
    if backend_type == "oss":
        assert pushed["bootstrap_url"] == f"oss://{config['bucket_name']}/nydus/meta/app.meta"


def test_oss_objects_hold_the_local_files(tree: Path, tmp_path: Path, oss_server, oss_config) -> None:
    info = push(tree, tmp_path / "out", "oss", oss_config)
    bucket = oss_config["bucket_name"]
    assert sorted(oss_server.object_keys(bucket)) == sorted(["nydus/meta/app.meta", f"nydus/blobs/{info['blob_id']}"])
    assert oss_server.object_data(bucket, "nydus/meta/app.meta") == Path(info["bootstrap"]).read_bytes()
    assert oss_server.object_data(bucket, f"nydus/blobs/{info['blob_id']}") == Path(info["blob"]).read_bytes()


def test_unpack_from_the_backend_reproduces_the_tree(tree: Path, tmp_path: Path, backend) -> None:
    backend_type, config = backend
    push(tree, tmp_path / "out", backend_type, config)
    cli_ok("unpack", "--bootstrap-key", "app.meta", *backend_args(backend_type, config), "--output", tmp_path / "unpacked")
    assert diff_trees(snapshot(tree), snapshot(tmp_path / "unpacked"), **BY_DESIGN) == []


def test_unpack_local_bootstrap_with_remote_blobs(tree: Path, tmp_path: Path, oss_config) -> None:
    info = push(tree, tmp_path / "out", "oss", oss_config)
    os.unlink(info["blob"])  # only the backend has the blob now
    cli_ok("unpack", "--bootstrap", info["bootstrap"], *backend_args("oss", oss_config), "--output", tmp_path / "unpacked")
    assert diff_trees(snapshot(tree), snapshot(tmp_path / "unpacked"), **BY_DESIGN) == []


def test_inspect_reads_the_bootstrap_from_the_backend(tree: Path, tmp_path: Path, backend) -> None:
    backend_type, config = backend
    info = push(tree, tmp_path / "out", backend_type, config)
    remote = json.loads(cli_ok("inspect", "--json", "--bootstrap-key", "app.meta", *backend_args(backend_type, config)).stdout)
    local = json.loads(cli_ok("inspect", "--json", info["bootstrap"]).stdout)
    assert remote["blobs"] == local["blobs"]
    assert remote.get("tree") == local.get("tree")


def test_existing_blob_is_not_uploaded_again_unless_forced(tree: Path, tmp_path: Path, oss_server, oss_config) -> None:
    bucket = oss_config["bucket_name"]
    first = push(tree, tmp_path / "a", "oss", oss_config)
    oss_server.reset_stats()
    second = push(tree, tmp_path / "b", "oss", oss_config)
    assert second["blob_id"] == first["blob_id"]
    assert [b["uploaded"] for b in second["backend"]["blobs"]] == [False]
    assert oss_server.ops(bucket).count("PutObject") == 1  # the bootstrap, always

    oss_server.reset_stats()
    forced = push(tree, tmp_path / "c", "oss", oss_config, "--backend-force-push")
    assert [b["uploaded"] for b in forced["backend"]["blobs"]] == [True]
    assert "HeadObject" not in oss_server.ops(bucket)  # forced: no existence check at all
    assert oss_server.ops(bucket).count("PutObject") == 2


def test_parent_blobs_are_pushed_with_the_layer(tree: Path, tmp_path: Path, oss_server, oss_config) -> None:
    out = tmp_path / "out"
    base_id = json.loads(cli_ok("pack", "--json", "--source-dir", tree, "--name", "base", "--output-dir", out).stdout)["blob_id"]
    os.replace(out / "base.blob", out / base_id)  # where upstream expects parent blobs
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "motd").write_text("upper layer\n")
    info = push(upper, out, "oss", oss_config, "--parent-bootstrap", out / "base.meta")
    ids = [b["id"] for b in info["backend"]["blobs"]]
    assert ids == [base_id, info["blob_id"]]
    keys = set(oss_server.object_keys(oss_config["bucket_name"]))
    assert {f"nydus/blobs/{base_id}", f"nydus/blobs/{info['blob_id']}", "nydus/meta/app.meta"} <= keys


def test_missing_config_is_a_one_line_error(tree: Path, tmp_path: Path) -> None:
    err = one_line_error(run_cli("pack", "--source-dir", tree, "--name", "x", "--output-dir", tmp_path / "out", "--backend-push"))
    assert "--backend-config" in err
    assert not (tmp_path / "out").exists()  # checked before building


def test_bad_config_is_a_one_line_error(tree: Path, tmp_path: Path) -> None:
    err = one_line_error(run_cli("pack", "--source-dir", tree, "--name", "x", "--output-dir", tmp_path, "--backend-push",
                             "--backend-type", "s3", "--backend-config", json.dumps({"bucket_name": "b", "region": "r", "endpoint": "http://h:1", "colour": "x"})))
    assert "colour" in err or "endpoint" in err
    err = one_line_error(run_cli("pack", "--source-dir", tree, "--name", "x", "--output-dir", tmp_path, "--backend-push",
                             "--backend-config", "{not json"))
    assert "JSON" in err


def test_config_file_is_read(tree: Path, tmp_path: Path, oss_server, oss_config) -> None:
    config_file = tmp_path / "backend.json"
    config_file.write_text(json.dumps(oss_config))
    cli_ok("pack", "--source-dir", tree, "--name", "app.meta", "--output-dir", tmp_path / "out",
       "--backend-push", "--backend-config-file", config_file)  # oss is the default type
    assert "nydus/meta/app.meta" in oss_server.object_keys(oss_config["bucket_name"])


def test_backend_without_keyed_objects_is_refused(tree: Path, tmp_path: Path) -> None:
    err = one_line_error(run_cli("pack", "--source-dir", tree, "--name", "x", "--output-dir", tmp_path / "out", "--backend-push",
                             "--backend-type", "localfs", "--backend-config", json.dumps({"dir": str(tmp_path / "blobs")})))
    assert "localfs" in err and "oss or s3" in err


def test_wrong_secret_is_an_auth_error_without_the_secret(tree: Path, tmp_path: Path, backend) -> None:
    backend_type, config = backend
    wrong = "WrongSecretValue1234567890"
    res = run_cli("pack", "--source-dir", tree, "--name", "x", "--output-dir", tmp_path / "out", "--backend-push",
              "--backend-type", backend_type, "--backend-config", json.dumps({**config, "access_key_secret": wrong}))
    err = one_line_error(res)
    assert "403" in err or "auth" in err.lower() or "refused" in err.lower()
    assert wrong not in res.stderr + res.stdout
    assert config["access_key_secret"] not in res.stderr + res.stdout


def test_unpack_bootstrap_key_needs_a_backend(tmp_path: Path) -> None:
    err = one_line_error(run_cli("unpack", "--bootstrap-key", "app.meta", "--output", tmp_path / "o"))
    assert "--backend-type" in err


def test_missing_bootstrap_object_is_a_one_line_error(tmp_path: Path, oss_config) -> None:
    err = one_line_error(run_cli("inspect", "--bootstrap-key", "nope", *backend_args("oss", oss_config)))
    assert "nydus/meta/nope" in err
