"""The crowd loop end to end, with the real pipeline and a real broker (issue 14's "Done when"):

two devices run the synthetic scene under the fleet's policy (faces only above score 0.6: the small
face in the back is missed) → the ingest writes their sessions → synthetic crowd tags (four taggers,
one of whom disagrees) → `tags score` shows the leaks → `tags propose` lowers the face threshold →
`tags check` passes it → `fleet push` rolls it to both devices through the broker (canary first) →
the next session of the same scene has no leak, and `tags score` shows recall before and after.
"""

from __future__ import annotations

import json

import pytest
from crowd_support import FLEET_POLICY, Device, crowd_tags, scene_truth, version_stats
from test_console_support import wait_for
from uplink_helpers import IngestThread

from device.cli import main

DEVICES = ("dev-a", "dev-b")


def committed(out, device, session) -> list[int]:
    path = out / device / session / "frames.jsonl"
    return [json.loads(x)["seq"] for x in path.read_text().splitlines()] if path.exists() else []


def run_sessions(devs, out) -> dict:
    """Wait for each device's run to end and reach the ingest; the ground truth of what arrived."""
    truth = {}
    for d in devs:
        d.wait_uplinked(60)
        sent = d.service.pipeline.metrics["uplink"].frames_in
        dev, ses = d.service.device_id, d.service.session_id
        wait_for(lambda dev=dev, ses=ses, sent=sent: len(committed(out, dev, ses)) >= sent, 30, "ingest")
        truth.update(scene_truth(dev, ses, committed(out, dev, ses), fps=d.fps))
    return truth


@pytest.mark.slow
def test_crowd_tags_to_a_signed_policy_that_closes_the_leak(tmp_path, broker, capsys):
    out = tmp_path / "out"
    key = tmp_path / "fleet.key"
    assert main(["fleet", "keygen", "--out", str(key), "--json"]) == 0
    pub = json.loads(capsys.readouterr().out)["public_key"]
    fleet1 = tmp_path / "fleet-1.toml"
    fleet1.write_text(FLEET_POLICY)
    ingest = IngestThread(broker.url, out)
    devs = []
    for d in DEVICES:  # each device has its own policy file (a policy update rewrites it)
        (tmp_path / d).mkdir()
        (tmp_path / d / "policy.toml").write_text(FLEET_POLICY)
        devs.append(Device(tmp_path / d, d, broker.url, pub, policy=str(tmp_path / d / "policy.toml"),
                           max_frames=24, fps=12.0))
    try:
        truth1 = run_sessions(devs, out)
        assert len(truth1) >= 12  # frames a loaded machine drops at capture are counted, not sent
        tags = crowd_tags(truth1, tmp_path / "tags.jsonl", out)

        assert main(["tags", "score", str(tags), "--sessions", str(out), "--json"]) == 0
        before = json.loads(capsys.readouterr().out)
        assert before["overall"]["leaks"] > 0 and before["overall"]["recall"] < 0.9, before["overall"]

        new = tmp_path / "fleet-2.toml"
        assert main(["tags", "propose", str(tags), "--sessions", str(out), "--policy", str(fleet1),
                     "-o", str(new)]) == 0
        proposed = capsys.readouterr().out
        assert "face: min_score 0.6 →" in proposed, proposed
        assert main(["tags", "check", str(new), "--tags", str(tags), "--sessions", str(out),
                     "--current", str(fleet1)]) == 0
        checked = capsys.readouterr().out
        assert "check PASSED" in checked

        assert main(["fleet", "push", "--broker", broker.url, "--key", str(key), "--devices", *DEVICES,
                     "--policy", str(new), "--canary", "50%", "--timeout", "60"]) == 0
        pushed = capsys.readouterr().out
        assert "2/2 ok" in pushed and "policy fleet-2 in force" in pushed
        for d in devs:
            assert d.service.stages["redact"].status()["policy_version"] == "fleet-2"
            d.restart()  # the next session of the same scene, with the policy the device now has
        truth2 = run_sessions(devs, out)
        tags2 = crowd_tags({**truth1, **truth2}, tmp_path / "tags2.jsonl", out)
        assert main(["tags", "score", str(tags2), "--sessions", str(out), "--json"]) == 0
        after = json.loads(capsys.readouterr().out)
        v1, v2 = version_stats(after, "fleet-1"), version_stats(after, "fleet-2")
        assert v2["recall"] >= 0.95 > v1["recall"] and v2["leaks"] <= v1["leaks"] // 5, after["by_version"]
        # the face bracket (redact/bracket.py) paints a key frame's detections on the frames between too, so a
        # false positive at the lowered threshold counts on ~2 frames: measured 0.053-0.064 here
        assert v2["over_redaction"] <= 0.08, v2
        with capsys.disabled():
            print("\n" + proposed + checked + pushed)
            print(json.dumps({"before": v1, "after": v2, "taggers": after["taggers"]}))
    finally:
        for d in devs:
            d.close()
        ingest.stop()
