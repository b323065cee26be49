"""nydusify-hooks: real conversions with an external hook program (the two examples in
examples/hooks and small programs written by the tests), its handshake, replies, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.errors import HookError
from nydusify_core.testing.images import BuiltImage

from nydusify_hooks import HOOKS, PROTOCOL

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "hooks"


@pytest.fixture
def hook_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean hook environment; returns the audit log path the examples write to."""
    for var in ("NYDUS_HOOK_PLUGIN_PATH", "NYDUS_HOOK_PLUGIN_TIMEOUT", "NYDUS_HOOK_DENY_TARGET", "NYDUS_HOOK_MAX_BLOBS"):
        monkeypatch.delenv(var, raising=False)
    log = tmp_path / "audit.log"
    monkeypatch.setenv("NYDUS_HOOK_AUDIT_LOG", str(log))
    return log


def program(tmp_path: Path, body: str, name: str = "hook-program") -> Path:
    """A small hook program written as a shell script."""
    path = tmp_path / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def run_convert(image: BuiltImage, tmp_path: Path, plugins, **kw) -> tuple:
    out = tmp_path / "out"
    result = convert(ConvertOptions(source=image.ref, target=f"oci:{out}:latest", work_dir=tmp_path / "work", workers=1, **kw), plugins)
    return result, out


def pushed_manifests(layout: Path) -> list[dict]:
    if not (layout / "index.json").exists():
        return []
    return json.loads((layout / "index.json").read_text())["manifests"]


def manifest_of(layout: Path) -> dict:
    digest = pushed_manifests(layout)[0]["digest"].split(":")[1]
    return json.loads((layout / "blobs" / "sha256" / digest).read_text())


def test_python_example_sees_every_subscribed_stage_with_its_payload(synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch) -> None:
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_PATH", str(EXAMPLES / "hook.py"))
    result, out = run_convert(synthetic_image, tmp_path, plugin_manager)
    calls = [json.loads(line) for line in hook_env.read_text().splitlines()]
    hooks = [c["hook"] for c in calls]
    assert hooks[0] == "before_convert" and hooks[-1] == "after_convert"
    assert hooks[-3:-1] == ["before_push_manifest", "after_push_manifest"]
    assert hooks.count("after_upload_blob") == len(result.blobs)
    info = calls[-3]["payload"]["info"]
    assert info["source_ref"] == synthetic_image.ref and info["target_ref"] == f"oci:{out}:latest"
    assert info["blobs"] == [{"id": b.id, "size": b.size} for b in result.blobs]
    assert Path(info["bootstrap_path"]).name.startswith("bootstrap-")
    assert calls[-2]["payload"]["descriptor"]["digest"] == result.descriptor.digest
    assert calls[-1]["payload"]["error"] is None
    assert manifest_of(out)["annotations"]["org.example.nydus-hook.audited"] == "true"


def test_shell_example_audits_the_push(synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch) -> None:
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_PATH", str(EXAMPLES / "hook.sh"))
    result, out = run_convert(synthetic_image, tmp_path, plugin_manager)
    lines = hook_env.read_text().splitlines()
    total = sum(b.size for b in result.blobs)
    assert lines == [f"oci:{out}:latest {len(result.blobs)} {total}", f"pushed {result.descriptor.digest}"]


def test_error_reply_aborts_before_the_manifest_push_naming_the_program(synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch) -> None:
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_PATH", str(EXAMPLES / "hook.sh"))
    monkeypatch.setenv("NYDUS_HOOK_MAX_BLOBS", "1")
    with pytest.raises(HookError) as err:
        run_convert(synthetic_image, tmp_path, plugin_manager)
    assert err.value.plugin == "nydusify-hooks" and err.value.hook == "nydusify_before_push_manifest"
    assert str(EXAMPLES / "hook.sh") in str(err.value) and "at most 1 allowed" in str(err.value)
    assert "\n" not in str(err.value)
    assert pushed_manifests(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('read -r line; [[ $line == *handshake* ]] && { echo \'{"protocol":"nydusify-hook/1","ok":true}\'; exit 0; }; exit 3\n',
         "exited with status 3"),
        ('read -r line; [[ $line == *handshake* ]] && { echo \'{"protocol":"nydusify-hook/1","ok":true}\'; exit 0; }; echo not json\n',
         "reply is not one JSON object"),
        ('read -r line; [[ $line == *handshake* ]] && { echo \'{"protocol":"nydusify-hook/1","ok":true}\'; exit 0; }; exec sleep 30\n',
         "no reply within 0.5s"),
    ],
    ids=["crash", "garbage", "timeout"],
)
def test_a_failing_program_aborts_the_conversion_before_anything_is_pushed(
    synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch, body, message
) -> None:
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_PATH", str(program(tmp_path, body)))
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_TIMEOUT", "0.5")
    with pytest.raises(HookError, match=message) as err:
        run_convert(synthetic_image, tmp_path, plugin_manager)
    assert err.value.hook == "nydusify_before_convert" and "hook-program" in str(err.value)
    assert pushed_manifests(tmp_path / "out") == []


def test_handshake_with_another_protocol_version_is_refused(synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch) -> None:
    path = program(tmp_path, 'echo \'{"protocol":"nydusify-hook/2","ok":true}\'\n')
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_PATH", str(path))
    with pytest.raises(HookError, match=rf"(?=.*handshake)(?=.*expected '{PROTOCOL}')"):
        run_convert(synthetic_image, tmp_path, plugin_manager)


def test_handshake_lists_every_hook_and_the_program_picks_some(synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch) -> None:
    seen = tmp_path / "requests.jsonl"
    path = program(tmp_path, f"""
read -r line; echo "$line" >> {seen}
if [[ $line == *'"hook":"handshake"'* ]]; then echo '{{"protocol":"nydusify-hook/1","ok":true,"hooks":["after_convert"]}}'
else echo '{{"ok":true}}'; fi
""")
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_PATH", str(path))
    run_convert(synthetic_image, tmp_path, plugin_manager, backend_type="localfs", backend_config={"dir": str(tmp_path / "blobs")})
    handshake, *calls = [json.loads(line) for line in seen.read_text().splitlines()]
    assert handshake["protocol"] == PROTOCOL and handshake["hooks"] == list(HOOKS)
    assert [c["hook"] for c in calls] == ["after_convert"]
    assert "backend_config" not in calls[0]["context"]["options"]  # may hold secrets: never sent
    assert calls[0]["context"]["backend_type"] == "localfs"


def test_default_program_path_is_used_only_when_it_exists(synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_convert(synthetic_image, tmp_path / "a", plugin_manager)  # no ./nydus-hook-plugin: hooks off
    assert not hook_env.exists()
    (tmp_path / "nydus-hook-plugin").symlink_to(EXAMPLES / "hook.sh")
    run_convert(synthetic_image, tmp_path / "b", plugin_manager)
    assert hook_env.read_text().startswith(f"oci:{tmp_path / 'b' / 'out'}:latest ")


def test_a_program_that_cannot_be_run_is_an_error_not_silence(synthetic_image, tmp_path, plugin_manager, hook_env, monkeypatch) -> None:
    path = tmp_path / "not-executable"
    path.write_text("#!/bin/sh\n")
    monkeypatch.setenv("NYDUS_HOOK_PLUGIN_PATH", str(path))
    with pytest.raises(HookError, match="is not an executable file"):
        run_convert(synthetic_image, tmp_path, plugin_manager)
    assert not os.access(path, os.X_OK)
