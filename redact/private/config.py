"""The `[privacy]` config section: how the wearer's own private objects, volumes and places are applied.

What is private (the objects, volumes and zones themselves) lives in the device's state folder
(`crowdcap privacy ...`), not in the config: these settings say how hard to look and how to fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from capture.config import setting


@dataclass
class PrivacyConfig:
    enabled: bool = setting(True, help="apply the private objects, volumes and zones kept in device.state_dir")
    object_features: Literal["sift", "orb"] = setting(
        "sift", help="local features for private objects (sift: finds tilted/far views; orb: cheaper, misses more)")
    object_scale: float = setting(0.75, min=0.25, max=1.0, help="frame scale for object matching (lower = faster, "
                                  "misses small objects; see bench privacy)")
    object_interval: int = setting(1, min=1, max=30, help="search the whole frame for objects every N frames; in "
                                   "between, matches are followed (see object_track) and a NEW object is not looked "
                                   "for until the next search (manifest classes.private_object: held, age)")
    object_track: bool = setting(True, help="between searches, follow matched objects by optical flow near their "
                                 "last outline (false: move them by their last velocity only); a lost follow "
                                 "searches the whole frame on the next frame")
    object_track_margin_growth: float = setting(0.02, min=0.0, max=1.0, help="fraction of an object's size added "
                                                "to each side per frame it is followed since its last match")
    object_min_inliers: int = setting(12, min=6, max=200, help="homography inliers needed to call a match")
    object_action: Literal["fill", "blur", "pixelate"] = setting("fill", help="what a matched object becomes")
    object_hold_frames: int = setting(5, min=0, max=300, help="frames a match is held (growing) after a search "
                                      "last matched it (at least object_interval - 1)")
    volume_action: Literal["fill", "blur", "pixelate"] = setting("fill", help="what a volume's content becomes")
    volume_margin: float = setting(0.05, min=0.0, max=2.0, help="metres added to every side of a volume")
    volume_margin_growth: float = setting(0.03, min=0.0, max=1.0,
                                          help="metres added per frame while the pose is only predicted")
    volume_hold_frames: int = setting(10, min=0, max=300,
                                      help="frames a predicted pose is trusted (growing margin); then withheld")
    volume_near_m: float = setting(4.0, min=0.0, max=1000.0,
                                   help="withhold when the pose is lost within this distance of a volume")
    unlocalised: Literal["resemblance", "withhold"] = setting(
        "resemblance", help="before relocalising in a place with volumes: withhold frames that look like the "
                            "place (resemblance) or every frame (withhold)")
    zone_no_fix: Literal["strict", "ignore"] = setting(
        "strict", help="GPS zones without a fix: strict = act as inside (the stricter side); ignore = outside")
    wifi_command: str = setting("", help="command printing the visible Wi-Fi networks (nmcli -t -f SSID,BSSID "
                                "dev wifi); empty = none")
    wifi_file: str = setting("", help="file listing visible Wi-Fi networks as SSID,BSSID lines; empty = none")
