#!/usr/bin/env bash
# Puts Apache Kafka's command-line tools (org.apache.kafka:kafka-tools at the version pinned
# in pom.xml, with its runtime dependencies) into e2e/java/lib/, for the e2e tests that run
# them against Strom: `java -cp 'e2e/java/lib/*' org.apache.kafka.tools.MetadataQuorumCommand`.
# Idempotent: a stamp naming the pinned version makes a second run a no-op, so it is quiet and
# takes well under a second once the jars are there. Needs java (17+) and mvn on PATH.
set -euo pipefail
cd "$(dirname "$0")"

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' pom.xml)"
stamp="lib/.kafka-tools-$version"
if [ -f "$stamp" ]; then
  exit 0
fi

rm -rf lib.tmp
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Maven's output is kept to itself unless the copy fails.
if ! mvn -q -B -f pom.xml dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory=lib.tmp >"$log" 2>&1; then
  cat "$log" >&2
  echo "fetch-kafka-tools: mvn dependency:copy-dependencies failed" >&2
  exit 1
fi
if ! ls lib.tmp/kafka-tools-"$version".jar >/dev/null 2>&1; then
  echo "fetch-kafka-tools: kafka-tools-$version.jar missing from lib.tmp" >&2
  exit 1
fi
rm -rf lib
mv lib.tmp lib
touch "$stamp"
echo "fetch-kafka-tools: kafka-tools $version in $(pwd)/lib ($(ls lib/*.jar | wc -l) jars)"
