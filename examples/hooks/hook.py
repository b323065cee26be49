#!/usr/bin/env python3
"""An external nydusify hook program (protocol nydusify-hook/1), in Python.

Point nydusify at it with NYDUS_HOOK_PLUGIN_PATH=examples/hooks/hook.py (the nydusify-hooks
plugin must be installed). It:
  * appends one JSON line per call to $NYDUS_HOOK_AUDIT_LOG (default ./nydus-hook-audit.jsonl),
  * annotates every converted manifest with `org.example.nydus-hook.audited: "true"`,
  * refuses to push a manifest whose target reference contains $NYDUS_HOOK_DENY_TARGET.
Protocol: docs/plugins/external-hooks.md. Only the standard library is used.
"""

import json
import os
import sys

PROTOCOL = "nydusify-hook/1"
HOOKS = ["before_convert", "after_upload_blob", "manifest_annotations", "before_push_manifest", "after_push_manifest", "after_convert"]


def reply(**fields):
    sys.stdout.write(json.dumps({"protocol": PROTOCOL, **fields}) + "\n")


def audit(record):
    path = os.environ.get("NYDUS_HOOK_AUDIT_LOG", "nydus-hook-audit.jsonl")
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record, sort_keys=True) + "\n")


def main():
    request = json.loads(sys.stdin.readline())
    hook = request.get("hook")
    if request.get("protocol") != PROTOCOL:
        reply(ok=False, error=f"this program speaks {PROTOCOL} only")
        return
    if hook == "handshake":
        reply(ok=True, hooks=HOOKS)
        return
    payload = request.get("payload", {})
    audit({"hook": hook, "target": request["context"]["target_ref"], "payload": payload})
    if hook == "manifest_annotations":
        reply(ok=True, annotations={"org.example.nydus-hook.audited": "true"})
        return
    deny = os.environ.get("NYDUS_HOOK_DENY_TARGET")
    if hook == "before_push_manifest" and deny and deny in payload["info"]["target_ref"]:
        reply(ok=False, error=f"policy: pushing to {payload['info']['target_ref']} is not allowed")
        return
    reply(ok=True)


if __name__ == "__main__":
    main()
