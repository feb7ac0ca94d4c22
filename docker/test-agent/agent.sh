# Test agent. Environment (besides what ClawHQ sets):
#   TEST_AGENT_MODE      healthy (default) | crash (exit 3 at once) | unhealthy ({"ok":false})
#                        | catchall (200 with a non-JSON body) | oom (healthy, then allocates
#                        memory until the kernel kills it) | sicken (healthy, then {"ok":false})
#   TEST_AGENT_AFTER     seconds before oom/sicken set in (default 3)
#   TEST_AGENT_HEARTBEAT seconds between heartbeats (default 2; 0 disables)
bb=/bin/busybox
mode=${TEST_AGENT_MODE:-healthy}
# ClawHQ's secrets come in CLAWHQ_SECRETS_FILE (a JSON object, written before each start),
# read and removed at once, as the OpenClaw image does; missing, the start fails (exit 78).
if [ -n "$CLAWHQ_SECRETS_FILE" ]; then
  secrets=$($bb cat "$CLAWHQ_SECRETS_FILE" 2>/dev/null)
  $bb rm -f "$CLAWHQ_SECRETS_FILE"
  if [ -z "$secrets" ]; then
    echo "test agent: CLAWHQ_SECRETS_FILE: $CLAWHQ_SECRETS_FILE is not there" >&2
    exit 78
  fi
  CLAWHQ_WEBHOOK_TOKEN=$(echo "$secrets" |
    $bb sed -n 's/.*"CLAWHQ_WEBHOOK_TOKEN": *"\([^"]*\)".*/\1/p')
  unset secrets
fi
echo "test agent ${CLAWHQ_AGENT_ID:-?} starting in mode $mode"
root=/www
case "$mode" in
  crash) echo "test agent: crashing on purpose" >&2; exit 3 ;;
  unhealthy|catchall|sicken)
    root=/tmp/www
    $bb mkdir -p $root
    case "$mode" in
      unhealthy) echo '{"ok":false}' > $root/healthz ;;
      catchall) echo '<html>control ui</html>' > $root/healthz ;;
      sicken) $bb cp /www/healthz $root/healthz ;;
    esac ;;
esac

heartbeat() {
  interval=${TEST_AGENT_HEARTBEAT:-2}
  [ "$interval" = 0 ] && return
  [ -n "$CLAWHQ_WEBHOOK_URL" ] || return
  while :; do
    # busybox wget's own -T option crashes in Debian's static build; `timeout` does the job.
    $bb timeout 5 $bb wget -q -O /dev/null \
      --header "Authorization: Bearer $CLAWHQ_WEBHOOK_TOKEN" \
      --header "Content-Type: application/json" \
      --post-data '{"type":"heartbeat"}' "$CLAWHQ_WEBHOOK_URL" 2>/dev/null
    $bb sleep "$interval"
  done
}
heartbeat &

trap 'echo "test agent: stopping"; exit 0' TERM INT
$bb httpd -f -p "${TEST_AGENT_PORT:-18789}" -h "$root" &
server=$!

case "$mode" in
  oom)
    $bb sleep "${TEST_AGENT_AFTER:-3}"
    echo "test agent: allocating memory until killed"
    hog=x
    while :; do hog="$hog$hog"; done ;;
  sicken)
    $bb sleep "${TEST_AGENT_AFTER:-3}"
    echo "test agent: turning unhealthy"
    echo '{"ok":false}' > $root/healthz ;;
esac
wait $server
