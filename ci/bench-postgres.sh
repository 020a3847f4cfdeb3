#!/usr/bin/env bash
# PostgreSQL journal benchmark (#17's figures): Postfix's smtp-source sends 12,000 request mails
# over 50 reused sessions, in one run on this machine, to
#   barrage on SQLite (one node),
#   barrage on PostgreSQL (one node),
#   two barrage nodes on one PostgreSQL database (each gets half the mails and sessions, at once),
# and prints msg/s, the ratio to SQLite and each journal's mean batch per commit. The throwaway
# cluster (initdb, fsync=on, synchronous_commit=on) lives in a temporary dir, loopback only.
#
# Usage: ci/bench-postgres.sh [MESSAGES] [SESSIONS]      (defaults: 12000 50). Needs root (the
# cluster runs as the postgres user) and the Debian packages postgresql and postfix.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-12000}
SESSIONS=${2:-50}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/bench-postgres.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/pg/postmaster.pid" ] && kill -QUIT "$(head -1 "$WORK/pg/postmaster.pid")" 2>/dev/null || true
  sleep 1
  rm -rf "$WORK"
}
trap cleanup EXIT

printf 'From: bench@example.net\nTo: requests@registry.example\nSubject: request\n\ndomain: bench-exemple.fr\nholder: Bench\ncontact: bench@example.net\n' > "$WORK/request.eml"
BARRAGE="${CARGO_TARGET_DIR:-target}/release/barrage"
cargo build --release --locked -p barrage -q

PG_PORT=2601
mkdir "$WORK/pg" && chown postgres "$WORK/pg"
runuser -u postgres -- "$BIN/initdb" -D "$WORK/pg" -U postgres -A trust --no-locale -N >/dev/null
runuser -u postgres -- "$BIN/postgres" -D "$WORK/pg" -c port=$PG_PORT -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$WORK/pg" -c fsync=on -c synchronous_commit=on 2>"$WORK/pg.log" &
PIDS+=($!)
until runuser -u postgres -- "$BIN/pg_isready" -q -h 127.0.0.1 -p $PG_PORT; do sleep 0.2; done
for db in one two; do runuser -u postgres -- "$BIN/createdb" -h 127.0.0.1 -p $PG_PORT "$db"; done

# node NAME SMTP_PORT [ARGS…]: starts barrage and waits for its SMTP port.
node() {
  local name=$1 port=$2; shift 2
  "$BARRAGE" serve --data-dir "$WORK/$name" --smtp "127.0.0.1:$port" --http 127.0.0.1:0 --no-web \
    "$@" 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "barrage $name did not start: $(cat "$WORK/$name.log")" >&2; exit 1
}
source_to() { # PORT MESSAGES SESSIONS
  timeout 600 smtp-source -d -s "$3" -m "$2" -F "$WORK/request.eml" -f bench@example.net \
    -t requests@registry.example "127.0.0.1:$1" >/dev/null
}
stats() { # NAME FIELD
  local http; http=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["http"])' "$WORK/$1/endpoints.json")
  curl -s "http://$http/v1/stats" | python3 -c "import json,sys;v=json.load(sys.stdin)[sys.argv[1]];print(round(v,1) if isinstance(v,float) else v)" "$2"
}

node sqlite 2611
node pg1 2612 --journal "postgres://postgres@127.0.0.1:$PG_PORT/one"
node pga 2613 --journal "postgres://postgres@127.0.0.1:$PG_PORT/two"
node pgb 2614 --journal "postgres://postgres@127.0.0.1:$PG_PORT/two"

t() { date +%s.%N; }
s0=$(t); source_to 2611 "$MESSAGES" "$SESSIONS"; s1=$(t)
p0=$(t); source_to 2612 "$MESSAGES" "$SESSIONS"; p1=$(t)
d0=$(t)
source_to 2613 $((MESSAGES / 2)) $((SESSIONS / 2)) & A=$!
source_to 2614 $((MESSAGES / 2)) $((SESSIONS / 2)) & B=$!
wait $A $B
d1=$(t)

sqlite=$(echo "$MESSAGES / ($s1 - $s0)" | bc -l)
pg1=$(echo "$MESSAGES / ($p1 - $p0)" | bc -l)
pg2=$(echo "$MESSAGES / ($d1 - $d0)" | bc -l)
printf '\n%-36s %10s %10s %12s %8s\n' "journal ($MESSAGES mails, $SESSIONS sessions, -d)" msg/s "vs SQLite" "mean batch" stored
printf '%-36s %10.0f %9.2fx %12s %8s\n' "SQLite, one node" "$sqlite" 1 "$(stats sqlite mean_batch)" "$(stats sqlite accepted)"
printf '%-36s %10.0f %9.2fx %12s %8s\n' "PostgreSQL, one node" "$pg1" "$(echo "$pg1 / $sqlite" | bc -l)" "$(stats pg1 mean_batch)" "$(stats pg1 accepted)"
printf '%-36s %10.0f %9.2fx %12s %8s\n' "PostgreSQL, two nodes" "$pg2" "$(echo "$pg2 / $sqlite" | bc -l)" "$(stats pga mean_batch)/$(stats pgb mean_batch)" "$(stats pga accepted)"
