#!/usr/bin/env bash
# Sets up crowdcap on a fresh Debian / Raspberry Pi OS machine: system packages, a virtual
# environment in .venv, and the package with its extras. Safe to run again.
#   ./install.sh           runtime only
#   ./install.sh test      runtime + test tools
set -euo pipefail
cd "$(dirname "$0")"
extras="${1:-}"

# open3d's wheel links libusb-1.0; mosquitto is the broker the tests spawn; systemd-analyze checks units;
# nats-server runs the tests' clustered broker.
need=()
dpkg -s libusb-1.0-0 >/dev/null 2>&1 || need+=(libusb-1.0-0)
# On aarch64 (Raspberry Pi OS) open3d's wheel also links libEGL and libgfortran, which it does not bundle.
if [ "$(uname -m)" = aarch64 ]; then
  for p in libegl1 libgfortran5; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
fi
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ "$extras" = test ]; then
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)  # tests read status as any MQTT tool does
  # chromium: the real (headless) browser the report-page test renders and screenshots in.
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  # nats-server: the tests' 3-node JetStream cluster with MQTT (tests/nats_cluster.py)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "install.sh: apt-get install ${need[*]}" >&2
    $sudo apt-get update -qq || true
    # mosquitto/systemd/chromium are optional: an embedded broker stands in, the browser test skips;
    # only libusb is required.
    $sudo apt-get install -y -qq "${need[@]}" >/dev/null || \
      $sudo apt-get install -y -qq libusb-1.0-0 >/dev/null || \
      echo "install.sh: warning: could not install ${need[*]}" >&2
  else
    echo "install.sh: warning: no apt-get; make sure ${need[*]} are installed" >&2
  fi
fi

py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e "$spec"
echo "install.sh: ready (.venv/bin/crowdcap)" >&2
