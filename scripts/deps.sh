#!/bin/sh
# Makes sure the Debian packages a make target needs are installed.
#   deps.sh build|test|bench|image
# As root it installs what is missing with apt-get; otherwise it names the packages and fails.
set -eu
# libcurl4-openssl-dev, not the GnuTLS flavour: the OpenSSL already linked (libcrypto, libpq)
# does TLS for the ElevenLabs API too, and its runtime (libcurl4) is what Debian's curl uses.
# tzdata: analytics' time zones are read from /usr/share/zoneinfo at run time (core/tz.c).
build="gcc make pkg-config libmicrohttpd-dev libgnutls28-dev libjansson-dev libsqlite3-dev libpq-dev libhiredis-dev libssl-dev libcurl4-openssl-dev libnats-dev tzdata"
test="$build openssl libcmocka-dev python3-pytest python3-pytest-xdist python3-requests clang-format clang-14 libclang-rt-14-dev postgresql redis-server nats-server"
# prometheus: tests/integration/test_metrics.py starts its own server (the package's service,
# which a systemd host starts on install, is stopped and disabled below).
test="$test prometheus"
# chromium, chromium-driver, python3-selenium: tests/integration/test_dashboard.py drives the
# dashboard in headless Chromium (it fails, never skips, without them).
test="$test chromium chromium-driver python3-selenium"
bench="$build wrk postgresql redis-server"
# make image-test: podman (root) with netavark/aardvark-dns networks (which need iptables), runc
# where crun cannot run, podman-compose, and debootstrap for stand-in base images.
image="podman runc netavark aardvark-dns iptables podman-compose debootstrap curl openssl"
case "${1:-build}" in
  build) want=$build ;;
  test) want=$test ;;
  bench) want=$bench ;;
  image) want=$image ;;
  *) echo "deps.sh: unknown set '$1'" >&2; exit 2 ;;
esac
if ! command -v dpkg-query >/dev/null 2>&1; then
  exit 0 # not Debian: trust the toolchain; the build names anything missing
fi
missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "Installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >&2
  case " $missing " in
    *" prometheus "*)
      if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
      fi
      ;;
  esac
else
  echo "Missing Debian packages:$missing" >&2
  echo "Install them with: sudo apt-get install$missing" >&2
  exit 1
fi
