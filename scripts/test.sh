#!/usr/bin/env bash
# Install everything the tests need (Debian packages, a .venv with the test extras)
# and run the whole suite. Extra arguments go to pytest, e.g. scripts/test.sh -k config.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Debian packages the tests drive: tool -> package.
declare -A tools=(
  [nft]=nftables
  [turnutils_uclient]=coturn
  [redis-server]=redis-server
  [sipp]=sip-tester
  [kamailio]=kamailio
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [promtool]=prometheus
  [tshark]=tshark
  [clang]=clang
  [gcc]=gcc
  [llc]=llvm
  [bpftool]=bpftool
  [ethtool]=ethtool
  [curl]=curl
  [espeak-ng]=espeak-ng
  [dovecot]=dovecot-imapd
  [/usr/lib/dovecot/lmtp]=dovecot-lmtpd
  [postfix]=postfix
  [lame]=lame
  [opusenc]=opus-tools
)
missing=()
for tool in "${!tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${tools[$tool]}")
done
apt_install "${missing[@]}"
# libnice's GObject bindings for the system Python (tests/msturn/test_libnice.py): no command to look for.
/usr/bin/python3 -c "import gi; gi.require_version('Nice', '0.1')" >/dev/null 2>&1 || apt_install gir1.2-nice-0.1 python3-gi
# The kernel offload's BPF headers (tests/offload): no command to look for.
[ -e /usr/include/bpf/bpf_helpers.h ] || apt_install libbpf-dev
# libc headers for the native forwarder (edge/offload/forwarder.c, compiled with cc): gcc recommends them.
[ -e /usr/include/x86_64-linux-gnu/sys/socket.h ] || apt_install libc6-dev
# Kamailio's TLS module (tests/sip/test_record_route.py, the SBC's TLS leg to umedge): no command to look for.
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || apt_install kamailio-tls-modules
# Packages may start their daemons on systemd machines; the tests start their own on free ports.
stop_services kamailio coturn redis-server dovecot postfix

scripts/bootstrap.sh test
# Types and lint first: both are configured in pyproject.toml and must pass.
echo "mypy:" && .venv/bin/mypy
echo "ruff:" && .venv/bin/ruff check .
echo "promtool:" && promtool check rules contrib/prometheus/alerts.yml  # the alert rules operators import
export UMEDGE_REQUIRE_TOOLS=1   # a missing tool fails its test instead of skipping it
# Two processes, whole files each (a file's node fixtures stay in one process); UMEDGE_TEST_WORKERS=0 for one.
exec .venv/bin/python -m pytest -q -n "${UMEDGE_TEST_WORKERS:-2}" --dist loadfile "$@"
