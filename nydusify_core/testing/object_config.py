"""`ObjectStoreConfigSuite`: what every object-storage backend's JSON config promises.

The `oss` and `s3` plugins (and any third-party one shaped like them) subclass it in their
own tests and fill in the class attributes; every test below then runs for that backend,
as `BackendContract` does for storage behaviour. Backend-specific rules (endpoint forms,
bucket-name syntax, defaults) stay in the plugin's own test file.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, ClassVar

import pytest

from nydusify_core.errors import UsageError
from nydusify_core.plugins import NydusifyPlugins, parse_backend_config
from nydusify_core.types import BackendContext

__all__ = ["ObjectStoreConfigSuite"]

NON_STRINGS: tuple[object, ...] = (1, True, ["x"], {"a": "b"})


class ObjectStoreConfigSuite:
    """Subclass and set the class attributes below."""

    backend_name: ClassVar[str]  # as registered, e.g. "oss"
    backend_class: ClassVar[type]
    config_class: ClassVar[type]
    distribution_module: ClassVar[str]  # the plugin's top-level module
    sdk_module: ClassVar[str]  # slow to import: only when a backend is created
    secret: ClassVar[str]  # the valid config's access_key_secret
    valid: ClassVar[dict[str, Any]]  # a minimal valid config holding `secret`
    required: ClassVar[tuple[str, ...]]  # fields whose absence is an error
    string_fields: ClassVar[tuple[str, ...]]  # fields that must be JSON strings
    foreign_field: ClassVar[tuple[str, str]]  # (name, value) of another backend's field
    too_small_part_size: ClassVar[int]
    part_size_error: ClassVar[str]  # regex of the error for `too_small_part_size`

    # --- helpers ----------------------------------------------------------------------

    def parse(self, plugin_manager: NydusifyPlugins, **changes: object) -> Any:
        """The valid config with `changes` applied (None removes a field), parsed."""
        raw = {k: v for k, v in {**self.valid, **changes}.items() if v is not None}
        return parse_backend_config(plugin_manager.backend(self.backend_name), raw)

    def usage_error(self, plugin_manager: NydusifyPlugins, **changes: object) -> str:
        """The one-line, secret-free error that parsing the changed config gives."""
        with pytest.raises(UsageError) as info:
            self.parse(plugin_manager, **changes)
        message = str(info.value)
        assert "\n" not in message
        assert self.secret not in message
        return message

    # --- the promises -------------------------------------------------------------------

    def test_the_plugin_registers_its_backend(self, plugin_manager: NydusifyPlugins) -> None:
        spec = plugin_manager.backend(self.backend_name)
        assert spec.config_type is self.config_class
        backend = spec.create(self.parse(plugin_manager), BackendContext())
        try:
            assert isinstance(backend, self.backend_class)
        finally:
            backend.close()

    def test_loading_the_plugin_does_not_import_the_sdk(self) -> None:
        """`nydusify` starts every plugin; the SDK loads only when the backend is used."""
        code = f"import sys, {self.distribution_module}; assert {self.sdk_module!r} not in sys.modules, 'imported {self.sdk_module}'"
        subprocess.run([sys.executable, "-c", code], check=True)

    def test_pack_prefixes_are_accepted(self, plugin_manager: NydusifyPlugins) -> None:
        config = self.parse(plugin_manager, object_prefix="nydus/", meta_prefix="meta/", blob_prefix="blob/")
        assert (config.object_prefix, config.meta_prefix, config.blob_prefix) == ("nydus/", "meta/", "blob/")

    def test_secret_is_not_in_the_repr(self, plugin_manager: NydusifyPlugins) -> None:
        assert self.secret not in repr(self.parse(plugin_manager))

    def test_unknown_field_is_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        name, value = self.foreign_field
        assert f"unknown field(s) {name}" in self.usage_error(plugin_manager, **{name: value})

    def test_each_required_field_is_named_when_missing(self, plugin_manager: NydusifyPlugins) -> None:
        for field in self.required:
            assert f"missing required field(s) {field}" in self.usage_error(plugin_manager, **{field: None})

    def test_non_string_values_are_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        for field in self.string_fields:
            for value in NON_STRINGS:
                assert f"field {field!r} must be a string" in self.usage_error(plugin_manager, **{field: value})

    def test_a_secret_of_the_wrong_type_is_not_echoed(self, plugin_manager: NydusifyPlugins) -> None:
        assert "must be a string" in self.usage_error(plugin_manager, access_key_secret=[self.secret])
        assert "must be a string" in self.usage_error(plugin_manager, access_key_secret={"value": self.secret})

    @pytest.mark.parametrize("emptied", ["access_key_id", "access_key_secret"])
    def test_half_a_key_pair_is_rejected(self, plugin_manager: NydusifyPlugins, emptied: str) -> None:
        assert "set both 'access_key_id' and 'access_key_secret'" in self.usage_error(plugin_manager, **{emptied: ""})

    def test_backend_is_created_through_its_spec(self, plugin_manager: NydusifyPlugins) -> None:
        spec = plugin_manager.backend(self.backend_name)
        backend = spec.create(self.parse(plugin_manager, object_prefix="p/"), BackendContext(plugins=plugin_manager))
        try:
            assert backend.type == self.backend_name
            assert backend.key_for("a" * 64) == "p/" + "a" * 64
        finally:
            backend.close()

    def test_too_small_part_size_is_rejected(self, plugin_manager: NydusifyPlugins) -> None:
        with pytest.raises(UsageError, match=self.part_size_error):
            self.backend_class(self.parse(plugin_manager), part_size=self.too_small_part_size)
