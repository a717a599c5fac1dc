"""`crowdcap devices`: the capture hardware attached to this machine (cameras, video nodes, serial ports).

Each camera line ends with the `--source` spec that selects it. Exit code 0 even when nothing is
attached (that is an answer, not an error).
"""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list attached cameras, video devices and serial ports", description=__doc__)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # depthai logs its USB warnings to stdout at import; keep stdout for the answer (--json is parsed).
    os.environ.setdefault("DEPTHAI_LEVEL", "error")
    from capture.devices import enumerate_devices

    found = enumerate_devices()
    if args.json:
        print(json.dumps(found, sort_keys=True))
        return 0
    sdk = found["sdk"]
    lines = []
    for d in found["realsense"]:
        lines.append(f"realsense  {d.get('name', '?')}  serial {d.get('serial', '?')}  firmware "
                     f"{d.get('firmware', '?')}  usb {d.get('usb', '?')}  imu {'yes' if d['imu'] else 'no'}"
                     f"  → --source {d['spec']}")
    for d in found["oakd"]:
        lines.append(f"oakd       {d['name']}  id {d['id']}  {d['protocol']} {d['state']}  → --source {d['spec']}")
    for d in found["video"]:
        lines.append(f"video      {d['device']}  {d['name']}{'' if d['capture'] else '  (metadata node)'}")
    for d in found["serial"]:
        hint = f"  (GPS? {d['gps_hint']})" if "gps_hint" in d else ""
        lines.append(f"serial     {d['device']}  {d['description']}{hint}")
    print("\n".join(lines) if lines else "no capture devices found")
    missing = [name for name, v in sdk.items() if v is None]
    if missing:
        print(f"(not installed: {', '.join(missing)} — pip install 'crowdcap[realsense]' / 'crowdcap[oakd]')")
    for key, err in found["errors"].items():
        print(f"({key}: enumeration failed: {err})")
    return 0
