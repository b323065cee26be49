"""The built-in `localfs` backend honours the backend contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from nydusify_core.builtin.localfs import LocalfsBackend, LocalfsConfig
from nydusify_core.config import load_dataclass
from nydusify_core.errors import UsageError
from nydusify_core.testing.backend_contract import BackendContract


class TestLocalfsBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalfsBackend:
        return LocalfsBackend(LocalfsConfig(dir=str(tmp_path / "blobs")))


def test_blob_is_stored_as_dir_slash_id(tmp_path: Path) -> None:
    backend = LocalfsBackend(LocalfsConfig(dir=str(tmp_path / "store")))
    src = tmp_path / "src"
    src.write_bytes(b"data")
    backend.put("a" * 64, src)
    assert (tmp_path / "store" / ("a" * 64)).read_bytes() == b"data"


def test_config_rejects_unknown_and_missing_fields(plugin_manager) -> None:
    spec = plugin_manager.backend("localfs")
    with pytest.raises(UsageError, match="unknown field"):
        load_dataclass(spec.config_type, {"dir": "/x", "bucket": "y"}, what="localfs backend config")
    with pytest.raises(UsageError, match="missing required field"):
        load_dataclass(spec.config_type, {}, what="localfs backend config")
    with pytest.raises(UsageError, match="must be a string"):
        load_dataclass(spec.config_type, {"dir": 5}, what="localfs backend config")
