#!/usr/bin/env bash
# Build the S3-compatible object store the archive tests (tests/archive) write to: tests/s3server, a small
# Go program over github.com/johannesboyne/gofakes3 (its bolt backend), serving path-style S3 on loopback.
# Versions and checksums are pinned by tests/s3server/go.mod and go.sum; modules come from the Go module
# proxy. Binary, module and build caches go under ${LINEAGE_S3_HOME:-$HOME/.cache/lineage-ledger/s3}.
# Idempotent: a stamp holding the hash of the Go sources is written last; a matching stamp means nothing to do.
# Without a Go toolchain (go on PATH, or $GO) it says so and exits 0, and the S3 tests skip; with CI=true it
# exits 1, so a CI run never passes by skipping them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="${here%/scripts}/tests/s3server"
home="${LINEAGE_S3_HOME:-$HOME/.cache/lineage-ledger/s3}"
stamp="$home/.complete"

go="${GO:-$(command -v go || true)}"
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go
fi
if [ -z "$go" ]; then
    echo "install-s3: no Go toolchain (go on PATH, or \$GO); the S3 archive tests need one" >&2
    if [ "${CI:-}" = "true" ]; then
        exit 1
    fi
    exit 0
fi

sources="$(cd "$module" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sources" ]; then
    echo "install-s3: already built ($home/bin/s3server)"
    exit 0
fi

echo "install-s3: building s3server into $home/bin (a minute)"
rm -f "$stamp"
mkdir -p "$home/bin"
(
    cd "$module"
    GOMODCACHE="$home/mod" GOCACHE="$home/build" GOPATH="$home/gopath" GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
        "$go" build -o "$home/bin/s3server" .
)
echo "$sources" > "$stamp"
echo "install-s3: done"
