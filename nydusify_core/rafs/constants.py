"""Every magic number, flag word and enumeration of the RAFS formats, in one place.

Values and names follow ../shared/docs/rafs-format.md §2 (reference: nydus v2.2).
"""

from __future__ import annotations

BLOCK_SIZE = 4096
DEFAULT_CHUNK_SIZE = 0x100000
MIN_CHUNK_SIZE = 0x1000
MAX_CHUNK_SIZE = 0x1000000  # readers accept up to 16 MiB; `pack` offers up to 1 MiB
MAX_BUILD_CHUNK_SIZE = 0x100000

# --- compression algorithm ids (u32; blob tables, CI header) -------------------------
COMPRESSOR_NONE = 0
COMPRESSOR_LZ4_BLOCK = 1
COMPRESSOR_GZIP = 2
COMPRESSOR_ZSTD = 3
COMPRESSOR_IDS = {"none": COMPRESSOR_NONE, "lz4_block": COMPRESSOR_LZ4_BLOCK, "gzip": COMPRESSOR_GZIP, "zstd": COMPRESSOR_ZSTD}
COMPRESSOR_NAMES = {v: k for k, v in COMPRESSOR_IDS.items()}
BUILD_COMPRESSORS = ("none", "lz4_block", "zstd")
ZSTD_LEVEL = 3

# --- digest algorithm ids (u32) ------------------------------------------------------
DIGESTER_BLAKE3 = 0
DIGESTER_SHA256 = 1
DIGESTER_IDS = {"blake3": DIGESTER_BLAKE3, "sha256": DIGESTER_SHA256}
DIGESTER_NAMES = {v: k for k, v in DIGESTER_IDS.items()}

# --- RAFS superblock flags (u64) -----------------------------------------------------
SB_COMPRESSION_NONE = 0x1
SB_COMPRESSION_LZ4 = 0x2
SB_HASH_BLAKE3 = 0x4
SB_HASH_SHA256 = 0x8
SB_EXPLICIT_UID_GID = 0x10
SB_HAS_XATTR = 0x20
SB_COMPRESSION_GZIP = 0x40
SB_COMPRESSION_ZSTD = 0x80
SB_INLINED_CHUNK_DIGEST = 0x100
SB_PRESERVED_COMPAT = 0xFF000000  # reserved bits, accepted by readers
SB_KNOWN_FLAGS = 0x1FF | SB_PRESERVED_COMPAT
SB_COMPRESSION_FLAGS = {
    "none": SB_COMPRESSION_NONE,
    "lz4_block": SB_COMPRESSION_LZ4,
    "gzip": SB_COMPRESSION_GZIP,
    "zstd": SB_COMPRESSION_ZSTD,
}
SB_DIGEST_FLAGS = {"blake3": SB_HASH_BLAKE3, "sha256": SB_HASH_SHA256}

# --- blob feature flags (u32) ---------------------------------------------------------
BLOB_ALIGNED = 0x1
BLOB_INLINED_FS_META = 0x2
BLOB_CHUNK_INFO_V2 = 0x4
BLOB_ZRAN = 0x8
BLOB_SEPARATE = 0x10
BLOB_INLINED_CHUNK_DIGEST = 0x20
BLOB_HAS_TAR_HEADER = 0x10000000
BLOB_HAS_TOC = 0x20000000
BLOB_CAP_TAR_TOC = 0x40000000
BLOB_V5_NO_EXT_TABLE = 0x80000000  # in-memory marker only, never valid on disk
BLOB_INCOMPAT_MASK = 0xFFFF
BLOB_INCOMPAT_SUPPORTED = 0x003F

# --- chunk flags (u32 in the 80-byte chunk record) -----------------------------------
CHUNK_COMPRESSED = 0x1
CHUNK_HOLE = 0x2

CHUNK_RECORD_SIZE = 80

# --- blob meta (CI) ------------------------------------------------------------------
BLOB_META_MAGIC = 0xB10BB10B
BLOB_META_HEADER_SIZE = 4096
CI_ENTRY_V1_SIZE = 16
CI_ENTRY_V2_SIZE = 24
MAX_CHUNKS_PER_BLOB = 0xFFFFFF

# --- blob packaging (tar entries, TOC) -----------------------------------------------
TAR_BLOCK = 512
TOC_ENTRY_SIZE = 128
ENTRY_BLOB_DATA = "image.blob"
ENTRY_BOOTSTRAP = "image.boot"
ENTRY_BLOB_META = "blob.meta"
ENTRY_BLOB_META_HEADER = "blob.meta.header"
ENTRY_BLOB_DIGEST = "blob.digest"
ENTRY_TOC = "rafs.blob.toc"
INLINE_BLOB_ID_PLACEHOLDER = "x" * 64

