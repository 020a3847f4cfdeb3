#!/usr/bin/env bash
# Durable-accept benchmark: Postfix's smtp-source sends the same 12,000 request mails over 50
# sessions to three servers in one run, side by side on this machine:
#   barrage   (release build, fsync before every 250, group commit)
#   postfix   (loopback only, discard transport: it fsyncs each queue file before its 250)
#   smtp-sink (no disk at all: the SMTP ceiling of this machine)
# once with session reuse (-d) and once with a new connection per message, and prints msg/s, the
# ratios barrage/postfix and barrage/smtp-sink, and the CPU time (user + system, from
# /proc/PID/stat) barrage and smtp-sink spent per mail in the same run (README.md, "Performance").
# With ROUNDS > 1 the three servers are measured in turn that many times, for the spread, and
# the medians of the ratios and of the CPU per mail close the table.
#
# Usage: ci/bench-accept.sh [MESSAGES] [SESSIONS] [ROUNDS]      (defaults: 12000 50 1)
# Needs root for apt-get and for starting Postfix. Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-12000}
SESSIONS=${2:-50}
ROUNDS=${3:-1}
BARRAGE_PORT=2591
SINK_PORT=2592
POSTFIX_PORT=2593
WORK=$(mktemp -d /tmp/bench-accept.XXXXXX)

if ! command -v smtp-source >/dev/null || ! command -v postfix >/dev/null; then
  echo "installing postfix (smtp-source, smtp-sink)…" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

