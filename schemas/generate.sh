#!/usr/bin/env bash
# Regenerates src/wire/generated from schemas/*.fbs (needs flatc; Debian: flatbuffers-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v flatc >/dev/null || { echo "flatc not found: apt-get install -y flatbuffers-compiler" >&2; exit 1; }
rm -rf src/wire/generated
flatc --ts --ts-no-import-ext -o src/wire/generated schemas/ticker.fbs 2>/dev/null || flatc --ts -o src/wire/generated schemas/ticker.fbs
# flatc 2.0.8 emits extensionless relative imports; NodeNext resolution wants .js.
find src/wire/generated -name '*.ts' -print0 | xargs -0 sed -i -E "s#(from '\./[^']*[^s])';#\1.js';#; s#(from '\.\./[^']*)';#\1.js';#"
