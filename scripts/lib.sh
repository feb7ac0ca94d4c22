# Shared by scripts/run and scripts/test: make sure what ClawHQ needs is installed and running.
# On Debian as root, missing pieces are installed from Debian's packages and started; anywhere
# else, each function says exactly what to install and stops.

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT_DIR/.venv"
STATE_DIR=${CLAWHQ_SCRIPTS_STATE:-/var/tmp/clawhq-scripts}

say() { printf '[clawhq] %s\n' "$*" >&2; }
die() { printf '[clawhq] ERROR: %s\n' "$*" >&2; exit 1; }

can_install() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; }

_apt_updated=
apt_install() {
  can_install || die "missing: $*. Install it (Debian: apt-get install -y $*) or run this as root on Debian."
  if [ -z "$_apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    _apt_updated=1
  fi
  say "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

ensure_venv() {
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python >= 3.11 is needed (found $(python3 --version 2>&1))"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; } \
      || die "python3 -m venv failed: install python3-venv"
  fi
  local stamp="$VENV/.clawhq-installed" want
  want=$(cat "$ROOT_DIR/pyproject.toml" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing ClawHQ and its dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e "$ROOT_DIR[dev]" || die "pip install failed"
    echo "$want" > "$stamp"
  fi
}

docker_ok() { "$VENV/bin/python" - <<'PY' 2>/dev/null
import os, docker
docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", version="1.41", timeout=5).ping()
PY
}

ensure_docker() {
  docker_ok && return 0
  [ -n "${DOCKER_HOST:-}" ] && die "DOCKER_HOST=$DOCKER_HOST does not answer: start that engine or unset DOCKER_HOST"
  command -v dockerd >/dev/null || apt_install docker.io
  can_install || die "Docker Engine is installed but not running: start dockerd (as root), or set DOCKER_HOST"
  mkdir -p "$STATE_DIR"
  say "starting dockerd (log: $STATE_DIR/dockerd.log)"
  setsid nohup dockerd >"$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    docker_ok && return 0
    sleep 0.5
  done
  tail -n 20 "$STATE_DIR/dockerd.log" >&2 || true
  die "dockerd did not become ready within 60 s (see $STATE_DIR/dockerd.log)"
}

PG_ROLE=clawhq
PG_PASSWORD=clawhq
ensure_postgres() {
  if [ -n "${CLAWHQ_TEST_POSTGRES_URL:-}" ]; then
    say "using PostgreSQL at CLAWHQ_TEST_POSTGRES_URL"
    return 0
  fi
  command -v pg_lsclusters >/dev/null && [ -n "$(ls /usr/lib/postgresql/*/bin/postgres 2>/dev/null)" ] \
    || apt_install postgresql
  can_install || die "PostgreSQL tests need a server: set CLAWHQ_TEST_POSTGRES_URL=postgresql://USER:PASS@HOST/postgres (a role that may CREATE DATABASE), or run as root on Debian"
  local cluster version name
  cluster=$(pg_lsclusters --no-header | head -n 1)
  if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
    say "creating PostgreSQL cluster $version/main"
    pg_createcluster "$version" main >/dev/null || die "pg_createcluster failed"
    cluster=$(pg_lsclusters --no-header | head -n 1)
  fi
  version=$(echo "$cluster" | awk '{print $1}')
  name=$(echo "$cluster" | awk '{print $2}')
  local port
  port=$(echo "$cluster" | awk '{print $3}')
  if ! echo "$cluster" | grep -q online; then
    say "starting PostgreSQL $version/$name"
    pg_ctlcluster "$version" "$name" start || die "pg_ctlcluster $version $name start failed"
  fi
  runuser -u postgres -- psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname='$PG_ROLE'" | grep -q 1 \
    || runuser -u postgres -- psql -p "$port" -qc "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" \
    || die "could not create the PostgreSQL role $PG_ROLE"
  export CLAWHQ_TEST_POSTGRES_URL="postgresql+psycopg://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$port/postgres"
}

ensure_busybox_static() {
  if [ -x /bin/busybox ] && ! grep -q ld-linux <(head -c 8192 /bin/busybox); then
    return 0
  fi
  apt_install busybox-static
}

# Workspace disks (docs/disks.md): ext4 images, loop-mounted.
ensure_disk_tools() {
  command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs
  command -v losetup >/dev/null || apt_install mount
}

# A real browser for the Control UI test: Debian's chromium, driven by Playwright (which then
# downloads no browser of its own).
ensure_chromium() {
  command -v chromium >/dev/null || apt_install chromium
}

# promtool checks the Prometheus alerting rules in monitoring/ (Debian's prometheus package;
# its service is not started here).
ensure_promtool() {
  command -v promtool >/dev/null || apt_install --no-install-recommends prometheus
}

# The OpenClaw image is built without an image registry: a Debian root filesystem from
# debootstrap, Node.js and openclaw from the npm registry (clawhq image build openclaw).
ensure_image_build_tools() {
  command -v debootstrap >/dev/null || apt_install debootstrap
  command -v npm >/dev/null || apt_install npm
}