# --- RAFS v5 --------------------------------------------------------------------------
V5_MAGIC = 0x52414653
V5_FS_VERSION = 0x500
V5_SUPERBLOCK_SIZE = 8192
V5_INODE_SIZE = 128
V5_EXT_BLOB_ENTRY_SIZE = 64
V5_INODE_SYMLINK = 0x1
V5_INODE_HARDLINK = 0x2
V5_INODE_XATTR = 0x4
V5_INODE_HAS_HOLE = 0x8

# --- RAFS v6 / EROFS ------------------------------------------------------------------
EROFS_SUPER_OFFSET = 1024
EROFS_SUPER_MAGIC = 0xE0F5E1E2
EROFS_BLKSZ_BITS = 12
EROFS_SLOT_SIZE = 32
EROFS_FEATURE_COMPAT_RAFS_V6 = 0x40000000
EROFS_FEATURE_INCOMPAT_CHUNKED_FILE = 0x4
EROFS_FEATURE_INCOMPAT_DEVICE_TABLE = 0x8
EROFS_FEATURE_INCOMPAT_RAFS = EROFS_FEATURE_INCOMPAT_CHUNKED_FILE | EROFS_FEATURE_INCOMPAT_DEVICE_TABLE
V6_EXT_SUPER_OFFSET = 1152
V6_DEVTABLE_OFFSET = 1408
V6_DEVICE_SLOT_SIZE = 128
V6_BLOB_ENTRY_SIZE = 256
V6_INODE_EXTENDED_SIZE = 64
V6_INODE_COMPACT_SIZE = 32
V6_DIRENT_SIZE = 12
V6_XATTR_IBODY_HEADER_SIZE = 12
V6_CHUNK_INDEX_SIZE = 8
V6_CHUNK_FORMAT_INDEXES = 0x20
V6_MAPPED_BLKADDR_ALIGN = 0x200000

EROFS_LAYOUT_FLAT_PLAIN = 0
EROFS_LAYOUT_FLAT_INLINE = 2
EROFS_LAYOUT_CHUNK_BASED = 4

# dirent file types
EROFS_FT_UNKNOWN = 0
EROFS_FT_REG_FILE = 1
EROFS_FT_DIR = 2
EROFS_FT_CHRDEV = 3
EROFS_FT_BLKDEV = 4
EROFS_FT_FIFO = 5
EROFS_FT_SOCK = 6
EROFS_FT_SYMLINK = 7

# xattr name prefixes (first match wins); the ACL names are whole-name prefixes
XATTR_PREFIXES: tuple[tuple[bytes, int], ...] = (
    (b"user.", 1),
    (b"system.posix_acl_access", 2),
    (b"system.posix_acl_default", 3),
    (b"trusted.", 4),
    (b"security.", 6),
)
XATTR_INDEX_PREFIX = {index: prefix for prefix, index in XATTR_PREFIXES}

# --- OCI whiteouts --------------------------------------------------------------------
WHITEOUT_PREFIX = b".wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"

# --- RAFS v6 writer/reader details (rafs-format.md §3) --------------------------------
EROFS_I_VERSION_EXTENDED = 0x1  # bit 0 of i_format: 64-byte inode
EROFS_I_DATALAYOUT_SHIFT = 1
EROFS_I_DATALAYOUT_MASK = 0x7
EROFS_CHUNK_FORMAT_BLKBITS_MASK = 0x1F
EROFS_NAME_LEN = 255
EROFS_NULL_ADDR = 0xFFFFFFFF
EROFS_XATTR_ENTRY_HEADER_SIZE = 4  # u8 name_len, u8 name_index, u16 value_size
EROFS_XATTR_ALIGN = 4
V6_DEVT_SLOTOFF = V6_DEVTABLE_OFFSET // V6_DEVICE_SLOT_SIZE  # 11
V6_DOT_DIRENTS_SIZE = 2 * V6_DIRENT_SIZE + 3  # "." and ".." with their names
V6_PREFETCH_ENTRY_SIZE = 4
V6_CHUNK_INDEX_ALIGN = 8
V6_MAX_BLOBS = 255  # the device id is one byte (0 = the bootstrap itself)
V6_LEGACY_SB_BLOCKS = 4096  # s_blocks value written by old builders without blobs
V6_MAX_CHUNK_BITS = 31 + 12  # 5-bit chunk-size field above the 4 KiB block
V6_MAPPED_BLKADDR_MODES = ("aligned", "zero")
V6_DEFAULT_MAPPED_BLKADDR = "aligned"
V6_ROOT_INO_DIRECTORY_BUILDER = 0  # i_ino of the root written by the directory builder
V6_ROOT_INO_TAR_BUILDER = 1  # i_ino of the root written by the tar builder (tar-rafs)
TAR_IMPLIED_DIR_MODE = 0o755  # parents missing from a layer tar: 0755, uid/gid 0, mtime 0
XATTR_NAME_MAX = 255  # longest full xattr name the builders accept (Linux XATTR_NAME_MAX)
XATTR_VALUE_MAX = 0xFFFF  # longest xattr value RAFS v6 can store (u16 value_size)
V6_MAX_DEPTH = 2048  # readers refuse deeper trees (PATH_MAX/2 one-byte components)

