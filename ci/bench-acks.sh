#!/usr/bin/env bash
# Ack sender benchmark: barrage (release) with [ack] pointed at Postfix's smtp-sink; smtp-source
# fires MESSAGES request mails over SESSIONS sessions (the historical day's 12,000 burst); then we
# watch the ack backlog drain through /v1/stats. Prints the accept rate, the ack rate during and
# after the burst, and the time until the last ack was sent.
#
# Usage: ci/bench-acks.sh            (MESSAGES=12000 SESSIONS=50 CONCURRENCY=4 by default)
set -euo pipefail
MESSAGES=${MESSAGES:-12000}
SESSIONS=${SESSIONS:-50}
CONCURRENCY=${CONCURRENCY:-4}
SINK_PORT=${SINK_PORT:-25360}
BARRAGE_PORT=${BARRAGE_PORT:-25361}
cd "$(dirname "$0")/.."

if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null; then
  echo "installing postfix (smtp-source, smtp-sink)…" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

WORK=$(mktemp -d)
cleanup() {
  kill "${BARRAGE_PID:-}" "${SINK_PID:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

printf 'From: bench@example.net\nTo: requests@registry.example\nSubject: request\n\ndomain: bench-exemple.fr\nholder: Bench\n' >"$WORK/request.eml"
cat >"$WORK/barrage.toml" <<TOML
hostname = "bench.localhost"
[ack]
relay = "127.0.0.1:$SINK_PORT"
from = "registry@example.fr"
concurrency = $CONCURRENCY
TOML

echo "building barrage (release)…" >&2
cargo build --release --locked -p barrage -q
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u "$(id -un postfix 2>/dev/null || echo nobody)")
smtp-sink "${SINK_USER[@]}" -c "127.0.0.1:$SINK_PORT" 1000 >"$WORK/sink.out" 2>&1 &
SINK_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && break
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null || { cat "$WORK/sink.out" >&2; exit 1; }
BARRAGE="${CARGO_TARGET_DIR:-target}/release/barrage"
WEB=()
"$BARRAGE" serve --help | grep -q -- '--web' && WEB=(--web 127.0.0.1:0)
"$BARRAGE" serve --config "$WORK/barrage.toml" --data-dir "$WORK/data" \
  --smtp "127.0.0.1:$BARRAGE_PORT" --http 127.0.0.1:0 "${WEB[@]}" 2>"$WORK/barrage.log" &
BARRAGE_PID=$!
for _ in $(seq 100); do
  [ -s "$WORK/data/endpoints.json" ] && break
  sleep 0.1
done
[ -s "$WORK/data/endpoints.json" ] || { cat "$WORK/barrage.log" >&2; exit 1; }
HTTP=$(jq -r .http "$WORK/data/endpoints.json")
stats() { curl -fsS "http://$HTTP/v1/stats"; }

start=$(date +%s.%N)
timeout 600 smtp-source -d -s "$SESSIONS" -m "$MESSAGES" -F "$WORK/request.eml" \
  -f bench@example.net -t requests@registry.example "127.0.0.1:$BARRAGE_PORT" >"$WORK/source.out" 2>&1
burst_end=$(date +%s.%N)
at_burst_end=$(stats)
sent_at_burst_end=$(jq .acks.sent <<<"$at_burst_end")
accepted=$(jq .accepted <<<"$at_burst_end")
max_age=0
while :; do
  s=$(stats)
  pending=$(jq .acks.pending <<<"$s")
  age=$(jq .acks.oldest_pending_age_secs <<<"$s")
  max_age=$(echo "if ($age > $max_age) $age else $max_age" | bc -l)
  [ "$pending" -eq 0 ] && break
  sleep 0.05
done
done_at=$(date +%s.%N)
final=$(stats)
sent=$(jq .acks.sent <<<"$final")
failed=$(jq .acks.failed <<<"$final")

burst=$(echo "$done_at - $start" | bc -l)
printf '\nack benchmark: %s requests over %s sessions (session reuse), ack concurrency %s, relay smtp-sink\n' \
  "$MESSAGES" "$SESSIONS" "$CONCURRENCY"
printf '  accepted                         %s in %.2f s (%.0f req/s)\n' "$accepted" \
  "$(echo "$burst_end - $start" | bc -l)" "$(echo "$accepted / ($burst_end - $start)" | bc -l)"
printf '  acks sent during the burst       %s (%.0f acks/s)\n' "$sent_at_burst_end" \
  "$(echo "$sent_at_burst_end / ($burst_end - $start)" | bc -l)"
printf '  backlog at the end of the burst  %s\n' "$((accepted - sent_at_burst_end))"
printf '  backlog drained in               %.2f s after the burst (%.0f acks/s)\n' \
  "$(echo "$done_at - $burst_end" | bc -l)" \
  "$(echo "($sent - $sent_at_burst_end) / ($done_at - $burst_end)" | bc -l)"
printf '  last ack sent                    %.2f s after the first request (%.0f acks/s overall)\n' \
  "$burst" "$(echo "$sent / $burst" | bc -l)"
printf '  oldest pending ack, at most      %.2f s\n' "$max_age"
printf '  acks sent / failed               %s / %s\n' "$sent" "$failed"
