#!/usr/bin/env bash
# bootstrap.sh: the set-up shared by quickstart.sh and check.sh.
# Installs missing Debian build dependencies (as root; otherwise prints the
# exact apt-get line and stops), then autoreconf, configure and make.
# Re-running is cheap: each step is skipped when its output is current.
set -euo pipefail
cd "$(dirname "$0")"

DEB_PACKAGES=(build-essential autoconf automake libtool pkg-config
              libsqlite3-dev sqlite3 libcurl4-openssl-dev libssl-dev openssl liblz4-dev uthash-dev check)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing build dependencies. Run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
  echo "bootstrap: autoreconf"
  mkdir -p m4
  autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
fi
if [ ! -f Makefile ] || [ configure -nt config.status ]; then
  echo "bootstrap: configure"
  ./configure -q
fi
echo "bootstrap: make"
make -s -j"$(nproc)" >/dev/null
echo "bootstrap: built ./libltvfs.so and tools/ltvfs"
