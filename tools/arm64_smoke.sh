#!/usr/bin/env bash
# Emulated arm64 smoke run: the project installed and run on a Debian bookworm arm64 root (what Raspberry
# Pi OS Bookworm 64-bit is: glibc 2.36, CPython 3.11) under qemu-user, from PyPI's aarch64 wheels only.
#
#   sudo tools/arm64_smoke.sh [--root DIR] [--mirror URL] [--image FILE]... [--rebuild]
#
# Steps (each skipped when already done, so a second run only re-installs crowdcap and re-runs it):
#   1. apt: qemu-user-static + mmdebstrap (binfmt_misc is mounted if it is not, qemu-aarch64 enabled)
#   2. mmdebstrap a bookworm arm64 root in DIR (default /var/tmp/crowdcap-arm64, ~1 GB, outside the repo)
#   3. a venv in it; `pip install --only-binary :all:` of the crowdcap wheel built from this checkout, so
#      every [project].dependencies package must come as an aarch64 (or pure-Python) wheel
#   4. `crowdcap models verify` and `crowdcap redact --json` on real photos (tests/data/faces, scikit-image's
#      astronaut, and its coffee cup as a face-free control), inside the root
#   5. checks (models ok, a face region on each face photo, outputs written) and a JSON summary on stdout;
#      progress goes to stderr. Exit 0 when every check passes, 1 when one fails, 2 on bad arguments.
# Network: Debian's mirror and PyPI only, during steps 1-3; crowdcap itself downloads nothing.
# Timings are qemu-emulated on this machine's x86 cores: they say nothing about a Pi's speed.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT=/var/tmp/crowdcap-arm64
MIRROR=http://deb.debian.org/debian
REBUILD=0
IMAGES=()
MARK=.crowdcap-arm64-root
# open3d's aarch64 wheel also links libEGL and libgfortran (not bundled, unlike on x86_64).
PACKAGES=python3,python3-venv,python3-pip,libusb-1.0-0,libgl1,libegl1,libgfortran5,libglib2.0-0,libgomp1,ca-certificates

usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }
die() { echo "arm64_smoke: error: $*" >&2; exit "${2:-1}"; }
bad() { echo "arm64_smoke: error: $*" >&2; echo "(see tools/arm64_smoke.sh --help)" >&2; exit 2; }
step() { echo "arm64_smoke: [$1] $2" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --root) [ $# -ge 2 ] || bad "--root needs a folder"; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#--root=}"; shift ;;
    --mirror) [ $# -ge 2 ] || bad "--mirror needs a URL"; MIRROR="$2"; shift 2 ;;
    --image) [ $# -ge 2 ] || bad "--image needs a file"; IMAGES+=("$2"); shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    *) bad "unknown argument: $1" ;;
  esac
done

# --- arguments (checked before anything is installed or built) ---
case "$ROOT" in
  /*) ;;
  *) bad "--root $ROOT: must be an absolute path" ;;
esac
ROOT="$(realpath -m "$ROOT")"
case "$ROOT" in
  /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/opt|/proc|/root|/run|/sbin|/sys|/tmp|/usr|/var|/var/tmp)
    bad "--root $ROOT: a system folder; give a dedicated one (default /var/tmp/crowdcap-arm64)" ;;
  "$REPO"|"$REPO"/*) bad "--root $ROOT: inside the repository; the root is ~1 GB and must stay out of it" ;;
esac
if [ -e "$ROOT" ] && [ ! -d "$ROOT" ]; then bad "--root $ROOT: exists and is not a folder"; fi
if [ -d "$ROOT" ] && [ -n "$(ls -A "$ROOT")" ] && [ ! -e "$ROOT/$MARK" ]; then
  bad "--root $ROOT: not empty and not a root this script built (no $MARK); refusing to touch it"
fi
for img in ${IMAGES[@]+"${IMAGES[@]}"}; do
  [ -f "$img" ] || bad "--image $img: no such file"
  case "${img,,}" in *.jpg|*.jpeg|*.png) ;; *) bad "--image $img: not a jpg/png" ;; esac
done
[ "$(id -u)" = 0 ] || die "needs root (apt, binfmt_misc, mmdebstrap, chroot): run it with sudo" 2
[ "$(uname -m)" != aarch64 ] || echo "arm64_smoke: note: already on aarch64; no emulation involved" >&2

# --- 1. host tools ---
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  step 1 "apt-get install ${need[*]}"
  command -v apt-get >/dev/null || die "no apt-get: install ${need[*]} yourself"
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" binfmt-support >/dev/null \
    || die "apt-get install ${need[*]} failed"
else
  step 1 "qemu-user-static and mmdebstrap present"
fi
if [ "$(uname -m)" != aarch64 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || die "cannot mount binfmt_misc (container without the privilege?); run on a host or a privileged container"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || systemctl restart systemd-binfmt 2>/dev/null || true
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 is not registered in binfmt_misc"
  QEMU_INTERP="$(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
fi

# --- 2. the Debian bookworm arm64 root ---
if [ "$REBUILD" = 1 ] && [ -e "$ROOT/$MARK" ]; then
  step 2 "--rebuild: removing $ROOT"
  rm -rf --one-file-system "$ROOT"
fi
if [ ! -e "$ROOT/$MARK" ]; then
  step 2 "mmdebstrap bookworm arm64 into $ROOT (a few minutes, ~300 MB from $MIRROR)"
  rm -rf --one-file-system "$ROOT.tmp"
  nice -n 10 mmdebstrap --arch=arm64 --variant=apt --include="$PACKAGES" bookworm "$ROOT.tmp" "$MIRROR" \
    >&2 || die "mmdebstrap failed (see above)"
  rmdir "$ROOT" 2>/dev/null || true
  mv "$ROOT.tmp" "$ROOT"
  date -u +%FT%TZ > "$ROOT/$MARK"
else
  step 2 "root $ROOT present (built $(cat "$ROOT/$MARK")); --rebuild to start over"
fi
# The binfmt entry has no F flag here: the interpreter must exist at its path inside the root.
if [ -n "${QEMU_INTERP:-}" ] && [ ! -x "$ROOT$QEMU_INTERP" ]; then
  mkdir -p "$(dirname "$ROOT$QEMU_INTERP")"
  cp "$(command -v qemu-aarch64-static)" "$ROOT$QEMU_INTERP"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# The host's trust store (it may hold a proxy's CA that the root's own bundle lacks), for pip only.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/crowdcap-host-ca.crt" 2>/dev/null || true

# Emulation runs one core's work 20-100x slower: stretch the offline deadlines (redact/proof.py slow_factor).
SLOW="${CROWDCAP_SLOW_FACTOR:-30}"
mounted=()
cleanup() { for m in ${mounted[@]+"${mounted[@]}"}; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
# No /sys: with the x86 host's /sys beside /proc, onnxruntime's cpuinfo (aarch64 build, under qemu) reads
# a CPU topology that is not the emulated one and segfaults at the first inference (exit 139, seen here).
for fs in proc dev; do
  if ! mountpoint -q "$ROOT/$fs"; then
    mkdir -p "$ROOT/$fs"
    if [ "$fs" = proc ]; then mount -t proc proc "$ROOT/proc"; else mount --rbind "/$fs" "$ROOT/$fs"; fi
    mounted=("$ROOT/$fs" ${mounted[@]+"${mounted[@]}"})
  fi
done
inroot() {
  nice -n 10 chroot "$ROOT" /usr/bin/env -i PATH=/opt/crowdcap/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/etc/crowdcap-host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"
}
[ "$(inroot uname -m)" = aarch64 ] || die "the root does not run as aarch64 (binfmt?)"
missing=(); for p in ${PACKAGES//,/ }; do inroot dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  step 2 "apt-get install ${missing[*]} (in the root)"
  inroot sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]}" >&2 \
    || die "apt-get install ${missing[*]} failed in the root"
fi

# --- 3. crowdcap from aarch64 wheels ---
step 3 "building the crowdcap wheel from $REPO"
work="$(mktemp -d)"
trap 'cleanup; rm -rf "$work"' EXIT
(cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf - 2>/dev/null) | (mkdir -p "$work/src" && tar -C "$work/src" -xf -)
py_host="$REPO/.venv/bin/python"; [ -x "$py_host" ] || py_host=python3
"$py_host" -m pip wheel -q --no-deps -w "$work/wheel" "$work/src" >&2 2>/dev/null \
  || die "cannot build the crowdcap wheel (pip wheel $work/src)"
whl="$(ls "$work/wheel"/crowdcap-*.whl)"
rm -rf "$ROOT/opt/crowdcap/dist" "$ROOT/opt/crowdcap/run"
mkdir -p "$ROOT/opt/crowdcap/dist" "$ROOT/opt/crowdcap/run/in"
cp "$whl" "$ROOT/opt/crowdcap/dist/"
wname="/opt/crowdcap/dist/$(basename "$whl")"
if [ ! -x "$ROOT/opt/crowdcap/venv/bin/python" ]; then
  step 3 "python3 -m venv /opt/crowdcap/venv (in the root)"
  inroot /usr/bin/python3 -m venv /opt/crowdcap/venv || die "venv creation failed in the root"
fi
step 3 "pip install --only-binary :all: $(basename "$whl") + its dependencies (aarch64 wheels from PyPI; slow under qemu)"
t0=$(date +%s)
inroot pip install -q --only-binary :all: "$wname" >&2 \
  || die "pip could not install crowdcap's dependencies from aarch64 wheels (see pip's message above)"
inroot pip install -q --no-deps --force-reinstall "$wname" >&2 || die "pip install $wname failed"
pip_s=$(( $(date +%s) - t0 ))

# --- 4. run it ---
cp "$REPO"/tests/data/faces/*.jpg "$ROOT/opt/crowdcap/run/in/"
for img in ${IMAGES[@]+"${IMAGES[@]}"}; do cp "$img" "$ROOT/opt/crowdcap/run/in/"; done
inroot python -c "
import cv2
from skimage import data
cv2.imwrite('/opt/crowdcap/run/in/astronaut.png', cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
cv2.imwrite('/opt/crowdcap/run/in/coffee.png', cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
" || die "could not write scikit-image's sample photos in the root"
step 4 "crowdcap models verify (emulated)"
inroot env CROWDCAP_SLOW_FACTOR="$SLOW" crowdcap models verify --json > "$ROOT/opt/crowdcap/run/verify.json" || true
mapfile -t inputs < <(cd "$ROOT/opt/crowdcap/run/in" && ls | sort)
step 4 "crowdcap redact --json on ${#inputs[@]} images (emulated)"
args=(); for f in "${inputs[@]}"; do args+=("/opt/crowdcap/run/in/$f"); done
t0=$(date +%s.%N)
rc=0
inroot env CROWDCAP_SLOW_FACTOR="$SLOW" crowdcap redact --json --out /opt/crowdcap/run/out "${args[@]}" > "$ROOT/opt/crowdcap/run/redact.jsonl" || rc=$?
redact_s=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")
inroot python -c "
import json, os, platform, sys
from importlib import metadata
wheels = sorted(f'{d.metadata[\"Name\"]}=={d.version}' for d in metadata.distributions())
native = []
for d in metadata.distributions():
    w = d.read_text('WHEEL') or ''
    if 'aarch64' in w: native.append(d.metadata['Name'])
print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(),
                  'glibc': os.confstr('CS_GNU_LIBC_VERSION'), 'wheels': wheels, 'native': sorted(native),
                  'debian': open('/etc/debian_version').read().strip()}))
" > "$ROOT/opt/crowdcap/run/env.json" || die "could not read the root's environment"

# --- 5. checks + summary ---
python3 - "$ROOT/opt/crowdcap/run" "$rc" "$redact_s" "$pip_s" "$(cat "$ROOT/$MARK")" <<'EOF'
import json, sys
from pathlib import Path
run, rc, redact_s, pip_s, built = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
env = json.loads((run / "env.json").read_text())
fails = []
try:
    verify = json.loads((run / "verify.json").read_text())
except ValueError:
    verify, _ = None, fails.append("crowdcap models verify printed no JSON")
models = {c.get("name", c.get("card")): c.get("ok", False) for c in verify or []}
if verify is not None and (not models or not all(models.values())):
    fails.append(f"crowdcap models verify: not every model loads ({models})")
images = {}
for line in (run / "redact.jsonl").read_text().splitlines():
    r = json.loads(line)
    name = Path(r["input"]).name
    if "error" in r:
        images[name] = {"error": r["error"]}
        fails.append(f"{name}: {r['error']}")
        continue
    classes = {}
    for reg in r["regions"]:
        classes[reg["class"]] = classes.get(reg["class"], 0) + 1
    out = run / "out" / Path(r["output"]).name
    images[name] = {"regions": len(r["regions"]), "by_class": classes, "ms_emulated": r["ms"],
                    "output_written": out.is_file() and out.stat().st_size > 0, "withheld": r["withheld"],
                    "bboxes": [reg["bbox"] for reg in r["regions"]]}
    if not images[name]["output_written"]:
        fails.append(f"{name}: no output written")
    if name != "coffee.png" and not classes.get("face"):
        fails.append(f"{name}: no face region on a photo of a face")
if rc:
    fails.append(f"crowdcap redact exited {rc}")
summary = {
    "what": "crowdcap on Debian bookworm arm64 under qemu-user (emulated; timings are NOT Pi speed)",
    "machine": env["machine"], "debian": env["debian"], "python": env["python"], "glibc": env["glibc"],
    "root_built": built, "pip_install_s_emulated": pip_s,
    "wheels_installed": len(env["wheels"]), "native_aarch64_wheels": env["native"],
    "models_verify_ok": models, "redact_command_s_emulated": round(redact_s, 1), "images": images,
    "ok": not fails, "failures": fails,
}
print(json.dumps(summary, indent=2))
sys.exit(0 if not fails else 1)
EOF
