"""Helpers for the crowd-loop tests: sessions made by the real redaction stage and the real ingest sink,
and synthetic crowd tags from the synthetic scene's ground truth (several taggers, one who disagrees)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

FLEET_POLICY = '''version = "fleet-1"
on_fault = "withhold"
[[rules]]
class = "face"
action = "blur"
margin = 0.35
min_score = 0.6
applies_to = "both"
'''

Truth = dict[tuple[str, str, int], list[list[int]]]


def version_stats(score_doc: dict, policy_version: str) -> dict:
    """The overall stats of the one version key that starts with `policy_version` (model names and the
    floor state follow it)."""
    (key,) = [k for k in score_doc["by_version"] if k.split(" ")[0] == policy_version]
    return score_doc["by_version"][key]["overall"]


def small_redact_config(policy: str = "", width: int = 320, height: int = 240, **kw: Any) -> Any:
    from redact.cards import default_card_path
    from redact.config import RedactConfig

    if "floor" in RedactConfig.__dataclass_fields__:  # layered policies: fleet-1 tunes faces above the floor
        kw.setdefault("floor", "lowered")
    # The tags and thresholds here are CenterFace scores: pin it (the default face path is RetinaFace first).
    kw.setdefault("models", [str(default_card_path())])
    return RedactConfig(policy=policy, tile_width=0, tile_height=0, detect_width=width // 32 * 32,
                        detect_height=(height + 31) // 32 * 32, **kw)


def scene_truth(device: str, session: str, seqs: list[int], width: int = 320, height: int = 240,
                seed: int = 0, fps: float = 30.0) -> Truth:
    """The visible faces of the synthetic scene's frames `seqs` (deterministic by seed; frame i is at i/fps)."""
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(width, height, fps=fps, seed=seed, pace="fast", noise=False)
    return {(device, session, s): [list(map(int, b)) for b in src.render(s)[2]["faces"]] for s in seqs}


def make_session(out: Path, device: str, session: str, policy_path: str, *, n: int = 18, step: int = 3,
                 width: int = 320, height: int = 240, seed: int = 0, posed: bool = False,
                 private: dict | None = None, **redact_kw: Any) -> Truth:
    """Frames 0, step, 2·step, ... of the synthetic scene through the real stage and the real sink
    (`posed`: with the camera pose, as a device running odometry sends it; `private` collects the scene's
    other private ground truth per frame, class → boxes, where the synthetic source has it)."""
    import redact
    from capture.synthetic import SyntheticSource
    from uplink import messages, wire
    from uplink.backend.sink import Sink

    redact_kw.setdefault("budget_ms", 5000.0)  # a loaded CI core must not withhold the harness's frames
    stage = redact.build_stage(small_redact_config(policy_path, width, height, hold_frames=0, **redact_kw))
    src = SyntheticSource(width, height, seed=seed, pace="fast", device_id=device, session_id=session,
                          n_frames=n * step, noise=False)
    src.open()
    sink = Sink(out)
    codec = messages.depth_codec("png16")
    truth: Truth = {}
    for _ in range(n * step):
        f = src.read()
        if f is None:
            break
        if f.seq % step:
            continue
        truth[(device, session, f.seq)] = [list(map(int, b)) for b in f.attachments["truth"]["faces"]]
        if private is not None:
            private[(device, session, f.seq)] = f.attachments["truth"].get("private", {})
        if posed:
            f = f.replace(pose=f.attachments["truth"]["pose"])
        msg = messages.encode_frame(stage.apply(f), codec, 90)
        sink.write(wire.decode(wire.encode(msg)), time.time(), 1000)
    sink.finalize_all()
    return truth