cleanup() {
  [ -n "${BARRAGE_PID:-}" ] && kill "$BARRAGE_PID" 2>/dev/null || true
  [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null || true
  postfix stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A request mail without a Message-ID: barrage gives each one its own, so none is a
# retransmission of another and every one is a durable write.
printf 'From: bench@example.net\nTo: requests@registry.example\nSubject: request\n\ndomain: bench-exemple.fr\nholder: Bench\ncontact: bench@example.net\n' > "$WORK/request.eml"

echo "building barrage (release)…" >&2
cargo build --release --locked -p barrage -q
"${CARGO_TARGET_DIR:-target}/release/barrage" serve --data-dir "$WORK/barrage" --smtp "127.0.0.1:$BARRAGE_PORT" \
  --http 127.0.0.1:0 2>"$WORK/barrage.log" &
BARRAGE_PID=$!

smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$WORK/smtp-sink.log" 2>&1 &
SINK_PID=$!

# Postfix, loopback only, discarding everything it accepts (after writing its queue file).
postconf -e "inet_interfaces = loopback-only" "inet_protocols = ipv4" "mydestination =" \
  "mynetworks = 127.0.0.0/8" "default_transport = discard" "relay_transport = discard" \
  "local_transport = discard" "smtpd_client_connection_count_limit = 0" \
  "smtpd_client_connection_rate_limit = 0" "smtpd_client_message_rate_limit = 0" \
  "default_process_limit = 200" "maillog_file = /var/log/postfix-bench.log" "smtpd_recipient_restrictions = permit_mynetworks, reject"
postconf -M "127.0.0.1:$POSTFIX_PORT/inet=127.0.0.1:$POSTFIX_PORT inet n - y - - smtpd"
postfix stop >/dev/null 2>&1 || true
postfix start >/dev/null 2>&1 || { echo "postfix did not start: see /var/log/postfix-bench.log" >&2; exit 1; }

for port in "$BARRAGE_PORT" "$SINK_PORT" "$POSTFIX_PORT"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

# cpu_us PID: CPU time (user + system, all threads) the process has used so far, in µs.
TICK=$(getconf CLK_TCK)
cpu_us() {
  local fields
  # The fields after the command name, which is in parentheses and may hold spaces.
  read -r -a fields <<<"$(sed 's/^.*) //' "/proc/$1/stat")"
  echo $(((fields[11] + fields[12]) * 1000000 / TICK))
}

# rate NAME PORT FLAGS: runs smtp-source and prints messages per second.
rate() {
  local start end
  start=$(date +%s.%N)
  if ! timeout 600 smtp-source $3 -s "$SESSIONS" -m "$MESSAGES" -F "$WORK/request.eml" \
    -f bench@example.net -t requests@registry.example "127.0.0.1:$2" >"$WORK/$1.out" 2>&1; then
    echo "smtp-source against $1 failed:" >&2
    cat "$WORK/$1.out" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  echo "$MESSAGES / ($end - $start)" | bc -l
}

# per_mail NAME PORT FLAGS PID: rate NAME PORT FLAGS, then the µs of CPU PID spent per mail,
# printed as "RATE CPU".
per_mail() {
  local before r after
  before=$(cpu_us "$4")
  r=$(rate "$1" "$2" "$3")
  after=$(cpu_us "$4")
  echo "$r $(echo "($after - $before) / $MESSAGES" | bc -l)"
}

# postfix_idle: waits (at most a minute) until Postfix has discarded what it queued, so that its
# queue manager and delivery agents do not share the cores with the next measurement.
postfix_idle() {
  for _ in $(seq 600); do
    postqueue -p 2>/dev/null | grep -q "Mail queue is empty" && return
    sleep 0.1
  done
  echo "warning: Postfix's queue did not empty within a minute" >&2
}

# median: the median of the numbers on stdin, one per line.
median() {
  sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '\n%-30s %9s %9s %9s %8s %8s %9s %9s\n' "mode ($MESSAGES mails, $SESSIONS sessions)" \
  barrage postfix smtp-sink "/postfix" "/sink" "CPU/mail" "sink CPU"
for round in $(seq "$ROUNDS"); do
  for mode in reuse new; do
    flags=""; label="session reuse (-d)"
    if [ "$mode" = reuse ]; then flags="-d"; else label="new connection per message"; fi
    # barrage and smtp-sink back to back, in turns of order, so that neither always runs on
    # the heels of Postfix's work or of the other; Postfix last, then until its queue is empty.
    if [ $((round % 2)) = 1 ]; then
      read -r b b_cpu < <(per_mail "barrage-$mode-$round" $BARRAGE_PORT "$flags" "$BARRAGE_PID")
      read -r s s_cpu < <(per_mail "sink-$mode-$round" $SINK_PORT "$flags" "$SINK_PID")
    else
      read -r s s_cpu < <(per_mail "sink-$mode-$round" $SINK_PORT "$flags" "$SINK_PID")
      read -r b b_cpu < <(per_mail "barrage-$mode-$round" $BARRAGE_PORT "$flags" "$BARRAGE_PID")
    fi
    p=$(rate "postfix-$mode-$round" $POSTFIX_PORT "$flags")
    postfix_idle
    to_postfix=$(echo "$b / $p" | bc -l)
    to_sink=$(echo "$b / $s" | bc -l)
    printf '%-30s %9.0f %9.0f %9.0f %7.1fx %7.2fx %7.1fµs %7.1fµs\n' "$label" "$b" "$p" "$s" \
      "$to_postfix" "$to_sink" "$b_cpu" "$s_cpu"
    echo "$mode $to_postfix $to_sink $b_cpu $s_cpu" >>"$WORK/ratios"
  done
done
# col MODE N: the median of column N of the rounds' ratios in MODE.
col() { awk -v m="$1" -v c="$2" '$1 == m { print $c }' "$WORK/ratios" | median; }
if [ "$ROUNDS" -gt 1 ]; then
  for mode in reuse new; do
    printf '%-30s %9s %9s %9s %7.1fx %7.2fx %7.1fµs %7.1fµs\n' "median of $ROUNDS, $mode" "" "" "" \
      "$(col "$mode" 2)" "$(col "$mode" 3)" "$(col "$mode" 4)" "$(col "$mode" 5)"
  done
fi
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(CPU/mail: user + system time of the server process per mail; smtp-source's is not counted)"

stats=$(curl -s "http://$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["http"])' "$WORK/barrage/endpoints.json")/v1/stats" || true)
echo
echo "barrage journal: $stats"
accepted=$(echo "$stats" | python3 -c 'import json,sys;print(json.load(sys.stdin)["accepted"])' 2>/dev/null || echo "?")
echo "barrage stored $accepted requests (expected $((2 * MESSAGES * ROUNDS)))"
[ "$accepted" = "$((2 * MESSAGES * ROUNDS))" ] || { echo "barrage did not store every message: see $WORK" >&2; exit 1; }
