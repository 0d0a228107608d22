#!/usr/bin/env bash
# Build the independent Go implementations the interoperability tests (tests/interop) check this project
# against: cosigverify, witnessclient and tlogtiles (this repository's small Go programs over golang.org/x/mod/sumdb/note,
# golang.org/x/mod/sumdb/tlog and github.com/transparency-dev/formats/note) and filippo.io/torchwood's
# litewitness and witnessctl (a C2SP tlog-witness). Versions and checksums are pinned by tests/interop/go.mod
# and go.sum; modules come from the Go module proxy. Binaries, module and build caches go under
# ${LINEAGE_GO_INTEROP_HOME:-$HOME/.cache/lineage-ledger/go-interop}.
# Idempotent: a stamp holding the hash of the Go sources is written last; a matching stamp means nothing to do.
# Without a Go toolchain (go on PATH, or $GO) it says so and exits 0, and the tests skip; with CI=true it
# exits 1, so a CI run never passes by skipping its interoperability tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="${here%/scripts}/tests/interop"
home="${LINEAGE_GO_INTEROP_HOME:-$HOME/.cache/lineage-ledger/go-interop}"
stamp="$home/.complete"

go="${GO:-$(command -v go || true)}"
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go
fi
if [ -z "$go" ]; then
    echo "install-go-interop: no Go toolchain (go on PATH, or \$GO); the Go interoperability tests need one" >&2
    if [ "${CI:-}" = "true" ]; then
        exit 1
    fi
    exit 0
fi

sources="$(cd "$module" && cat go.mod go.sum */*.go | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sources" ]; then
    echo "install-go-interop: already built ($home/bin)"
    exit 0
fi

echo "install-go-interop: building cosigverify, witnessclient, tlogtiles, litewitness and witnessctl into $home/bin (a few minutes)"
rm -f "$stamp"
mkdir -p "$home/bin"
(
    cd "$module"
    GOMODCACHE="$home/mod" GOCACHE="$home/build" GOPATH="$home/gopath" GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
        "$go" build -o "$home/bin/" ./cosigverify ./witnessclient ./tlogtiles filippo.io/torchwood/cmd/litewitness filippo.io/torchwood/cmd/witnessctl
)
echo "$sources" > "$stamp"
echo "install-go-interop: done"
