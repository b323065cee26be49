"""RAFS v6 bootstrap (EROFS compatible): writer and hostile-input-safe reader.

`write_v6` reproduces nydus-image v2.2's layout byte for byte (rafs-format.md §3.16);
`read_v6` parses a bootstrap into the shared model records; `RafsV6Reader` gives lazy
access (path lookup, one directory, a generator over the tree) for big images.
"""

from __future__ import annotations

from nydusify_core.rafs.v6_reader import RafsV6Reader, V6Inode, read_v6
from nydusify_core.rafs.v6_writer import V6WriteOptions, encode_xattrs, write_v6

__all__ = ["RafsV6Reader", "V6Inode", "V6WriteOptions", "encode_xattrs", "read_v6", "write_v6"]
