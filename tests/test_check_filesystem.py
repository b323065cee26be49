"""The filesystem rule names each kind of difference between the source rootfs and the
Nydus tree. Each case converts the synthetic image, changes one thing in its bootstrap,
re-packs it as the bootstrap layer (config diff_id updated, so only the tree differs) and
expects exactly that path and field to be reported."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Callable

import pytest

from nydusify_core.checker import CheckOptions, check
from nydusify_core.conversion import ConvertOptions, convert
from nydusify_core.oci import image as img
from nydusify_core.oci import mediatypes as mt
from nydusify_core.oci.descriptor import Descriptor
from nydusify_core.oci.layout import OciLayout
from nydusify_core.rafs.bootstrap import write_bootstrap
from nydusify_core.rafs.model import Bootstrap, Node
from nydusify_core.testing.nydus import open_nydus_layout


@pytest.fixture(scope="module")
def converted(synthetic_image, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check-fs")
    convert(ConvertOptions(source=synthetic_image.ref, target=f"oci:{root / 'nydus'}:latest", work_dir=root / "work"))
    return root / "nydus"


def graft(layout: Path, work: Path, change: Callable[[Bootstrap], None], corrupt: Callable[[bytearray], None] | None = None) -> None:
    """Rewrite the image's bootstrap with `change` (then its bytes with `corrupt`), as a new
    bootstrap layer + config + manifest."""
    nydus = open_nydus_layout(layout, work / "boot")
    bs = nydus.bootstrap
    change(bs)
    data = bytearray(write_bootstrap(bs))
    if corrupt is not None:
        corrupt(data)
    boot = work / "changed.boot"
    boot.write_bytes(bytes(data))
    with open(work / "layer.tar.gz", "wb") as f:
        layer = img.write_bootstrap_layer(boot, f, fs_version=bs.version)
    oci = OciLayout(layout)
    with open(work / "layer.tar.gz", "rb") as f:
        oci.write_blob(layer.descriptor, f)
    config = dict(nydus.config)
    config["rootfs"] = {**config["rootfs"], "diff_ids": [*config["rootfs"]["diff_ids"][:-1], layer.diff_id]}
    config_bytes = json.dumps(config).encode()
    config_desc = Descriptor.for_bytes(mt.OCI_CONFIG, config_bytes)
    oci.write_blob_bytes(config_desc, config_bytes)
    manifest = dict(nydus.manifest_json)
    manifest["config"] = config_desc.to_json()
    manifest["layers"] = [*manifest["layers"][:-1], {**manifest["layers"][-1], "digest": layer.descriptor.digest, "size": layer.descriptor.size}]
    data = json.dumps(manifest).encode()
    desc = Descriptor.for_bytes(nydus.descriptor.media_type, data)
    oci.write_blob_bytes(desc, data)
    oci.set_ref(desc, "latest")


def first(bs: Bootstrap, test: Callable[[Node], bool]) -> tuple[str, Node]:
    for path, node in bs.walk():
        if path != b"/" and test(node):
            return os.fsdecode(path), node
    raise AssertionError("no such node in the synthetic image")


def _mode(bs: Bootstrap) -> str:
    path, node = first(bs, lambda n: n.is_reg() and not n.hardlink_to)
    node.mode ^= 0o001
    return path


def _owner(bs: Bootstrap) -> str:
    path, node = first(bs, lambda n: n.is_dir())
    node.uid += 1
    return path


def _mtime(bs: Bootstrap) -> str:
    path, node = first(bs, lambda n: n.is_symlink())
    node.mtime += 60
    return path


def _xattr(bs: Bootstrap) -> str:
    path, node = first(bs, lambda n: bool(n.xattrs))
    node.xattrs = {k: v + b"!" for k, v in node.xattrs.items()}
    return path


def _symlink(bs: Bootstrap) -> str:
    path, node = first(bs, lambda n: n.is_symlink())
    node.symlink = b"/elsewhere"
    node.size = len(node.symlink)
    return path


def _rdev(bs: Bootstrap) -> str:
    path, node = first(bs, lambda n: stat.S_ISCHR(n.mode) or stat.S_ISBLK(n.mode))
    node.rdev = os.makedev(99, 99)
    return path


def _hardlink(bs: Bootstrap) -> str:
    path, node = first(bs, lambda n: n.is_reg() and n.hardlink_to is not None)
    node.ino = max(n.ino for _, n in bs.walk()) + 1
    node.hardlink_to = None
    return path


def _removed(bs: Bootstrap) -> str:
    for parent_path, parent in bs.walk():
        for child in parent.children:
            if not child.is_dir():
                parent.children.remove(child)
                return os.fsdecode((b"" if parent_path == b"/" else parent_path) + b"/" + child.name)
    raise AssertionError


CASES = {
    "mode": (_mode, "mode"),
    "owner": (_owner, "uid"),
    "mtime": (_mtime, "mtime"),
    "xattrs": (_xattr, "xattrs"),
    "symlink": (_symlink, "symlink"),
    "device": (_rdev, "99:99 in Nydus"),
    "hardlink": (_hardlink, "hard links"),
    "removed": (_removed, "missing in the Nydus image"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_difference_is_named(case: str, converted: Path, synthetic_image, tmp_path: Path) -> None:
    change, expected = CASES[case]
    layout = tmp_path / "nydus"
    shutil.copytree(converted, layout)
    changed: list[str] = []
    graft(layout, tmp_path, lambda bs: changed.append(change(bs)))
    report = check(CheckOptions(target=f"oci:{layout}:latest", source=synthetic_image.ref, work_dir=str(tmp_path / "out")))
    assert report.rule("manifest").passed and report.rule("bootstrap").passed, report.render()
    problems = report.rule("filesystem").problems
    assert not report.rule("filesystem").passed
    assert any(changed[0] in p and expected in p for p in problems), problems


def test_a_file_with_other_content_fails_the_data_rule(converted: Path, synthetic_image, tmp_path: Path) -> None:
    """Two same-sized files swap chunk lists: every chunk still verifies, but the content
    of both differs from the source, which only the comparison with the source can see."""
    layout = tmp_path / "nydus"
    shutil.copytree(converted, layout)
    swapped: list[str] = []

    def change(bs: Bootstrap) -> None:
        by_size: dict[int, tuple[str, Node]] = {}
        for path, node in bs.walk():
            if node.is_reg() and node.size and node.hardlink_to is None:
                other = by_size.get(node.size)
                if other is not None and [c.digest for c in other[1].chunks] != [c.digest for c in node.chunks]:
                    other[1].chunks, node.chunks = node.chunks, other[1].chunks
                    swapped.extend([other[0], os.fsdecode(path)])
                    return
                by_size[node.size] = (os.fsdecode(path), node)
        raise AssertionError("no two same-sized files")

    graft(layout, tmp_path, change)
    report = check(CheckOptions(target=f"oci:{layout}:latest", source=synthetic_image.ref, work_dir=str(tmp_path / "out")))
    assert [r.name for r in report.rules if not r.passed] == ["data"], report.render()
    problems = report.rule("data").problems
    for path in swapped:
        assert any(p.startswith(f"{path}: content differs from the source") for p in problems), problems


@pytest.mark.parametrize("seed", range(6))
def test_corrupted_bootstrap_bytes_give_a_report_not_a_crash(seed: int, converted: Path, synthetic_image, tmp_path: Path) -> None:
    import random

    rng = random.Random(seed)

    def corrupt(data: bytearray) -> None:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)

    layout = tmp_path / "nydus"
    shutil.copytree(converted, layout)
    graft(layout, tmp_path, lambda bs: None, corrupt)
    report = check(CheckOptions(target=f"oci:{layout}:latest", source=synthetic_image.ref, work_dir=str(tmp_path / "out")))
    assert report.rule("manifest").passed  # only the bootstrap's bytes changed
    assert all(len(p.splitlines()) == 1 for r in report.rules for p in r.problems)
