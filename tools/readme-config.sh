#!/bin/sh
# Rewrites the README's configuration table from the binary's own table:
#   tools/readme-config.sh BINARY
set -eu
bin=${1:-./gensendrep}
table=$(mktemp)
"$bin" --config-markdown >"$table"
awk -v table="$table" '
  /<!-- config-table:start/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
  /<!-- config-table:end/ { skip = 0 }
  !skip { print }
' README.md >README.md.tmp
mv README.md.tmp README.md
rm -f "$table"
