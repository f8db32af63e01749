#!/usr/bin/env bash
# Resolve the pinned Apache Kafka broker jars from Maven Central into
# .cache/kafka/libs (git-ignored). Idempotent: does nothing when present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
libs="$root/.cache/kafka/libs"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka-pom.xml")"
stamp="$libs/.kafka-$version"
if [[ -f "$stamp" ]]; then
  exit 0
fi
echo "fetching Apache Kafka $version broker jars from Maven Central into $libs ..."
rm -rf "$libs"
mkdir -p "$libs"
mvn -q -B -f "$here/kafka-pom.xml" \
  -Dmaven.repo.local="$root/.cache/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs"
touch "$stamp"
echo "kafka $version: $(ls "$libs" | wc -l) jars"
