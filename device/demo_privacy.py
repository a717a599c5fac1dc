"""The demo's private walk: the wearer's own privacy set up in the synthetic room before `crowdcap demo`.

A registered object (the family photo on the back wall, from its exemplar photo), a 3D volume around
the toy box on the floor (its place built from the walk's first frames with their true poses, so the
session relocalises on frame 0), and a Wi-Fi zone "home" (action pause) that the walk enters for a
stretch in the middle (the demo writes the visible networks to a file the zone reads). The report and
the summary then show the object and volume regions and the gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

BOX = (np.array([1.1, 0.9, 2.2]), np.array([1.7, 1.5, 2.8]))  # the toy box on the floor (capture/scene.py)
HOME_NET = "DemoHome"
ZONE_SPAN = (0.45, 0.6)  # fraction of the run spent inside the home Wi-Fi zone
# The demo keeps up on 2 cores: the whole frame is searched for objects every 6th frame and matches are
# followed by optical flow in between (redact/private/objects.py: a new object waits ≤ 5 frames, and
# those frames say `held` in the manifest). `bench privacy` (walk) measures what each interval costs.
OBJECT_SEARCH = {"privacy.object_interval": 6, "privacy.object_track": True}


def prepare(out: Path, state_dir: Path, width: int, height: int, seed: int) -> dict[str, Any]:
    from capture.frame import RGBDFrame
    from capture.scene_private import exemplar
    from capture.synthetic import SyntheticSource
    from redact.private.layer import touch_changed
    from redact.private.objects import ObjectStore
    from redact.private.places import place_from_session, places_dir
    from redact.private.volumes import Volume, VolumeStore
    from redact.private.zones import ZoneStore, parse_zone

    photo = out / "family-photo.png"
    cv2.imwrite(str(photo), exemplar("family-photo"))
    objects = ObjectStore(state_dir)
    if not (objects.dir / "family-photo").is_dir():
        objects.add("family-photo", [photo])
    if not any(v["name"] == "toybox" for v in VolumeStore(state_dir).list()):
        src = SyntheticSource(width, height, pace="fast", seed=seed, props=True)

        def frames() -> Iterator[RGBDFrame]:  # one at a time: 30 frames held at once were ~46 MB of peak RSS
            for i in range(0, 90, 3):
                color, depth, truth = src.render(i)
                yield RGBDFrame("demo", "place", i, i, 0.0, color, depth, src.depth_scale, src.intrinsics,
                                attachments={"truth": truth})

        place, _ = place_from_session(frames())
        place.save(places_dir(state_dir))
        lo, hi = BOX
        VolumeStore(state_dir).add(Volume("toybox", place.id, (lo + hi) / 2, np.eye(3), hi - lo + 0.1))
    if not any(z["name"] == "home" for z in ZoneStore(state_dir).list()):
        ZoneStore(state_dir).add(parse_zone("home", wifi=[HOME_NET], action="pause"))
    touch_changed(state_dir)
    wifi = out / "wifi-seen.txt"
    wifi.write_text("Neighbour:aa\\:bb\\:cc\\:00\\:11\\:22\n")
    return {"wifi_file": wifi}


def walk(wifi_file: Path, elapsed: float, seconds: float) -> None:
    """The wearer walks into the home Wi-Fi for a stretch in the middle of the run, and out again."""
    inside = ZONE_SPAN[0] * seconds <= elapsed < ZONE_SPAN[1] * seconds
    text = ("Neighbour:aa\\:bb\\:cc\\:00\\:11\\:22\n" + (f"{HOME_NET}:12\\:34\\:56\\:78\\:9a\\:bc\n" if inside else ""))
    if wifi_file.read_text() != text:
        tmp = wifi_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(wifi_file)
