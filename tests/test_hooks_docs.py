"""The plugin author guide covers every hookspec, and the guides' links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nydusify_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/user-guide.md", "docs/plugins/author-guide.md", "docs/plugins/external-hooks.md")
SPECS = sorted(name for name in dir(hookspecs) if name.startswith("nydusify_"))


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", markdown, flags=re.M)}


@pytest.mark.parametrize("spec", SPECS)
def test_author_guide_links_every_hookspec_to_its_reference(spec: str) -> None:
    guide = (ROOT / "docs/plugins/author-guide.md").read_text()
    targets = re.findall(rf"\[`{spec}\(.*?\)`\]\(hooks\.md#([^)]+)\)", guide)
    assert targets, f"{spec} is not in docs/plugins/author-guide.md"
    assert targets[0] in anchors((ROOT / "docs/plugins/hooks.md").read_text())


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc: str) -> None:
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc} links to missing {target}"
