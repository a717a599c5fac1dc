"""`python -m bench face_pass` runs, and on the crowd frames the old and new code paths give the same
tensor and the same boxes (it stops otherwise); timings are reported, never asserted."""

from __future__ import annotations

from pathlib import Path

from bench import face_pass

MODELS = Path(__file__).resolve().parents[1] / "redact" / "models"


def test_face_pass_old_and_new_paths_agree() -> None:
    r = face_pass.main(["--rounds", "1", "--card", str(MODELS / "retinaface-int8.toml"),
                        "--card", str(MODELS / "centerface-int8.toml"), "--size", "320x240", "--size", "verify_mosaic8"])
    assert set(r["passes"]) == {"retinaface-int8@320x240", "retinaface-int8@verify_mosaic8",
                                "centerface-int8@320x240", "centerface-int8@verify_mosaic8"}
    for p in r["passes"].values():
        assert p["cpu_ms"]["session"] > 0 and p["pass_cpu_ms_new"] > 0
    assert r["passes"]["centerface-int8@320x240"]["boxes_at_0.04_mean"] >= 10  # the crowd was seen
