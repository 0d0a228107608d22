#!/usr/bin/env bash
# Install the real services the integration tests run against, if they are missing: PostgreSQL's server
# binaries and redis-server, from Debian's packages. Idempotent: does nothing when they are already there.
# The tests start and stop their own throwaway servers; this script never starts one, and neither the
# postgresql package's own cluster nor the redis-server package's own service is used.
set -euo pipefail

have_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_redis() {
    command -v redis-server >/dev/null 2>&1
}

packages=()
if have_postgres; then
    echo "install-services: PostgreSQL server already installed ($(echo /usr/lib/postgresql/*/bin))"
else
    packages+=(postgresql)
fi
if have_redis; then
    echo "install-services: redis-server already installed ($(command -v redis-server))"
else
    packages+=(redis-server)
fi

if [ "${#packages[@]}" -eq 0 ]; then
    echo "install-services: nothing to do"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-services: missing ${packages[*]} and apt-get is not available;" \
         "install PostgreSQL (initdb, pg_ctl under /usr/lib/postgresql/<version>/bin) and redis-server (on PATH)" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-services: need root (or sudo) to apt-get install ${packages[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-services: missing ${packages[*]}; running apt-get update and apt-get install ${packages[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"

status=0
if have_postgres; then
    echo "install-services: PostgreSQL installed ($(echo /usr/lib/postgresql/*/bin))"
else
    echo "install-services: apt-get finished but no /usr/lib/postgresql/*/bin/initdb was found" >&2
    status=1
fi
if have_redis; then
    echo "install-services: redis-server installed ($(command -v redis-server))"
else
    echo "install-services: apt-get finished but redis-server is not on PATH" >&2
    status=1
fi
exit "$status"
