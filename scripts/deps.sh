#!/usr/bin/env bash
# Installs the Debian packages banger and its tests need (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=(qemu-system-x86 debootstrap busybox-static e2fsprogs lz4 nftables iproute2 dnsutils
      openssh-client git make gcc ca-certificates)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
