#!/bin/bash
# make image-test: builds the container image and runs README "Deploying"'s commands with Docker
# or podman, whichever works here (ENGINE=docker|podman chooses), then compose.yaml's topology:
#   1. `build -t gensendrep .`, then a container on a new named volume: health 200, a webhook
#      stored and read back, and read again by a new container on the same volume; the image's
#      HEALTHCHECK says healthy;
#   2. the same image with PORT=9090: served there, and the HEALTHCHECK still says healthy;
#   3. compose: the image is built once for both services; PostgreSQL's healthcheck is not
#      satisfied while the database initialises on its Unix socket; both instances become
#      healthy and share data (a password full of @:/#% included); every log line is JSON.
# Not part of `make test`: it takes minutes and needs a container engine.
#
# Base images that are not there yet (debian:12-slim, postgres:15, redis:7) are pulled when
# IMAGE_TEST_PULL=1; otherwise, for machines that reach no image registry, stand-ins are built:
# a minimal Debian 12 root from debootstrap (from the mirror apt is configured with) imported as
# debian:12-slim, and Debian's PostgreSQL 15 and Redis 7 on it (scripts/image-standins/).
# Everything the test creates (containers, volumes, networks, images) is removed at the end; the
# debootstrap root is kept in build/image-test/ for the next run. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/build/image-test
mkdir -p "$WORK"
PY=/usr/bin/python3
RUN_ID=gsrit$$
LOG=$WORK/$RUN_ID.log
: >"$LOG"

say() { printf 'image-test: %s\n' "$*" >&2; }
fail() {
  say "FAIL: $*"
  exit 1
}
# Runs a command with its output in the log (shown when it fails).
quiet() {
  if ! "$@" >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    fail "$*"
  fi
}

# ---- the engine ----
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
  else
    fail "neither a running Docker nor podman (scripts/deps.sh image installs podman)"
  fi
fi
E=$ENGINE
BUILD=("$E" build)
# podman's default (OCI) image format has no HEALTHCHECK; README says so too.
[ "$E" = podman ] && BUILD+=(--format docker)
if [ "$E" = podman ]; then
  command -v podman-compose >/dev/null 2>&1 || fail "podman-compose missing (scripts/deps.sh image)"
  COMPOSE=(podman-compose)
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  fail "no docker compose"
fi
say "engine: $E ($("$E" --version | head -1)); compose: ${COMPOSE[*]}; log: $LOG"

# ---- what exists before, so that the end removes exactly what the test made ----
list_images() { "$E" images -aq --no-trunc 2>/dev/null | sort -u; }
list_volumes() { "$E" volume ls -q 2>/dev/null | sort -u; }
IMAGES_BEFORE=$(list_images)
VOLUMES_BEFORE=$(list_volumes)
SAVED_TAG=""
if "$E" image inspect gensendrep >/dev/null 2>&1; then
  SAVED_TAG=gensendrep-saved-by-$RUN_ID
  "$E" tag gensendrep "$SAVED_TAG"
fi
SINGLE=$RUN_ID-single
PROJECT=$RUN_ID
export API_SECRET_KEY
API_SECRET_KEY=$(openssl rand -hex 32)

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/compose.yaml" "$@"; }

