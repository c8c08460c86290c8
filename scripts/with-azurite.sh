#!/usr/bin/env bash
# Starts one in-memory Azurite blob service on 127.0.0.1 at a free port, runs the given command with
# VMRESCUE_TEST_AZURITE_URL pointing at it, then stops Azurite whatever the command's outcome.
set -euo pipefail
azurite="${VMRESCUE_AZURITE:-$(dirname "$0")/../.tools/azurite/node_modules/.bin/azurite-blob}"
[ -x "$azurite" ] || { echo "azurite-blob not found at $azurite: run make tools" >&2; exit 1; }
log=$(mktemp)
for attempt in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 30000))
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue # taken
  "$azurite" --blobHost 127.0.0.1 --blobPort "$port" --skipApiVersionCheck --loose \
    --inMemoryPersistence --disableTelemetry --silent >"$log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export VMRESCUE_TEST_AZURITE_URL="http://127.0.0.1:$port/devstoreaccount1"
      echo "azurite listening on 127.0.0.1:$port" >&2
      "$@"
      exit $?
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "azurite did not start on port $port (attempt $attempt):" >&2; cat "$log" >&2
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
done
exit 1
