#!/usr/bin/env bash
# Fetch the official Apache Kafka broker jars (KRaft mode, no ZooKeeper) for the integration tests, if they are
# missing: Maven resolves org.apache.kafka:kafka_2.13 and a log4j2 SLF4J binding (scripts/kafka/pom.xml) from
# Maven Central and copies the runtime jars into ${LINEAGE_KAFKA_HOME:-$HOME/.cache/lineage-ledger/kafka-<version>}/libs.
# Idempotent: a stamp file, written last, marks a complete copy; without it (first run, or an interrupted one)
# the libs directory is emptied and fetched again. The tests start and stop their own throwaway brokers
# (tests/services_kafka.py); this script never starts one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/kafka/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
if [ -z "$version" ]; then
    echo "install-kafka: no <kafka.version> in $pom" >&2
    exit 1
fi
home="${LINEAGE_KAFKA_HOME:-$HOME/.cache/lineage-ledger/kafka-$version}"
stamp="$home/.complete"

if [ -f "$stamp" ]; then
    echo "install-kafka: Kafka $version already installed ($home/libs, $(find "$home/libs" -name '*.jar' | wc -l) jars)"
    exit 0
fi

missing=()
command -v java >/dev/null 2>&1 || missing+=("java (a JDK or JRE 17 or newer, e.g. Debian's openjdk-17-jre-headless)")
command -v mvn >/dev/null 2>&1 || missing+=("mvn (Apache Maven 3, e.g. Debian's maven)")
if [ "${#missing[@]}" -gt 0 ]; then
    for tool in "${missing[@]}"; do
        echo "install-kafka: $tool is not on PATH; the Kafka tests need it" >&2
    done
    exit 1
fi

echo "install-kafka: fetching Kafka $version jars from Maven Central into $home/libs"
started=$SECONDS
rm -rf "$home/libs"
mkdir -p "$home"
# Maven's output goes to a log, not to the terminal: Debian's Maven 3.8.7 prints stray ANSI resets even with -q -B.
log="$home/maven.log"
if ! mvn -B --no-transfer-progress -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$home/libs" -DincludeScope=runtime >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "install-kafka: Maven failed (full output in $log)" >&2
    exit 1
fi
if ! compgen -G "$home/libs/kafka_2.13-$version.jar" >/dev/null; then
    echo "install-kafka: Maven finished but $home/libs/kafka_2.13-$version.jar is missing" >&2
    exit 1
fi
echo "$version" >"$stamp"
echo "install-kafka: Kafka $version installed ($home/libs, $(find "$home/libs" -name '*.jar' | wc -l) jars," \
     "$((SECONDS - started)) s)"
