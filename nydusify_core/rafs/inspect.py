"""A readable description of a bootstrap: superblock, blob table, tree, statistics.

`describe` returns plain JSON-able data; its top level carries the fields of upstream's
`nydus-image check --output-json` (`version`, `bootstrap`, `blobs`) so `check` can write it
as `nydus_bootstrap_debug.json`.
"""

from __future__ import annotations

import base64
import os
import stat
from typing import Any

from nydusify_core import __version__
from nydusify_core.rafs.model import BlobInfo, Bootstrap, Node

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def entry_type(mode: int) -> str:
    """"file", "dir", "symlink", "char", "block", "fifo" or "socket" for a stat mode."""
    return _TYPES.get(stat.S_IFMT(mode), "unknown")


def text(raw: bytes) -> str:
    """Names are bytes; show them as the filesystem would (undecodable bytes escaped)."""
    return os.fsdecode(raw)


def _value(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


def describe_blob(index: int, blob: BlobInfo) -> dict[str, Any]:
    return {
        "index": index,
        "blob_id": blob.blob_id,
        "chunk_count": blob.chunk_count,
        "chunk_size": blob.chunk_size,
        "compressor": blob.compressor,
        "digester": blob.digester,
        "features": f"0x{blob.features:08x}",
        "compressed_size": blob.compressed_size,
        "uncompressed_size": blob.uncompressed_size,
        "ci_compressor": blob.ci_compressor,
        "ci_offset": blob.ci_offset,
        "ci_compressed_size": blob.ci_compressed_size,
        "ci_uncompressed_size": blob.ci_uncompressed_size,
        "toc_size": blob.toc_size,
        "toc_digest": blob.toc_digest.hex() if any(blob.toc_digest) else "",
    }


def describe_node(path: bytes, node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": text(path),
        "type": entry_type(node.mode),
        "mode": f"{stat.S_IMODE(node.mode):04o}",
        "uid": node.uid,
        "gid": node.gid,
        "size": node.size,
        "mtime": node.mtime,
        "mtime_nsec": node.mtime_nsec,
        "nlink": node.nlink,
    }
    if node.is_symlink() and node.symlink is not None:
        out["target"] = text(node.symlink)
    if stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
        out["rdev"] = [os.major(node.rdev), os.minor(node.rdev)]
    if node.xattrs:
        out["xattrs"] = {text(k): _value(v) for k, v in sorted(node.xattrs.items())}
    if node.chunks:
        out["chunks"] = len(node.chunks)
    return out


def statistics(bs: Bootstrap) -> dict[str, Any]:
    counts: dict[str, int] = {}
    total_size = 0
    chunk_refs = 0
    unique: set[tuple[int, int]] = set()
    for _, node in bs.walk():
        kind = entry_type(node.mode)
        counts[kind] = counts.get(kind, 0) + 1
        if node.is_reg():
            total_size += node.size
            chunk_refs += len(node.chunks)
            unique.update((c.blob_index, c.index) for c in node.chunks)
    return {
        "entries": sum(counts.values()),
        "by_type": dict(sorted(counts.items())),
        "file_bytes": total_size,
        "chunk_references": chunk_refs,
        "distinct_chunks": len(unique),
    }


def describe(bs: Bootstrap, bootstrap_path: str = "", *, tree: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": f"nydusify-{__version__}",
        "bootstrap": bootstrap_path,
        "blobs": [b.blob_id for b in bs.blobs],
        "superblock": {
            "fs_version": bs.version,
            "chunk_size": f"0x{bs.chunk_size:x}",
            "compressor": bs.compressor,
            "digester": bs.digester,
            "explicit_uid_gid": bs.explicit_uid_gid,
            "flags": f"0x{bs.flags:x}",
            "prefetch": [text(p) for p in bs.prefetch],
        },
        "blob_table": [describe_blob(i, b) for i, b in enumerate(bs.blobs)],
        "stats": statistics(bs),
    }
    if tree:
        out["tree"] = [describe_node(path, node) for path, node in bs.walk()]
    return out


def render_text(info: dict[str, Any]) -> str:
    sb = info["superblock"]
    lines = [
        f"bootstrap:   {info['bootstrap']}",
        f"RAFS v{sb['fs_version']}  chunk size {sb['chunk_size']}  compressor {sb['compressor']}  digester {sb['digester']}"
        f"  explicit uid/gid {'yes' if sb['explicit_uid_gid'] else 'no'}  flags {sb['flags']}",
        f"prefetch:    {', '.join(sb['prefetch']) or '-'}",
        f"blobs ({len(info['blob_table'])}):",
    ]
    for blob in info["blob_table"]:
        lines.append(
            f"  [{blob['index']}] {blob['blob_id']}  chunks {blob['chunk_count']}  compressed {blob['compressed_size']}"
            f"  uncompressed {blob['uncompressed_size']}  {blob['compressor']}/{blob['digester']}  features {blob['features']}"
        )
    stats = info["stats"]
    by_type = ", ".join(f"{v} {k}" for k, v in stats["by_type"].items())
    lines.append(
        f"entries:     {stats['entries']} ({by_type}); {stats['file_bytes']} bytes in files;"
        f" {stats['chunk_references']} chunk references, {stats['distinct_chunks']} distinct"
    )
    for entry in info.get("tree", []):
        extra = f" -> {entry['target']}" if "target" in entry else ""
        lines.append(f"  {entry['type']:<7} {entry['mode']} {entry['uid']:>5}:{entry['gid']:<5} {entry['size']:>12}  {entry['path']}{extra}")
    return "\n".join(lines)
