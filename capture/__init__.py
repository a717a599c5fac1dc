"""RGB-D sources behind one `Source` protocol, and the frame type every stage shares."""

from __future__ import annotations

from capture.frame import Intrinsics, RGBDFrame, Source, SourceError

__all__ = ["Intrinsics", "RGBDFrame", "Source", "SourceError", "open_source"]


def open_source(spec: str, *, width: int = 640, height: int = 480, fps: float = 30.0, pace: str = "realtime",
                seed: int = 0, loop: bool = False, device_id: str = "device", session_id: str = "s0",
                n_frames: int | None = None, gps: str | None = None, gps_baud: int = 9600,
                prerender: int = 0, replay_cache_mb: int = 0) -> Source:
    """A source from its spec: `synthetic`, `replay:DIR`, `stereo:CONFIG`, `realsense[:SERIAL|FILE.bag]`,
    `oakd[:ID]`. Unknown specs are a clear ValueError. Camera SDKs are imported only when asked for.
    `gps`: a serial port / pyserial URL of an NMEA receiver whose fixes are attached to `frame.gps`.
    `prerender`: synthetic only: render that many frames up front and play them forth and back.
    `replay_cache_mb`: replay with `loop`: decoded frames kept up to that size (capture/replay.py)."""
    source = _open_camera(spec, width, height, fps, pace, seed, loop, device_id, session_id, n_frames,
                          replay_cache_mb)
    if prerender and spec.partition(":")[0] == "synthetic":
        source = _open_synthetic(width, height, fps, seed, pace, device_id, session_id, n_frames, prerender,
                                 props=spec == "synthetic:private")
    if gps:
        from capture.nmea import GpsSource, NmeaReader

        return GpsSource(source, NmeaReader(gps, gps_baud))
    return source


def _open_synthetic(width: int, height: int, fps: float, seed: int, pace: str, device_id: str, session_id: str,
                    n_frames: int | None, prerender: int, props: bool = False) -> Source:
    from capture.synthetic import SyntheticSource

    return SyntheticSource(width, height, fps, seed, pace, device_id, session_id, n_frames, cycle=prerender,
                           props=props, palindrome=True, prerender=True)


def _open_camera(spec: str, width: int, height: int, fps: float, pace: str, seed: int, loop: bool, device_id: str,
                 session_id: str, n_frames: int | None, replay_cache_mb: int = 0) -> Source:
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        from capture.synthetic import SyntheticSource

        # synthetic:private adds the wearer's private things (a registered photo) to the room (the demo)
        return SyntheticSource(width, height, fps, seed, pace, device_id, session_id, n_frames, props=arg == "private")
    if kind == "replay":
        if not arg:
            raise ValueError("source: replay needs a folder: replay:DIR")
        from capture.replay import ReplaySource

        return ReplaySource(arg, pace, device_id, session_id, loop, n_frames, cache_mb=replay_cache_mb)
    if kind == "stereo":
        if not arg:
            raise ValueError("source: stereo needs a config file: stereo:CONFIG")
        from capture.stereo import StereoSource

        return StereoSource(arg, fps, device_id, session_id, n_frames)
    if kind == "realsense":
        from capture.realsense import RealSenseSource

        return RealSenseSource(arg or None, width, height, fps, device_id, session_id, n_frames)
    if kind == "oakd":
        from capture.oakd import OakDSource

        return OakDSource(arg or None, width, height, fps, device_id, session_id, n_frames)
    raise ValueError(f"source: unknown source {spec!r} "
                     "(expected synthetic, replay:DIR, stereo:CONFIG, realsense[:SERIAL] or oakd[:ID])")
