"""On-disk records of RAFS v6 (EROFS-compatible), shared by the v6 writer and reader.

Each record is a precompiled `struct.Struct` so that both sides pack/unpack a whole record
in one C call (rafs-format.md §3.2-§3.15).
"""

from __future__ import annotations

import stat
import struct

from nydusify_core.rafs import constants as C

# §3.2 EROFS superblock (128 bytes at 1024)
SUPERBLOCK = struct.Struct("<IIIBBHQQIIII16s16sIHHH38x")
# §3.3 RAFS v6 extended superblock (256 bytes at 1152)
EXT_SUPERBLOCK = struct.Struct("<QQIIQQQII200x")
# §3.4 device slot (128 bytes)
DEVICE_SLOT = struct.Struct("<64sII56x")
# §3.5 blob table entry (256 bytes)
BLOB_ENTRY = struct.Struct("<64sIIIIIIQQIIQQQ32s32sQ48x")
# §3.8 inodes
INODE_EXTENDED = struct.Struct("<HHHHQIIIIqII16x")
INODE_COMPACT = struct.Struct("<HHHHIIIIHH4x")
# §3.9 xattr ibody header: u32 reserved, u8 shared_count, 7 reserved
XATTR_IBODY_HEADER = struct.Struct("<IB7x")
XATTR_ENTRY = struct.Struct("<BBH")
# §3.10 dirent
DIRENT = struct.Struct("<QHBx")
# §3.12 chunk index
CHUNK_INDEX = struct.Struct("<HHI")
# §3.15 / §4.8 chunk record
CHUNK_RECORD = struct.Struct("<32sIIIIQQQII")
U32 = struct.Struct("<I")

assert SUPERBLOCK.size == 128 and EXT_SUPERBLOCK.size == 256
assert DEVICE_SLOT.size == C.V6_DEVICE_SLOT_SIZE and BLOB_ENTRY.size == C.V6_BLOB_ENTRY_SIZE
assert INODE_EXTENDED.size == C.V6_INODE_EXTENDED_SIZE and INODE_COMPACT.size == C.V6_INODE_COMPACT_SIZE
assert DIRENT.size == C.V6_DIRENT_SIZE and CHUNK_INDEX.size == C.V6_CHUNK_INDEX_SIZE
assert CHUNK_RECORD.size == C.CHUNK_RECORD_SIZE and XATTR_IBODY_HEADER.size == C.V6_XATTR_IBODY_HEADER_SIZE

FILE_TYPES = {
    stat.S_IFREG: C.EROFS_FT_REG_FILE,
    stat.S_IFDIR: C.EROFS_FT_DIR,
    stat.S_IFCHR: C.EROFS_FT_CHRDEV,
    stat.S_IFBLK: C.EROFS_FT_BLKDEV,
    stat.S_IFIFO: C.EROFS_FT_FIFO,
    stat.S_IFSOCK: C.EROFS_FT_SOCK,
    stat.S_IFLNK: C.EROFS_FT_SYMLINK,
}

SB_COMPRESSION_MASK = C.SB_COMPRESSION_NONE | C.SB_COMPRESSION_LZ4 | C.SB_COMPRESSION_GZIP | C.SB_COMPRESSION_ZSTD
SB_DIGEST_MASK = C.SB_HASH_BLAKE3 | C.SB_HASH_SHA256
SB_COMPRESSION_BY_FLAG = {v: k for k, v in C.SB_COMPRESSION_FLAGS.items()}
SB_DIGEST_BY_FLAG = {v: k for k, v in C.SB_DIGEST_FLAGS.items()}


def file_type(mode: int) -> int:
    """EROFS dirent file type of a st_mode (0 for unknown types)."""
    return FILE_TYPES.get(stat.S_IFMT(mode), C.EROFS_FT_UNKNOWN)


def align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def split_xattr_name(name: bytes) -> tuple[int, bytes] | None:
    """(name_index, suffix) for a full xattr name, or None when no known prefix matches."""
    for prefix, index in C.XATTR_PREFIXES:
        if name.startswith(prefix):
            return index, name[len(prefix):]
    return None