def crowd_tags(truth: Truth, path: Path, sessions_dir: Path | None = None) -> Path:
    """Tags from ground truth by four taggers: ann, bob and cat tag every visible face private (cat misses
    every third one); dan calls the smallest face in each frame not private (he disagrees). Redacted
    regions of the sessions that hold no face are tagged not_private by ann and bob."""
    lines = []
    t0 = 1_796_000_000.0
    for (dev, sess, seq), faces in sorted(truth.items()):
        smallest = min(range(len(faces)), key=lambda i: faces[i][3] - faces[i][1]) if faces else -1
        for i, b in enumerate(faces):
            for n, tagger in enumerate(("ann", "bob", "cat", "dan")):
                if tagger == "cat" and (seq + i) % 3 == 0:
                    continue
                label = "not_private" if tagger == "dan" and i == smallest else "private"
                jit = n % 2
                lines.append({"device": dev, "session": sess, "seq": seq, "bbox": [b[0] + jit, b[1], b[2], b[3] - jit],
                              "label": label, "class": "face", "tagger": tagger, "time": t0 + seq + n})
        if sessions_dir is not None:
            frames = sessions_dir / dev / sess / "frames.jsonl"
            for line in frames.read_text().splitlines():
                e = json.loads(line)
                if e["seq"] != seq:
                    continue
                for r in (e.get("manifest") or {}).get("regions", []):
                    x1, y1, x2, y2 = r["bbox"]
                    if not any(min(x2, b[2]) > max(x1, b[0]) and min(y2, b[3]) > max(y1, b[1]) for b in faces):
                        for tagger in ("ann", "bob"):
                            lines.append({"device": dev, "session": sess, "seq": seq, "bbox": r["bbox"],
                                          "label": "not_private", "class": "face", "tagger": tagger, "time": t0 + seq})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


class Device:
    """A real device: the configured pipeline (synthetic 320×240 → redaction → uplink to `broker`) and
    the signed downlink, as `crowdcap run` builds them."""

    def __init__(self, root: Path, device_id: str, broker: str, public_key: str, *, policy: str = "",
                 max_frames: int | None = None, fps: float = 15.0, ref_frames: list | None = None) -> None:
        from device import config as config_mod
        from device.control import Controller
        from device.downlink import Downlink
        from device.model_update import ModelUpdater
        from device.runtime import Service
        from redact.cards import default_card_path
        from redact.config import RedactConfig

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.cfg_path = root / "crowdcap.toml"
        fields = RedactConfig.__dataclass_fields__
        # With layered policies (redact/layers.py) the fleet's policy is its own layer, and a fleet
        # that tunes the face rule above the built-in floor needs the installer's `floor = "lowered"`.
        policy_key = "fleet_policy" if "fleet_policy" in fields else "policy"
        floor = 'floor = "lowered"\n' if "floor" in fields else ""
        self.cfg_path.write_text(
            f'[device]\nid = "{device_id}"\nstate_dir = "{root / "state"}"\n\n'
            f'[capture]\nsource = "synthetic"\nwidth = 320\nheight = 240\nfps = {fps}\npace = "realtime"\n\n'
            f'[redact]\nenabled = true\n{policy_key} = "{policy}"\n{floor}models = ["{default_card_path()}"]\ntile_width = 0\ntile_height = 0\nbudget_ms = 2000.0\n'
            f'detect_width = 320\ndetect_height = 256\n\n[depth]\nenabled = false\n\n'
            f'[uplink]\nspool_dir = "{root / "spool"}"\nbroker = "{broker}"\n\n'
            f'[downlink]\npublic_key = "{public_key}"\n')
        self.max_frames = max_frames
        self.fps = fps
        self.ref_frames = ref_frames
        self._services = []
        self.service = self._new(config_mod, Service, Controller, Downlink, ModelUpdater)

    def _new(self, config_mod, Service, Controller, Downlink, ModelUpdater):  # noqa: N803
        cfg = config_mod.load(self.cfg_path)
        service = Service(cfg, self.cfg_path, max_frames=self.max_frames)
        service.start()
        self.downlink = Downlink(service, Controller(service),
                                 model_updater=ModelUpdater(service, frames=self.ref_frames))
        self.downlink.attach()
        return service

    def restart(self) -> None:
        """A new run (new session id) reading the config file as it is now."""
        from device import config as config_mod
        from device.control import Controller
        from device.downlink import Downlink
        from device.model_update import ModelUpdater
        from device.runtime import Service

        self.close()
        self.service = self._new(config_mod, Service, Controller, Downlink, ModelUpdater)

    def wait_uplinked(self, timeout: float = 60.0) -> None:
        """Until the source has ended and every spooled record was sent."""
        deadline = time.monotonic() + timeout
        svc = self.service
        while time.monotonic() < deadline:
            if svc.pipeline.finished.is_set() and svc.stages["uplink"].status().get("spool_records", 1) == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"device {svc.device_id} did not finish and drain in {timeout} s")

    def close(self) -> None:
        self.downlink.close()
        self.service.close()


