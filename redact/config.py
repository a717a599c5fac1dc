"""The `[redact]` config section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from capture.config import ConfigError, setting


@dataclass
class RedactConfig:
    enabled: bool = setting(True, help="false only for trusted replays that were redacted already")
    policy: str = setting("", help="wearer policy layer (TOML); empty = none: the built-in default (faces: blur, depth removed; plates) and the fleet layer apply")
    threads: int = setting(1, min=1, max=16,
                           help="onnxruntime intra-op threads (1 in the pipeline: the other core runs the rest)")
    models: list[str] = setting([], help="model card TOML files; empty = the built-in face path (RetinaFace int8 "
                                "every frame, CenterFace re-checking small faces and on a schedule)")
    budget_ms: float = setting(250.0, min=1.0, max=600000.0,
                               help="per-frame detector time budget; a frame that misses it is withheld")
    detect_width: int = setting(640, min=32, max=4096,
                                help="whole frame is detected every frame at this width (multiple of 32)")
    detect_height: int = setting(480, min=32, max=4096, help="height of the every-frame whole-frame pass")
    tile_width: int = setting(384, min=0, max=4096,
                              help="full-resolution tiles, round-robin (see tiles_per_frame); 0 = no tiles")
    tile_height: int = setting(288, min=0, max=4096, help="height of the full-resolution tiles")
    tiles_per_frame: float = setting(0.5, min=0.0, max=16.0,
                                     help="full-resolution tiles run per frame on average (0.5 = one every 2nd frame)")
    # 12 (8 until 2026-12-03): with the crops side by side (verify_gap 0) 12 cost fewer pixels than 8 did with
    # gaps (256×192 vs 384×192), and seed 2's crowd needs them: recall 0.9903 vs 0.9840 with 8 (old path 0.9868).
    verify_candidates: int = setting(12, min=0, max=32,
                                     help="small tracks and weak candidates re-checked at full resolution per frame")
    verify_gap: int = setting(0, min=0, max=64, help="px between the 64×64 crops on the re-check mosaic (0: crops side by "
                              "side, 0.44× the CPU of the 32 px gaps of the old path)")
    verify_model: str = setting("auto", help="model card that re-checks small candidates at full resolution: "
                                "auto (built-in face path: centerface; own models: each itself), a shipped card's "
                                "name, a card file, or empty = each detector itself")
    # 8 (every 2nd key frame at face_every 4): bench redact 2026-12-03, two runs (seed 0 unpinned, seed 2 pinned to
    # one core), recall >= the old CenterFace path on every set in both, 0.78x the CPU of 3 (12.8 vs 16.1,
    # 11.7 vs 14.9 CPU-ms/frame); without the pass at all the crowd falls to 0.92-0.94.
    verify_model_every: int = setting(8, min=0, max=1000,
                                      help="the verify model also detects the whole frame (downscaled) every N frames; 0 = never")
    detect_width_verify: int = setting(384, min=32, max=4096, help="width of the verify model's whole-frame pass")
    detect_height_verify: int = setting(288, min=32, max=4096, help="height of the verify model's whole-frame pass")
    verify_min_score: float = setting(0.04, min=0.01, max=1.0, help="score from which a candidate is re-checked")
    hold_frames: int = setting(10, min=0, max=300,
                               help="frames a track is held (propagated) after its last detection")
    margin_growth: float = setting(0.04, min=0.0, max=1.0,
                                   help="extra margin per frame since a track's last detection (fraction of box)")
    # 4 (bench redact, 2026-12-03): the cheapest setting with recall >= the old path on every set (with the
    # verify model's pass then every 3 frames — on every key frame; now every 8th, see above — and the longer
    # hold: the crowd needs both); 5 would add another 33 ms of latency.
    face_every: int = setting(4, min=1, max=8,
                              help="full face detection on every N-th frame (a key frame); a frame between waits in "
                                   "memory for the next key frame and is covered by the tracks held from the key "
                                   "frame before and those of the key frame after, moved back by the camera's shift "
                                   "(redact/bracket.py); 1 = every frame. Adds up to N-1 frame times of latency; face tracks "
                                   "are held hold_frames + N-1 frames (as many missed detections as with 1)")
    # At 30 fps a bracket of 4 spans 100 ms; under overload (frames dropped before redaction) the frames
    # pushed are far apart, and 4 of them would span 400+ ms: more latency, and longer camera motion for
    # the projection to bridge. The bound makes the key frame come earlier instead.
    # The face part (detection, bracket) and the rest (forms, private layer, paint, manifest) in two
    # pipeline threads, joined by a bounded queue: the second core works too (redact/split.py). bench e2e
    # --sources demo, 3 alternating pairs, load 2-3.6 on 2 cores: dropped 9-17 % vs 35-39 %, 375-410 vs
    # 275-291 frames spooled in 15 s, 1.43 vs 1.04 cores, redaction CPU/frame +4 %, capture→spool p50 +~35 ms.
    split_threads: bool = setting(True, help="redaction in two pipeline threads: faces (stage \"redact\") then forms, "
                                             "private layer, painting, manifest (stage \"redact-finish\"), in frame order")
    # Work that needs no faces runs while a frame waits for its face bracket (redact/ahead.py): a frame's
    # latency is then the longest part, not the sum (bench e2e; the note of issue 13).
    forms_thread: bool = setting(True, help="with split_threads: the forms' detector passes (text, persons, "
                                            "screens) in a worker thread (\"redact-forms\") started as each "
                                            "frame arrives, while it waits for its face bracket")
    # The wearer's private layer (objects: SIFT search + flow, volumes: pose) was ~13 of the finish thread's
    # ~32 CPU-ms per frame in the demo (bench e2e, load ~4): that thread alone could not keep 30 fps.
    private_thread: bool = setting(True, help="with split_threads and a private layer: the wearer's private "
                                              "layer in a worker thread (\"redact-private\") started as each "
                                              "frame arrives, while it waits for its face bracket")
    face_max_wait_ms: float = setting(110.0, min=0.0, max=10000.0,
                                      help="a frame is made a key frame when the oldest frame waiting for one was "
                                           "captured this long before it (capture clock), even if fewer than "
                                           "face_every - 1 frames wait; 0 = no time bound")
    # Every 2nd frame: a large face in view for only 2 frames between key frames is seen (bench set
    # astronaut_flash_2frames: 0.625 recall without it at face_every 4, 1.0 with it). 192×160 (the frame at 0.3)
    # measured 2026-12-03: flash still 1.0 and 0.97× the CPU, but seed 2's crowd 0.9840 < the old path's 0.9868.
    face_between_width: int = setting(256, min=0, max=4096,
                                      help="a cheap whole-frame face pass at this width on the frames between key "
                                           "frames (multiple of 32; 0 = none): for large fast faces that come and go "
                                           "between key frames")
    face_between_height: int = setting(192, min=0, max=4096, help="height of the between-key-frames face pass")
    face_between_every: int = setting(2, min=1, max=8,
                                      help="the between pass runs on every N-th frame after a key frame (2: "
                                           "any face in view for 2 frames or more is seen by a pass or a key frame)")
    text_every: int = setting(12, min=1, max=30,
                              help="text/plate/screen/form detector pass every N frames (held in between)")
    # 512×384 (×0.8 of 640×480) rather than 480×352: the document's 5-8 px lines survive the resize
    # (synthetic text recall 0.92 → ≥ 0.98). Whole passes every 12 frames with an edge pass half-way
    # (text_edge_pass): plates entering the frame are found as with every 6, at ~0.55× its CPU.
    text_width: int = setting(512, min=32, max=4096, help="text detector input width (multiple of 32)")
    text_height: int = setting(384, min=32, max=4096, help="text detector input height (multiple of 32)")
    text_min_side: int = setting(736, min=0, max=4096,
                                 help="an image whose short side is below this is upscaled to it for the text "
                                      "detector (as PP-OCR's reference, limit_type=min), within text_width/height")
    text_reads_per_pass: int = setting(6, min=0, max=64,
                                       help="new text lines the recogniser reads per text pass (largest first); "
                                            "lines not read yet count as matching every form (private)")
    text_reads_when_covered: int = setting(1, min=0, max=64,
                                           help="text_reads_per_pass when the policy's text rule already hides "
                                                "every line a form could keep (reads then only label regions)")
    text_edge_pass: bool = setting(True, help="half-way between whole text passes, the text detector runs on the "
                                   "strips that came into view since the last one (camera motion): text entering the "
                                   "frame waits half the interval; its lines are held unread (private)")
    person_every: int = setting(15, min=1, max=30, help="person detector pass every N frames (held in between)")
    cache_dir: str = setting("", help="where prepared models are cached by sha256; empty = not cached "
                             "(`crowdcap run`/`demo`: device.state_dir/model-cache)")
    fleet_policy: str = setting("", help="fleet policy layer (signed downlink `policy update` writes it; "
                                "default <state_dir>/fleet-policy.toml); `config set` refuses it")
    floor: Literal["enforced", "lowered"] = setting(
        "enforced", help="privacy floor (built-in face rule); \"lowered\" only by editing this file (installer), "
        "logged, shown in status and every manifest; `config set` refuses it")
    canary_every: int = setting(1, min=1, max=30, help="run each detector's canary patch every N frames "
                                "(a miss withholds frames until it is found); remote changes may only lower it")
    # -- forms schedule: text model, pass canaries, person masks (redact/schedule.py, proof.py, segment.py)
    text_model: str = setting("ppocr_det_fused", help="text detector: a shipped card's name (ppocr_det_fused: "
                              "PP-OCRv4 with its affine blocks folded, same outputs, ~0.75x the time; ppocr_det: "
                              "as shipped in rapidocr) or a card file")
    text_rec_model: str = setting("ppocr_rec_fused", help="text recogniser (forms' `match`): a shipped card's name "
                                  "(ppocr_rec_fused: affine blocks folded, same outputs, ~0.6x the time; ppocr_rec: "
                                  "as shipped in rapidocr) or a card file")
    person_model: str = setting("ssdlite_person_cut", help="person detector: a shipped card's name "
                                "(ssdlite_person_cut: the TF map loops removed, NMS in the decoder, same detections, "
                                "~0.9x the time; ssdlite_person: as converted) or a card file")
    person_from_faces: bool = setting(True, help="a body box below every detected face joins the person class on "
                                      "every frame (the person model misses or cuts short people whose faces are "
                                      "found; also boxes below faces on posters)")
    forms_canary_every: int = setting(1, min=1, max=30, help="the text and person detectors run their canary patch "
                                      "after every Nth pass (a miss withholds frames until it is found)")
    mask_threshold: float = setting(0.3, min=0.05, max=0.95, help="person masks: segmenter probability from which "
                                    "a pixel is person (below the model's 0.5: unsure pixels count as person)")
    mask_dilate: float = setting(0.12, min=0.0, max=0.5,
                                 help="person masks: dilation, as a fraction of the box's longer side (>= 3 px)")
    mask_context: float = setting(0.15, min=0.0, max=1.0,
                                  help="person masks: margin around the box that the segmenter sees (fraction of box)")
    mask_min_fill: float = setting(0.12, min=0.0, max=1.0, help="person masks: a mask covering less of its box "
                                   "than this is implausible: the whole box is redacted")
    mask_frame_ms: float = setting(40.0, min=0.0, max=10000.0,
                                   help="person masks: segmenter time per frame; persons beyond it get whole boxes")

    def check(self) -> None:
        for name in ("detect_width", "detect_height", "face_between_width", "face_between_height", "tile_width", "tile_height", "detect_width_verify",
                     "detect_height_verify", "text_width", "text_height"):
            v = getattr(self, name)
            if v % 32:
                raise ConfigError(f"{name}: expected a multiple of 32, got {v}")
        if (self.face_between_width == 0) != (self.face_between_height == 0):
            raise ConfigError("face_between_width: face_between_width and face_between_height must both be 0 "
                              "(no pass) or both set")
        if (self.tile_width == 0) != (self.tile_height == 0):
            raise ConfigError("tile_width: tile_width and tile_height must both be 0 (no tiles) or both set")
