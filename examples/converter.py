#!/usr/bin/env python3
"""Convert an image with the nydusify package API instead of the command line.

The Python counterpart of Go nydusify's `examples/converter/main.go`: one options record,
one call. Without arguments it converts the bundled example image (written by
`make_example_image.py`) into a Nydus image in an OCI layout:

    .venv/bin/python examples/converter.py                      # ./converter-example/{source,nydus}
    .venv/bin/python examples/converter.py --out /tmp/demo
    .venv/bin/python examples/converter.py --source localhost:5000/ubuntu:latest \\
        --target localhost:5000/ubuntu:latest-nydus --plain-http --platform linux/amd64

It prints the conversion result (target digest, blobs, timings) as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nydusify_core import ConvertOptions, convert
from nydusify_core.errors import NydusifyError

HERE = Path(__file__).resolve().parent


def example_source(out: Path) -> str:
    """The bundled example image as an OCI layout reference (written once)."""
    sys.path.insert(0, str(HERE))
    from make_example_image import main as make_example_image

    layout = out / "source"
    if not (layout / "index.json").exists():
        make_example_image(layout)
    return f"oci:{layout}:latest"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("converter-example"), help="where the example image and result go")
    parser.add_argument("--source", help="source image (default: the bundled example image)")
    parser.add_argument("--target", help="target image (default: oci:OUT/nydus:latest)")
    parser.add_argument("--platform", action="append", default=[], help="os/arch to convert (repeatable)")
    parser.add_argument("--plain-http", action="store_true", help="talk plain HTTP to registries")
    parser.add_argument("--fs-version", type=int, default=6, choices=(5, 6))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    source = args.source or example_source(args.out)
    options = ConvertOptions(
        source=source,
        target=args.target or f"oci:{args.out / 'nydus'}:latest",
        platforms=tuple(args.platform),
        plain_http=args.plain_http,
        fs_version=args.fs_version,
        prefetch_patterns=("/",),  # prefetch the whole image, as the Go example does
        work_dir=args.out / "work",
    )
    try:
        result = convert(options)
    except NydusifyError as exc:
        print(f"converter: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
