#!/usr/bin/env bash
# A plain Postfix as a foreign buffer for side-by-side rehearsals: it listens on loopback only
# (127.0.0.1:$PORT, default 2594) and delivers every mail for the request domain (registry.invalid,
# the scenarios' recipient domain) into ONE Maildir through Postfix's virtual delivery agent, so
# that `landrush rehearse --handover-maildir` can observe its handover:
#
#   ci/postfix-maildir.sh start                 # install if needed, configure, start, empty the Maildir
#   landrush rehearse scenarios/ci-smoke.toml --target 127.0.0.1:2594 \
#       --handover-maildir /var/mail/landrush/requests --no-acks --out runs/postfix-smoke
#   ci/postfix-maildir.sh empty                 # between runs: the Maildir must start empty
#   ci/postfix-maildir.sh stop
#
# It coexists with ci/bench-accept.sh (its discard transport and port 2593 are left alone: mail for
# registry.invalid goes to the virtual transport, everything else still to discard). Postfix keeps
# its ordinary durability: every queue file and every delivered Maildir file is fsynced.
# Needs root (apt-get, postfix start). Loopback only.
set -euo pipefail
PORT=${LANDRUSH_POSTFIX_PORT:-2594}
DOMAIN=${LANDRUSH_POSTFIX_DOMAIN:-registry.invalid}
BASE=/var/mail/landrush
MAILDIR=$BASE/requests

install() {
  if ! command -v postfix >/dev/null || ! command -v postconf >/dev/null; then
    echo "installing postfix…" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
  fi
}

configure() {
  local uid gid
  uid=$(id -u nobody)
  gid=$(id -g nobody)
  mkdir -p "$BASE"
  chown "$uid:$gid" "$BASE"
  # A log file under /var (Postfix's postlogd refuses others); keep one set by another script.
  if [ -z "$(postconf -nh maillog_file 2>/dev/null)" ]; then
    postconf -e "maillog_file = /var/log/postfix-landrush.log"
  fi
  postconf -e "inet_interfaces = loopback-only" "inet_protocols = ipv4" \
    "mynetworks = 127.0.0.0/8" "smtpd_recipient_restrictions = permit_mynetworks, reject" \
    "smtpd_client_connection_count_limit = 0" "smtpd_client_connection_rate_limit = 0" \
    "smtpd_client_message_rate_limit = 0" "default_process_limit = 200" \
    "virtual_mailbox_domains = $DOMAIN" "virtual_mailbox_base = $BASE" \
    "virtual_mailbox_maps = static:requests/" "virtual_uid_maps = static:$uid" \
    "virtual_gid_maps = static:$gid" "virtual_minimum_uid = 1" \
    "virtual_destination_concurrency_limit = 20" "virtual_destination_recipient_limit = 1" \
    "message_size_limit = 10240000" "smtpd_peername_lookup = no"
  postconf -M "127.0.0.1:$PORT/inet=127.0.0.1:$PORT inet n - y - - smtpd"
}

empty() {
  mkdir -p "$MAILDIR"/{new,cur,tmp}
  find "$MAILDIR/new" "$MAILDIR/cur" "$MAILDIR/tmp" -type f -delete
  chown -R "$(id -u nobody):$(id -g nobody)" "$MAILDIR"
}

start() {
  install
  configure
  empty
  if postfix status >/dev/null 2>&1; then
    # Running (perhaps for another script): reload, which picks up the new listener too.
    postfix reload >/dev/null 2>&1
  else
    # Temporary files of a cleanup process killed by an earlier `postfix stop` make postsuper warn,
    # and a warning it cannot log (maillog_file before postlogd runs) fails the start.
    find /var/spool/postfix/incoming -maxdepth 1 -regextype posix-extended \
      -regex '.*/[0-9]+\.[0-9]+' -delete 2>/dev/null || true
  fi
  if ! postfix status >/dev/null 2>&1 && ! postfix start >/dev/null 2>&1; then
    echo "postfix did not start: see $(postconf -h maillog_file)" >&2
    exit 1
  fi
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      # Mail left in the queue by an earlier run would land in this run's Maildir: let it be
      # delivered (30 s at most), then empty the Maildir.
      postqueue -f >/dev/null 2>&1 || true
      for _ in $(seq 60); do
        postqueue -p 2>/dev/null | grep -q "Mail queue is empty" && break
        sleep 0.5
      done
      empty
      echo "postfix listens on 127.0.0.1:$PORT and delivers $DOMAIN to $MAILDIR" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "postfix does not listen on 127.0.0.1:$PORT" >&2
  exit 1
}

case "${1:-start}" in
  start) start ;;
  empty) empty ;;
  stop) postfix stop >/dev/null 2>&1 || true ;;
  maildir) echo "$MAILDIR" ;;
  *) echo "usage: $0 start|empty|stop|maildir" >&2; exit 2 ;;
esac
