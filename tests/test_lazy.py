"""Lazy stand-ins that plugins register so their SDKs load only when used."""

from __future__ import annotations

import email.message

import pytest

from nydusify_core.lazy import lazy_callable, lazy_exports


def test_lazy_exports_resolve_names_from_their_submodules() -> None:
    getattr_ = lazy_exports("email", {"Message": "message"})
    assert getattr_("Message") is email.message.Message
    with pytest.raises(AttributeError, match="module 'email' has no attribute 'Nope'"):
        getattr_("Nope")


def test_lazy_callable_imports_its_target_when_called() -> None:
    dumps = lazy_callable("json:dumps")
    assert dumps.__name__ == "dumps"
    assert dumps([1], separators=(",", ":")) == "[1]"