cleanup() {
  local rc=$?
  set +e
  say "cleaning up"
  compose down -v >>"$LOG" 2>&1
  local c
  for c in $("$E" ps -aq --filter "label=com.docker.compose.project=$PROJECT") \
    $("$E" ps -aq --filter "name=^$SINGLE"); do
    "$E" rm -f -v "$c" >>"$LOG" 2>&1
  done
  [ "$E" = podman ] && podman pod rm -f "pod_$PROJECT" >>"$LOG" 2>&1
  for c in $("$E" network ls -q --filter "label=com.docker.compose.project=$PROJECT") \
    $("$E" network ls -q --filter "name=^${PROJECT}_default\$"); do
    "$E" network rm "$c" >>"$LOG" 2>&1
  done
  local v
  for v in $(comm -13 <(echo "$VOLUMES_BEFORE") <(list_volumes)); do
    "$E" volume rm -f "$v" >>"$LOG" 2>&1
  done
  # A second pass removes what an image built on it kept in place the first time.
  local i
  for _ in 1 2; do
    for i in $(comm -13 <(echo "$IMAGES_BEFORE") <(list_images)); do
      "$E" rmi -f "$i" >>"$LOG" 2>&1
    done
  done
  if [ -n "$SAVED_TAG" ]; then
    "$E" tag "$SAVED_TAG" gensendrep >>"$LOG" 2>&1
    "$E" rmi "$SAVED_TAG" >>"$LOG" 2>&1
  fi
  [ -n "${CONTAINERS_CONF_TMP:-}" ] && rm -f "$CONTAINERS_CONF_TMP"
  if [ $rc = 0 ]; then
    say "PASS"
    rm -f "$LOG"
  else
    say "FAILED (log: $LOG)"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# status URL: the HTTP status, or 000 when nothing answers.
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

# wait_health PORT SECONDS [CONTAINER...]: until GET /api/v1/health answers 200; fails early when
# one of the containers has exited for good.
wait_health() {
  local port=$1 secs=$2 deadline c
  shift 2
  deadline=$((SECONDS + secs))
  while [ "$(status "http://127.0.0.1:$port/api/v1/health")" != 200 ]; do
    for c in "$@"; do
      if [ "$("$E" inspect -f '{{.State.Status}}' "$c" 2>/dev/null)" = exited ] &&
        [ "$("$E" inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$c")" != unless-stopped ]; then
        "$E" logs "$c" 2>&1 | tail -n 20 >&2
        fail "container $c exited"
      fi
    done
    if [ $SECONDS -ge $deadline ]; then
      for c in "$@"; do "$E" logs "$c" 2>&1 | tail -n 20 >&2; done
      fail "health on port $port did not answer 200 within ${secs}s"
    fi
    sleep 1
  done
}

# hc CONTAINER: runs the container's HEALTHCHECK once (as the engine would); its exit status.
hc() {
  if [ "$E" = podman ]; then
    podman healthcheck run "$1" >>"$LOG" 2>&1
  else
    local cmd
    cmd=$(docker inspect -f '{{json .Config.Healthcheck.Test}}' "$1")
    "$PY" - "$1" "$cmd" <<'EOF'
import json, subprocess, sys
name, test = sys.argv[1], json.loads(sys.argv[2] or "null")
if not test or test[0] == "NONE":
    sys.exit(2)
argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
sys.exit(subprocess.run(["docker", "exec", name] + argv, capture_output=True, timeout=30).returncode)
EOF
  fi
}

# wait_healthy CONTAINER SECONDS: the HEALTHCHECK passes and the engine reports "healthy".
wait_healthy() {
  local c=$1 deadline=$((SECONDS + $2)) st
  while true; do
    if [ "$E" = podman ]; then hc "$c" || true; fi
    st=$("$E" inspect -f '{{.State.Health.Status}}' "$c" 2>/dev/null || true)
    [ "$st" = healthy ] && return 0
    [ $SECONDS -ge $deadline ] && fail "container $c: health status '$st', not healthy"
    sleep 2
  done
}

# ---- base images (stand-ins when no registry is reachable) ----
have_image() { "$E" image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
  # The mirror apt uses for bookworm: deb822 .sources first, then one-line lists.
  local m
  m=$(awk 'BEGIN { RS = ""; FS = "\n" }
    { uri = ""; suites = ""; types = ""
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^URIs:/) uri = $i; if ($i ~ /^Suites:/) suites = $i; if ($i ~ /^Types:/) types = $i
      }
      sub(/^URIs:[ \t]*/, "", uri); split(uri, u, /[ \t]+/)
      if (types ~ /[ \t]deb([ \t]|$)/ && suites ~ /[ \t]bookworm([ \t]|$)/ && u[1] != "") { print u[1]; exit }
    }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" && / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' || true)
  fi
  echo "$m"
}

standin_debian() {
  local tar=$WORK/debian-12-slim.tar
  if [ ! -s "$tar" ]; then
    [ "$(id -u)" = 0 ] || fail "debootstrap needs root (or IMAGE_TEST_PULL=1 on a machine that reaches a registry)"
    command -v debootstrap >/dev/null || fail "debootstrap missing (scripts/deps.sh image)"
    local mirror root
    mirror=$(debian_mirror)
    root=$WORK/debian-root
    rm -rf "$root"
    say "stand-in debian:12-slim: debootstrap bookworm from ${mirror:-the default mirror} (a few minutes)"
    # shellcheck disable=SC2086
    quiet timeout 1200 debootstrap --variant=minbase bookworm "$root" $mirror
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
    tar --numeric-owner -C "$root" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$root"
  fi
  quiet "$E" import --change 'CMD ["bash"]' "$tar" docker.io/library/debian:12-slim
}

base_image() { # NAME [STAND-IN BUILDER]
  have_image "$1" && return 0
  if [ "${IMAGE_TEST_PULL:-0}" = 1 ]; then
    say "pulling $1"
    quiet timeout 900 "$E" pull "docker.io/library/$1"
  else
    say "building a stand-in for $1"
    "$2"
  fi
}
standin_postgres() {
  quiet timeout 900 "${BUILD[@]}" -t docker.io/library/postgres:15 \
    -f scripts/image-standins/postgres.Dockerfile scripts/image-standins
}
standin_redis() {
  quiet timeout 900 "${BUILD[@]}" -t docker.io/library/redis:7 \
    -f scripts/image-standins/redis.Dockerfile scripts/image-standins
}

# podman on a machine whose limits it cannot apply: some sandboxes let no process raise its
# open-files/process limits to podman's default (1048576), and crun refuses cgroup v1 with
# controllers also on v2 ("hybrid"). Containers then get this machine's limits and runc,
# through a CONTAINERS_CONF of the test's own (nothing on the machine changes).
adapt_podman() {
  [ "$E" = podman ] || return 0
  local out ulimits="" runtime="" try nofile nproc pidmax
  for try in 1 2 3; do
    if out=$(timeout 120 podman run --rm docker.io/library/debian:12-slim true 2>&1); then
      [ $try = 1 ] || say "podman here needs${ulimits:+ nofile=$nofile nproc=$nproc}${runtime:+ runtime=$runtime} (through CONTAINERS_CONF)"
      return 0
    fi
    case "$out" in
      *rlimit*)
        [ -z "$ulimits" ] || fail "podman cannot start a container: $out"
        nofile=$(ulimit -Hn)
        nproc=$(ulimit -Hu)
        pidmax=$(cat /proc/sys/kernel/pid_max)
        if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pidmax" ]; then nproc=$pidmax; fi
        ulimits="\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\""
        ;;
      *"hybrid mode"*)
        if [ -n "$runtime" ] || ! command -v runc >/dev/null; then
          fail "podman cannot start a container: $out"
        fi
        runtime=runc
        ;;
      *) fail "podman cannot start a container: $out" ;;
    esac
    CONTAINERS_CONF_TMP=${CONTAINERS_CONF_TMP:-$(mktemp)}
    : >"$CONTAINERS_CONF_TMP"
    if [ -n "$ulimits" ]; then
      printf '[containers]\ndefault_ulimits = [%s]\n' "$ulimits" >>"$CONTAINERS_CONF_TMP"
    fi
    if [ -n "$runtime" ]; then
      printf '[engine]\nruntime = "%s"\n' "$runtime" >>"$CONTAINERS_CONF_TMP"
    fi
    export CONTAINERS_CONF=$CONTAINERS_CONF_TMP
  done
  fail "podman cannot start a container: $out"
}

