#!/usr/bin/env bash
# The main job on the bundled example: convert a small OCI image into a Nydus image (OCI
# layout in, OCI layout out), look at the result, unpack it and compare with the source.
# Also packs a directory, the other way to make RAFS. Run from anywhere after .ci/setup.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
nydusify=${NYDUSIFY:-$here/../.venv/bin/nydusify}
python=${PYTHON:-$here/../.venv/bin/python}
out=${1:-$(mktemp -d /tmp/nydusify-demo.XXXXXX)}
mkdir -p "$out"
echo "== working in $out"

echo "== 1. the example image (examples/make_example_image.py)"
rm -rf "$out/source"
"$python" "$here/make_example_image.py" "$out/source"

echo "== 2. convert it into a Nydus image (RAFS v6, zstd)"
rm -rf "$out/nydus"
"$nydusify" convert --source "oci:$out/source:latest" --target "oci:$out/nydus:latest" --work-dir "$out/work" --json > "$out/convert.json"
cat "$out/convert.json"

echo "== 3. the Nydus manifest and its bootstrap"
"$python" - "$out" <<'PY'
import json, sys, tarfile, gzip
from pathlib import Path
out = Path(sys.argv[1])
layout = out / "nydus"
index = json.loads((layout / "index.json").read_text())
manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
for layer in manifest["layers"]:
    print(f'  {layer["mediaType"]:<48} {layer["digest"][:19]}  {layer["size"]:>8}  {layer.get("annotations", {})}')
boot = manifest["layers"][-1]["digest"].split(":")[1]
with tarfile.open(layout / "blobs/sha256" / boot) as tar:
    (out / "image.boot").write_bytes(tar.extractfile("image/image.boot").read())
blobs = out / "blobs"
blobs.mkdir(exist_ok=True)
for layer in manifest["layers"][:-1]:
    hex_ = layer["digest"].split(":")[1]
    target = blobs / hex_
    if not target.exists():
        target.symlink_to(layout / "blobs/sha256" / hex_)
PY
"$nydusify" inspect "$out/image.boot"

echo "== 4. unpack the Nydus image and compare with the source's layers applied"
rm -rf "$out/unpacked" "$out/expected"
"$nydusify" unpack --bootstrap "$out/image.boot" --blob-dir "$out/blobs" --output "$out/unpacked"
mkdir -p "$out/expected"
for layer in $("$python" -c "import json,sys; m=json.load(open(sys.argv[1])); print(' '.join(l['digest'].split(':')[1] for l in m['layers']))" "$out/source/blobs/sha256/$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['manifests'][0]['digest'].split(':')[1])" "$out/source/index.json")"); do
    tar -xzf "$out/source/blobs/sha256/$layer" -C "$out/expected"
    find "$out/expected" -name '.wh.*' | while read -r wh; do rm -rf "$(dirname "$wh")/$(basename "$wh" | sed 's/^\.wh\.//')" "$wh"; done
done
diff -r "$out/expected" "$out/unpacked" && echo "   identical content"

echo "== 5. pack a directory directly (nydusify pack)"
rm -rf "$out/pack"
"$nydusify" pack --source-dir "$out/unpacked" --name example.boot --output-dir "$out/pack" --json
"$nydusify" inspect --no-tree "$out/pack/example.boot"
echo "== done: results in $out"