# --- RAFS v5 writer/reader details (rafs-format.md §4) --------------------------------
V5_ALIGNMENT = 8  # tables and inode records are 8-byte aligned
V5_INODE_TABLE_SHIFT = 3  # inode table values are byte offsets divided by 8
V5_INODE_TABLE_MAX_VALUE = 1 << 29
V5_ROOT_INDEX = 1
V5_ROOT_NAME = b"/"
V5_DIRENT_PSEUDO_OVERHEAD = 8  # directory pseudo size: align(sum(len(name) + 8), 4096)
V5_BLOB_ENTRY_HEADER_SIZE = 8  # u32 readahead_offset, u32 readahead_size before each id
V5_XATTR_HEADER_SIZE = 8  # u64 payload size of the xattr block
V5_XATTR_PAIR_HEADER_SIZE = 4  # u32 pair size before each name\0value pair
V5_PREFETCH_ENTRY_SIZE = 4
V5_TAR_NO_RDEV = 0xFFFFFFFF  # i_rdev of non-devices written by the tar builder
V5_MAX_DEPTH = 2048  # readers refuse deeper trees
STAT_BLOCK_SIZE = 512  # unit of i_blocks

# --- data blobs: chunk info entries, TOC, tar headers (rafs-format.md §5-§6) ----------
CI_V1_SIZE_LOW_BITS = 20  # bits 0-19 of (size - 1) sit in bits 44-63, bits 20-23 elsewhere
CI_V1_UNCOMP_SIZE_HIGH_SHIFT = 8  # bits 20-23 of (uncompressed_size - 1) in bits 8-11
CI_V1_COMP_SIZE_HIGH_SHIFT = 40  # bits 20-23 of (compressed_size - 1) in bits 40-43
CI_V1_SIZE_LOW_SHIFT = 44
CI_V1_UNCOMP_OFFSET_MASK = 0x00000FFFFFFFF000  # bits 12-43: 4 KiB aligned offset
CI_COMP_OFFSET_MASK = (1 << 40) - 1
CI_MAX_CHUNK_SIZE = 1 << 24  # sizes are stored as 24-bit (size - 1)
CI_MAX_UNCOMP_OFFSET = 1 << 44
CI_V2_FLAG_COMPRESSED = 0x01
CI_V2_FLAG_ZRAN = 0x02
CI_V2_FLAGS_SHIFT = 56
CI_V2_USIZE_SHIFT = 32
CI_V2_CSIZE_SHIFT = 40
ZRAN_CONTEXT_SIZE = 40
BLOB_META_HEADER_FIELDS_SIZE = 60  # magic .. zran_count; then reserved up to magic2

TOC_FLAG_NONE = 0x1
TOC_FLAG_ZSTD = 0x2
TOC_FLAG_LZ4_BLOCK = 0x4
TOC_FLAGS = {"none": TOC_FLAG_NONE, "zstd": TOC_FLAG_ZSTD, "lz4_block": TOC_FLAG_LZ4_BLOCK}
TOC_NAME_SIZE = 16
TOC_MAX_ENTRIES = 64  # nydus writes at most 5; readers refuse absurd tables

TAR_NAME_SIZE = 100
TAR_SIZE_OFFSET = 124
TAR_SIZE_FIELD = 12
TAR_MTIME_OFFSET = 136
TAR_CHKSUM_OFFSET = 148
TAR_CHKSUM_FIELD = 8
TAR_TYPEFLAG_OFFSET = 156
TAR_TYPE_REGULAR = b"0"
TAR_MAGIC_OFFSET = 257
TAR_GNU_MAGIC = b"ustar  \x00"  # GNU magic + version, as the Rust tar crate's new_gnu()
TAR_OCTAL_SIZE_LIMIT = 8**11  # larger sizes use GNU base-256
TAR_BASE256_FLAG = 0x80

DIGEST_SIZE = 32
BLOB_ID_HEX_LEN = 64
DEFAULT_BLOB_OFFSET = 0