POSTER = ((-0.5, -1.0, 7.0), (0.5, -0.4, 7.0))  # a rectangle on the synthetic room's back wall (world, metres)


def poster_tags(seqs: list[int], device: str, session: str, path: Path, width: int = 320, height: int = 240) -> Path:
    """Three taggers tag the poster on the back wall private (`custom:poster`) in every frame."""
    import numpy as np

    from capture.scene import Renderer, build_scene
    from capture.synthetic import SyntheticSource, trajectory_pose

    src = SyntheticSource(width, height, pace="fast", noise=False)
    r = Renderer(build_scene(0), src.intrinsics)
    (x1, y1, z), (x2, y2, _) = POSTER
    corners = np.array([[x1, y1, z], [x2, y1, z], [x2, y2, z], [x1, y2, z]])
    lines = []
    for seq in seqs:
        uv, _ = r.project(corners, trajectory_pose(seq / src.fps))
        box = [float(uv[:, 0].min()), float(uv[:, 1].min()), float(uv[:, 0].max()), float(uv[:, 1].max())]
        for tagger in ("ann", "bob", "cat"):
            lines.append({"device": device, "session": session, "seq": seq, "bbox": [round(v, 1) for v in box],
                          "label": "private", "class": "custom:poster", "tagger": tagger, "time": 1_796_000_000 + seq})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def form_tags(private: dict, cls: str, text: str, path: Path) -> Path:
    """ann, bob and cat tag every ground-truth box of `cls` private and transcribe `text` (they read it in
    the sent pixels: it leaked); dan says not private."""
    lines = []
    for (dev, sess, seq), by_cls in sorted(private.items()):
        for b in by_cls.get(cls, []):
            for n, tagger in enumerate(("ann", "bob", "cat", "dan")):
                lines.append({"device": dev, "session": sess, "seq": seq, "bbox": list(map(int, b)),
                              "label": "not_private" if tagger == "dan" else "private", "class": cls,
                              "tagger": tagger, "time": 1_796_000_000 + seq + n,
                              **({"text": text} if tagger != "dan" else {})})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


class OpsDevice:
    """A device as `crowdcap run` under systemd runs it: the config's pipeline, the operations layer
    (health telemetry, signed downlink with `check_pending` after a model-activating restart), and a
    supervisor thread that restarts the service when it asks to (Restart=on-failure)."""

    def __init__(self, root: Path, device_id: str, broker: str, public_key: str) -> None:
        import threading

        root.mkdir(parents=True, exist_ok=True)
        self.cfg_path = root / "crowdcap.toml"
        self.cfg_path.write_text(
            f'[device]\nid = "{device_id}"\nstate_dir = "{root / "state"}"\n\n'
            f'[capture]\nsource = "synthetic"\nwidth = 64\nheight = 48\nfps = 5\npace = "realtime"\n\n'
            f'[redact]\nenabled = true\nbudget_ms = 3000.0\n\n[depth]\nenabled = false\n\n'  # a loaded CI core: no deadline misses
            f'[uplink]\nspool_dir = "{root / "spool"}"\nbroker = "{broker}"\n\n'
            f'[health]\ntelemetry_period = 0.5\n\n[downlink]\npublic_key = "{public_key}"\n')
        self.before_restart: Any = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._start()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _start(self) -> None:
        from device import config as config_mod
        from device.operations import Operations
        from device.runtime import Service

        self.service = Service(config_mod.load(self.cfg_path), self.cfg_path)
        self.service.start()
        self.ops = Operations.start(self.service, control_socket=False, console=False)

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                svc = self.service
                if svc.stop_requested and svc.restart_requested:
                    hook, self.before_restart = self.before_restart, None
                    if hook is not None:
                        hook(self)
                    self.ops.close()
                    svc.close()
                    self.restarts += 1
                    self._start()
                    continue
                svc.run_housekeeping()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            self.ops.close()
            self.service.close()
