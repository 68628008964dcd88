#!/usr/bin/env bash
# Fetch the Swagger UI and ReDoc assets that /docs and /redoc load, so the server can serve them
# itself (DOCS_ASSETS_DIR) instead of pointing browsers at a CDN. Used by `make docs-assets`.
# Usage: scripts/docs-assets.sh [DIR]   (default DIR: docs-assets)
# Packages come from the npm registry via `npm pack`; nothing is installed or built.
set -euo pipefail

SWAGGER_PKG="swagger-ui-dist@5.35.0" # the versions src/api/docs_get.c pins, with their hashes
REDOC_PKG="redoc@2.5.4"

dest="${1:-docs-assets}"

die() {
	printf 'docs-assets: %s\n' "$*" >&2
	exit 1
}

command -v npm >/dev/null 2>&1 ||
	die "npm not found; install it (Debian package \`npm\`: apt-get install npm) and run again"
command -v tar >/dev/null 2>&1 || die "tar not found"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/docs-assets.XXXXXX")"
trap 'rm -rf -- "$tmp"' EXIT

# fetch PKG NAME: pack PKG into $tmp and unpack it under $tmp/NAME/package/.
fetch() {
	local pkg="$1" name="$2" tarball
	tarball="$(cd "$tmp" && npm pack --silent "$pkg" | tail -n 1)" ||
		die "npm pack $pkg failed"
	if [ -z "$tarball" ] || [ ! -f "$tmp/$tarball" ]; then
		die "npm pack $pkg produced no tarball"
	fi
	mkdir -p "$tmp/$name"
	tar -xzf "$tmp/$tarball" -C "$tmp/$name" || die "cannot unpack $tarball"
}

fetch "$SWAGGER_PKG" swagger-ui-dist
fetch "$REDOC_PKG" redoc

files=(
	"swagger-ui-dist/package/swagger-ui-bundle.js"
	"swagger-ui-dist/package/swagger-ui.css"
	"redoc/package/bundles/redoc.standalone.js"
)
for f in "${files[@]}"; do
	[ -s "$tmp/$f" ] || die "$f missing from the npm package"
done

mkdir -p -- "$dest"
for f in "${files[@]}"; do
	cp -- "$tmp/$f" "$dest/"
done

printf 'docs-assets: %s (%s, %s) -> %s\n' \
	"swagger-ui-bundle.js swagger-ui.css redoc.standalone.js" "$SWAGGER_PKG" "$REDOC_PKG" "$dest"