base_image debian:12-slim standin_debian
adapt_podman
base_image postgres:15 standin_postgres
base_image redis:7 standin_redis

# ---- 1. README: build, run on a new named volume ----
WEBHOOK='{"emailId":"user@example.com","accountId":"acc123","conversationId":"conv_abc123",
  "transcript":[{"timestamp":"2024-01-15T10:30:00Z","speaker":"user",
                 "content":"Hello, I need help","messageId":"msg_123"}],
  "metadata":{"sessionId":"sess_456","agentId":"agent_01","duration":300,
              "messageCount":10,"platform":"web","userAgent":"Mozilla/5.0..."}}'
post() { # PORT BODY -> HTTP status
  status -X POST "http://127.0.0.1:$1/api/v1/webhook/conversation" \
    -H "Authorization: Bearer $API_SECRET_KEY" -H 'Content-Type: application/json' -d "$2"
}
get_conv() { # PORT ID -> body (fails unless 200)
  curl -fsS --max-time 5 "http://127.0.0.1:$1/api/v1/conversations/$2" \
    -H "Authorization: Bearer $API_SECRET_KEY"
}

say "building the image: ${BUILD[*]} -t gensendrep ."
quiet timeout 1800 "${BUILD[@]}" -t gensendrep .

# Docker gives a new named volume the owner of the directory it is mounted on, as the image has
# it (root when the image lacks it, and the server then cannot write); podman chowns a new volume
# to the container's user whatever the image holds, so look at the image's own files too.
quiet "$E" create --name "$SINGLE-fs" gensendrep
uid=$("$E" run --rm --entrypoint id gensendrep -u 2>>"$LOG")
owner=$("$E" export "$SINGLE-fs" 2>>"$LOG" | tar -tv --numeric-owner |
  awk '$NF ~ /^(\.\/)?var\/lib\/gensendrep\/data\/?$/ { split($2, o, "/"); print o[1] }')
