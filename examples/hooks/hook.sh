#!/usr/bin/env bash
# An external nydusify hook program (protocol nydusify-hook/1), in shell with jq.
#
#   NYDUS_HOOK_PLUGIN_PATH=examples/hooks/hook.sh nydusify convert ...
#
# Subscribes to the manifest-push hooks only. Before the push it appends
# "<target_ref> <blob count> <total blob bytes>" to $NYDUS_HOOK_AUDIT_LOG (default
# ./nydus-hook-audit.log) and refuses images with more than $NYDUS_HOOK_MAX_BLOBS blobs;
# after the push it appends "pushed <digest>". Protocol: docs/plugins/external-hooks.md.
set -euo pipefail

protocol="nydusify-hook/1"
log=${NYDUS_HOOK_AUDIT_LOG:-nydus-hook-audit.log}
request=$(head -n 1)

reply() {  # reply true|false [error]
    jq -cn --arg p "$protocol" --argjson ok "$1" --arg e "${2:-}" \
        'if $ok then {protocol: $p, ok: true} else {protocol: $p, ok: false, error: $e} end'
}

if [ "$(jq -r .protocol <<<"$request")" != "$protocol" ]; then
    reply false "this program speaks $protocol only"
    exit 0
fi

case "$(jq -r .hook <<<"$request")" in
handshake)
    jq -cn --arg p "$protocol" '{protocol: $p, ok: true, hooks: ["before_push_manifest", "after_push_manifest"]}'
    ;;
before_push_manifest)
    read -r target count bytes < <(jq -r '.payload.info | "\(.target_ref) \(.blobs | length) \([.blobs[].size] | add // 0)"' <<<"$request")
    echo "$target $count $bytes" >>"$log"
    if [ -n "${NYDUS_HOOK_MAX_BLOBS:-}" ] && [ "$count" -gt "$NYDUS_HOOK_MAX_BLOBS" ]; then
        reply false "policy: $count blobs, at most $NYDUS_HOOK_MAX_BLOBS allowed"
    else
        reply true
    fi
    ;;
after_push_manifest)
    echo "pushed $(jq -r .payload.descriptor.digest <<<"$request")" >>"$log"
    reply true
    ;;
*)
    reply true
    ;;
esac
