"""What capture hardware is attached: RealSense and OAK cameras (through their SDKs, when installed),
V4L2 video devices (for `stereo:` configs) and serial ports (GPS receivers). Read-only and quick:
nothing is opened except through the SDKs' own enumeration."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# USB vendors of common GPS receivers and the USB-serial bridges they sit behind.
GPS_VENDORS = {0x1546: "u-blox", 0x067B: "Prolific", 0x1A86: "QinHeng CH34x", 0x0403: "FTDI",
               0x10C4: "Silicon Labs CP210x", 0x091E: "Garmin"}


def sdk_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("pyrealsense2", "depthai"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def list_video(sys_root: Path = Path("/sys/class/video4linux"), dev_root: Path = Path("/dev")) -> list[dict[str, Any]]:
    """V4L2 nodes with their driver-reported name; `index` 0 is a device's capture node (others are metadata)."""
    out = []
    if not sys_root.is_dir():
        return out
    for node in sorted(sys_root.iterdir(), key=lambda p: (len(p.name), p.name)):
        if not node.name.startswith("video"):
            continue

        def read(name: str, node: Path = node) -> str | None:
            try:
                return (node / name).read_text().strip()
            except OSError:
                return None

        index = read("index")
        out.append({"kind": "video", "device": str(dev_root / node.name), "name": read("name") or "",
                    "capture": index in (None, "0"), "spec_hint": f"left/right: {dev_root / node.name}"})
    return out


def list_serial() -> list[dict[str, Any]]:
    """Serial ports (pyserial's view), with a hint when the USB vendor is a usual GPS one."""
    from serial.tools import list_ports

    out = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        entry: dict[str, Any] = {"kind": "serial", "device": port.device, "description": port.description,
                                 "hwid": port.hwid}
        if port.vid is not None:
            entry.update(vid=f"{port.vid:04x}", pid=f"{port.pid:04x}", serial=port.serial_number,
                         manufacturer=port.manufacturer)
            if port.vid in GPS_VENDORS:
                entry["gps_hint"] = GPS_VENDORS[port.vid]
        out.append(entry)
    return out


def enumerate_devices() -> dict[str, Any]:
    """Everything at once, grouped by kind; an SDK that is missing or fails is reported, not raised."""
    from capture import oakd, realsense

    result: dict[str, Any] = {"sdk": sdk_versions(), "errors": {}}
    for key, lister in (("realsense", realsense.list_devices), ("oakd", oakd.list_devices),
                        ("video", list_video), ("serial", list_serial)):
        try:
            result[key] = lister()
        except Exception as e:  # noqa: BLE001 - one broken backend must not hide the others
            result[key] = []
            result["errors"][key] = f"{type(e).__name__}: {e}"
    return result