quiet "$E" rm -f -v "$SINGLE-fs"
[ "$owner" = "$uid" ] ||
  fail "the image's /var/lib/gensendrep/data belongs to '${owner:-nobody: it is missing}', not to the service user ($uid)"

P1=$(free_port)
say "run on a new named volume $RUN_ID-data (port $P1)"
quiet "$E" run -d --name "$SINGLE" -p "127.0.0.1:$P1:8000" -e API_SECRET_KEY \
  -v "$RUN_ID-data:/var/lib/gensendrep/data" gensendrep
wait_health "$P1" 60 "$SINGLE"
[ "$(post "$P1" "$WEBHOOK")" = 200 ] || fail "webhook not accepted"
get_conv "$P1" conv_abc123 | grep -q '"conversationId":"conv_abc123"' || fail "webhook not read back"
wait_healthy "$SINGLE" 90
quiet "$E" rm -f "$SINGLE"
quiet "$E" run -d --name "$SINGLE-again" -p "127.0.0.1:$P1:8000" -e API_SECRET_KEY \
  -v "$RUN_ID-data:/var/lib/gensendrep/data" gensendrep
wait_health "$P1" 60 "$SINGLE-again"
get_conv "$P1" conv_abc123 >/dev/null || fail "a new container on the same volume lost the webhook"
quiet "$E" rm -f "$SINGLE-again"
say "ok: data directory owned by the service user; health 200, webhook stored and read back," \
  "kept in the volume; HEALTHCHECK healthy"

# ---- 2. another PORT ----
P2=$(free_port)
say "run with PORT=9090 (published on $P2)"
quiet "$E" run -d --name "$SINGLE-port" -p "127.0.0.1:$P2:9090" -e PORT=9090 -e API_SECRET_KEY \
  gensendrep
wait_health "$P2" 60 "$SINGLE-port"
wait_healthy "$SINGLE-port" 90
quiet "$E" rm -f -v "$SINGLE-port"
say "ok: PORT=9090 served and HEALTHCHECK healthy"

