#!/usr/bin/env bash
# Installs the Debian 12 packages repeaterd builds, runs and tests with.
# Idempotent: asks apt only for what dpkg says is missing, and prints nothing when nothing is.
set -euo pipefail

build_pkgs=(
  g++ cmake ninja-build pkg-config
  libboost1.81-dev libboost-url1.81-dev
  libssl-dev libsqlite3-dev nlohmann-json3-dev libpugixml-dev libspdlog-dev
  libyaml-cpp-dev libcli11-dev libcurl4-openssl-dev libsystemd-dev prometheus-cpp-dev libdeflate-dev
  # repeaterd links tcmalloc (libtcmalloc_minimal) instead of glibc's malloc.
  libgoogle-perftools-dev
)
test_pkgs=(
  libgtest-dev libgmock-dev python3 sqlite3 openssl curl nginx-light wrk python3-aiosmtpd apache2
  # promtool checks the /metrics exposition in tests.
  prometheus
  # test_package builds the .deb (dpkg-shlibdeps), installs it into a scratch root whose
  # maintainer scripts run systemd-sysusers and systemd-tmpfiles, and lints the man pages.
  dpkg-dev systemd groff-base
  # test_logrotate runs config/repeaterd.logrotate against a live daemon.
  logrotate
  # scripts/fuzz builds the libFuzzer targets (tests/fuzz) with clang 16 (14 cannot compile
  # Boost 1.81's coroutines against libstdc++ 12) and its fuzzer and sanitizer runtimes.
  clang-16 libclang-rt-16-dev
)
# The webhook signature tests run the standardwebhooks npm package under node; a node from
# elsewhere will do.
if ! command -v node >/dev/null 2>&1; then test_pkgs+=(nodejs npm); fi

want=("${build_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${test_pkgs[@]}"); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "repeaterd needs these Debian packages: ${missing[*]}" >&2
  echo "run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# nginx's package starts a system nginx on port 80; the tests run their own, so keep it from starting.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
