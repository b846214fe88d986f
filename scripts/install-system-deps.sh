#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers: DCMTK (findscu, echoscu,
# storescu, wlmscpfs), Orthanc, and headless Chromium with its WebDriver (the admin console's
# browser tests), systemd for `systemd-analyze verify` of the unit file, PostgreSQL (the second
# store backend: tests run initdb/pg_ctl themselves in temporary folders) and HAProxy (in front of
# several brokers in the HA tests), Prometheus (promtool checks the shipped alert rules) and rsyslog
# (the audit repository the IHE ATNA tests send to; rsyslog-openssl for its TLS listener).
# Services are not started by the install (policy-rc.d refuses them): tests start their own
# instances on loopback ports. Installs only what is missing.
set -euo pipefail
packages=(dcmtk orthanc chromium chromium-driver systemd postgresql haproxy prometheus rsyslog
          rsyslog-openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
trap '[ $created_policy -eq 1 ] && $SUDO rm -f "$policy"' EXIT
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