# ---- 3. compose ----
# The first `compose up` builds the image (once, for both services).
quiet "$E" rmi gensendrep
[ "$E" = podman ] && export BUILDAH_FORMAT=docker # README: keeps the HEALTHCHECK
unset CORS_ORIGINS # the default: no CORS
export POSTGRES_PASSWORD='p@ss:w/rd#%40x' GENSENDREP_A_PORT GENSENDREP_B_PORT
GENSENDREP_A_PORT=127.0.0.1:$(free_port)
GENSENDREP_B_PORT=127.0.0.1:$(free_port)
PA=${GENSENDREP_A_PORT##*:}
PB=${GENSENDREP_B_PORT##*:}
say "compose up (project $PROJECT, ports $PA and $PB)"
svc() { # SERVICE -> container name
  "$E" ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -1
}
compose_up() { # [SERVICE...]: compose up -d, its output kept in UP_LOG
  if ! timeout 1800 "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/compose.yaml" up -d "$@" \
    >>"$UP_LOG" 2>&1; then
    tail -n 40 "$UP_LOG" >&2
    fail "compose up $*"
  fi
}
UP_LOG=$WORK/$RUN_ID-up.log
: >"$UP_LOG"
# PostgreSQL first: Docker's `compose up` waits for it to be healthy before it returns, and the
# check below must see it initialising. Then the rest, as README's single `up -d` would.
compose_up postgres
PG=$(svc postgres)
[ -n "$PG" ] || fail "compose did not create the postgres container"
# While PostgreSQL initialises on its Unix socket only, the healthcheck must not pass. The
# stand-in holds that phase until told (30 s at most); the real image's lasts as long as its
# initialisation, too short to catch reliably, so this check needs the stand-in.
if [ -n "$("$E" image inspect -f '{{index .Config.Labels "org.gensendrep.image-test-standin"}}' \
  postgres:15 2>/dev/null)" ]; then
  deadline=$((SECONDS + 120))
  until "$E" exec "$PG" sh -c 'pg_isready -q && ! pg_isready -q -h 127.0.0.1' >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && fail "never saw PostgreSQL's socket-only initialisation phase"
    sleep 0.5
  done
  if hc "$PG"; then
    fail "postgres healthcheck passed while the server listened on its Unix socket only"
  fi
  say "ok: postgres healthcheck not satisfied during initialisation"
  "$E" exec "$PG" touch /tmp/standin-init-done >/dev/null 2>&1 || true
fi
compose_up
cat "$UP_LOG" >>"$LOG"
if [ "$E" = podman ]; then
  builds=$(grep -c '^podman build .*-t gensendrep ' "$UP_LOG" || true)
  [ "$builds" = 1 ] || fail "compose built the gensendrep image $builds times, not once"
fi
rm -f "$UP_LOG"
A=$(svc gensendrep-a)
B=$(svc gensendrep-b)
if [ -z "$A" ] || [ -z "$B" ]; then fail "compose did not create the gensendrep containers"; fi
# No "${...}" may reach a container as it is (podman-compose 1.0 passed "${CORS_ORIGINS:-}").
for c in "$A" "$B" "$PG"; do
  # shellcheck disable=SC2016 # a literal ${
  if "$E" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$c" | grep -F '${' >&2; then
    fail "$c: a variable reached the container uninterpolated"
  fi
done

wait_healthy "$PG" 120

wait_health "$PA" 180 "$A"
wait_health "$PB" 180 "$B"
for p in "$PA" "$PB"; do
  body=$(curl -fsS --max-time 5 "http://127.0.0.1:$p/api/v1/health")
  case "$body" in
    *'"database":"connected"'*'"redis":"connected"'* | *'"redis":"connected"'*'"database":"connected"'*) ;;
    *) fail "health on $p: $body" ;;
  esac
done
[ "$(post "$PA" "$WEBHOOK")" = 200 ] || fail "webhook to gensendrep-a not accepted"
get_conv "$PB" conv_abc123 | grep -q '"conversationId":"conv_abc123"' ||
  fail "gensendrep-b does not see what gensendrep-a stored"
wait_healthy "$A" 90
wait_healthy "$B" 90
for c in "$A" "$B"; do
  "$E" logs "$c" 2>&1 | "$PY" -c '
import json, sys
for n, line in enumerate(sys.stdin, 1):
    try:
        json.loads(line)
    except ValueError:
        sys.exit("line %d is not JSON: %r" % (n, line[:200]))' || fail "$c: a log line is not JSON"
done
say "ok: compose: both instances healthy, sharing PostgreSQL and Redis, logs are JSON"
