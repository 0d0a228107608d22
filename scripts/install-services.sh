#!/usr/bin/env bash
# Install the real services the integration tests run against, if they are missing: PostgreSQL's server
# binaries from Debian's packages. Idempotent: does nothing when they are already there. The tests start
# and stop their own throwaway servers; this script never starts one, and the postgresql package's own
# cluster is not used.
set -euo pipefail

have_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_postgres; then
    echo "install-services: PostgreSQL server already installed ($(echo /usr/lib/postgresql/*/bin)); nothing to do"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-services: PostgreSQL server binaries are missing and apt-get is not available;" \
         "install PostgreSQL (initdb, pg_ctl) under /usr/lib/postgresql/<version>/bin" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-services: need root (or sudo) to apt-get install postgresql" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-services: PostgreSQL server binaries missing; running apt-get update and apt-get install postgresql"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql

if have_postgres; then
    echo "install-services: installed PostgreSQL ($(echo /usr/lib/postgresql/*/bin))"
else
    echo "install-services: apt-get finished but no /usr/lib/postgresql/*/bin/initdb was found" >&2
    exit 1
fi
