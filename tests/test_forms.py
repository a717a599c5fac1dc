"""Rule-defined private forms: parsing (errors name the form and field), evaluation, and the stage
redacting bibs, plates and documents with the real PP-OCR and person models — without the
recognised text of a redacted region reaching the manifest, the status, the spool (= the wire) or a log.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from redact.forms import Found, evaluate, needed
from redact.policy import PolicyError, load_policy, parse_policy

BIB = {"name": "bib", "from": "text", "match": "^[0-9]{1,6}$", "inside": "person"}


def policy(*forms: dict, rules: list[dict] | None = None) -> dict:
    return {"version": "t-1", "forms": list(forms), "rules": rules or [{"class": "custom:bib"}]}


@pytest.mark.parametrize(("form", "expect"), [
    ({**BIB, "match": "^[0-9"}, "forms[0] ('bib').match: invalid regular expression"),
    ({**BIB, "from": "txt"}, "forms[0] ('bib').from: unknown detector or form 'txt'"),
    ({**BIB, "inside": "car"}, "forms[0] ('bib').inside: unknown detector or form 'car'"),
    ({**BIB, "aspect": [3, 1]}, "forms[0] ('bib').aspect: expected [min, max]"),
    ({**BIB, "min_lines": -1}, "forms[0] ('bib').min_lines: expected an integer 0-100"),
    ({**BIB, "colour": "red"}, "forms[0] ('bib').colour: no such field"),
    ({**BIB, "name": "Bib!"}, "forms[0].name: expected a lowercase name"),
    ({**BIB, "name": "text"}, "forms[0].name: 'text' is a built-in class"),
    ({"name": "tall", "from": "person", "match": "x"}, "forms[0] ('tall').match: only for forms from text"),
])
def test_invalid_forms_name_the_form_and_field(form: dict, expect: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(policy(form), "p.toml")
    assert str(e.value).startswith("p.toml: ") and expect in str(e.value)


def test_cycles_and_duplicates_are_refused() -> None:
    a = {"name": "a", "from": "b"}
    b = {"name": "b", "from": "text", "inside": "a"}
    with pytest.raises(PolicyError, match=r"forms\[0\] \('a'\)\.from: cycle a → b → a"):
        parse_policy(policy(a, b, rules=[{"class": "custom:a"}]), "p.toml")
    with pytest.raises(PolicyError, match=r"forms\[1\] \('bib'\)\.name: 'bib' is already defined by forms\[0\]"):
        parse_policy(policy(BIB, BIB), "p.toml")
    with pytest.raises(PolicyError, match=r"rules\[0\]\.class: expected a form defined in \[\[forms\]\]"):
        parse_policy(policy(BIB, rules=[{"class": "custom:bibs"}]), "p.toml")


def test_shipped_policies_load_and_the_default_covers_faces_and_plates() -> None:
    shipped = sorted((Path(__file__).parent.parent / "redact" / "policies").glob("*.toml"))
    assert {p.stem for p in shipped} >= {"bibs", "plates", "documents_screens", "all_text", "house_numbers"}
    for p in shipped:
        pol = load_policy(p)
        assert pol.rules, p
    assert {r.cls for r in load_policy(None).rules} == {"face", "plate"}


def test_evaluate_bib_inside_person_plate_aspect_and_document_block() -> None:
    pol = parse_policy(policy(BIB, {"name": "document", "from": "text", "min_lines": 3},
                              rules=[{"class": "custom:bib"}, {"class": "custom:document"}, {"class": "plate"}]), "p")
    order, detectors = needed({f.name: f for f in pol.forms}, [r.cls for r in pol.rules])
    assert detectors == {"text", "person"} and [f.name for f in order][-1] == "plate"
    text = np.array([[100, 100, 140, 120, 0.9],   # 0 "1047" on the person
                     [300, 100, 340, 120, 0.9],   # 1 "1047" not on a person
                     [10, 10, 90, 30, 0.9],       # 2 "M AB 1234", plate-shaped
                     [10, 200, 200, 215, 0.9],    # 3-5 three lines of a page
                     [10, 220, 180, 235, 0.9],
                     [10, 240, 190, 255, 0.9]], float)
    strings = {0: "1047", 1: "1047", 2: "M AB 1234", 3: "Dear Sir", 4: "Account 4411", 5: "Regards"}
    asked: list[list[int]] = []

    def read(idx: list[int]) -> dict[int, str]:
        asked.append(idx)
        return {i: strings[i] for i in idx}

    base = {"text": Found(text, [[i] for i in range(len(text))]),
            "person": Found(np.array([[80, 50, 200, 300, 0.8]], float))}
    out = evaluate(order, base, read)
    assert out["bib"].boxes[:, :4].tolist() == [[100, 100, 140, 120]]
    assert out["plate"].boxes[:, :4].tolist() == [[10, 10, 90, 30]]
    assert out["document"].boxes[:, :4].tolist() == [[10, 200, 200, 255]]
    assert 1 not in asked[0]  # the line off the person is never read for the bib form
    assert all(isinstance(k, str) for k in out) and not hasattr(out["bib"], "texts")
    # Lines the reader could not read in time are private until read: they count as matches.
    unread = evaluate(order, base, lambda idx: {})
    assert len(unread["bib"].boxes) == 4 and len(unread["plate"].boxes) == 3  # on the person / plate-shaped


@pytest.fixture(scope="module")
def frames() -> list:
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(640, 480, pace="fast", n_frames=6)
    return list(iter(src.read, None))


def test_stage_redacts_bib_plate_and_document_and_never_leaks_their_text(frames: list, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    from redact import build_stage
    from redact.config import RedactConfig
    from tests.uplink_helpers import uplink_cfg
    from uplink import build_stage as build_uplink

    # The bib form matches only the exact number on the synthetic runner: a custom:bib region proves
    # the recogniser read "1047"; the plate form matches only the synthetic EU plate's characters.
    p = tmp_path / "p.toml"
    p.write_text('version = "leak-1"\n'
                 '[[forms]]\nname = "bib"\nfrom = "text"\nmatch = \'^1047$\'\ninside = "person"\n'
                 '[[forms]]\nname = "eu"\nfrom = "text"\nmatch = \'^M ?AB ?1234$\'\n'
                 '[[forms]]\nname = "document"\nfrom = "text"\nmin_lines = 3\n'
                 '[[rules]]\nclass = "face"\n[[rules]]\nclass = "custom:bib"\n[[rules]]\nclass = "custom:eu"\n'
                 '[[rules]]\nclass = "custom:document"\naction = "fill"\n')
    stage = build_stage(RedactConfig(policy=str(p), budget_ms=10000.0, text_every=1, person_every=1))
    assert not stage.status()["load_error"]
    up = build_uplink(uplink_cfg(tmp_path), "dev1", "s1")
    caplog.set_level(logging.DEBUG)
    seen: set[str] = set()
    manifests = []
    for f in frames:
        out = stage.apply(f)
        manifests.append(json.dumps(out.redaction))
        seen |= {r["class"] for r in out.redaction["regions"]}
        assert set(out.redaction["classes"]) == {"face", "plate", "custom:bib", "custom:eu", "custom:document"}  # plate: the built-in layer
        assert out.redaction["classes"]["custom:bib"]["coverage"] == "detected"
        up.apply(out)
    status = json.dumps(stage.status(), default=str)
    up.close()
    assert {"custom:bib", "custom:eu", "custom:document"} <= seen
    spool = b"".join(q.read_bytes() for q in (tmp_path / "spool").rglob("*") if q.is_file())
    assert len(spool) > 10_000
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("1047", "AB 1234", "AB1234", "Account 4411", "Jane Example"):
        assert secret not in status and secret not in logs
        assert all(secret not in m for m in manifests)
        assert secret.encode() not in spool
    stage.close()


def test_uncovered_class_withholds_and_coverage_is_held_between_passes(frames: list, tmp_path: Path) -> None:
    from capture.frame import FrameWithheld
    from redact import build_stage
    from redact.config import RedactConfig
    from redact.runtime import ModelRunError

    p = tmp_path / "p.toml"
    p.write_text('version = "t"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "text"\n')
    stage = build_stage(RedactConfig(policy=str(p), budget_ms=10000.0, text_every=3))
    cov = [stage.apply(f).redaction["classes"]["text"] for f in frames]
    assert [c["coverage"] for c in cov] == ["detected", "held", "held"] * 2
    st = stage.status()["forms"]
    assert st["classes"]["text"] == {"detected": 2, "held": 4} and st["detector_ms_per_frame"]["text"] > 0
    # A pass that does not fit what is left of the budget is deferred while its class is held...
    tight = build_stage(RedactConfig(policy=str(p), budget_ms=10000.0, text_every=1, hold_frames=2))
    tight.forms.passes.ms["text"], tight.forms.passes.passes["text"] = 1e9, 1  # "a text pass takes forever"
    cov = [tight.apply(f).redaction["classes"]["text"]["coverage"] for f in frames[:5]]
    assert cov == ["detected", "held", "detected", "held", "detected"] and tight.status()["forms"]["deferred"]["text"] == 2

    # ...and when passes keep being stopped at the deadline, the frame is withheld once the hold ends.
    def stopped(*a: object, **k: object) -> None:
        raise ModelRunError("model_timeout", "run stopped at the frame deadline")

    tight.forms.models.get("text").run = stopped
    reasons = []
    for f in frames:
        try:
            reasons.append(tight.apply(f).redaction["classes"]["text"]["coverage"])
        except FrameWithheld as e:
            reasons.append(e.reason)
    # held (deferred), held (stopped, still within the hold), then the pass is due and stopped: withheld.
    assert reasons[:3] == ["held", "held", "model_timeout"] and set(reasons[3:]) == {"model_timeout"}


def test_cli_reports_form_classes_in_todays_json_shape(frames: list, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    from device.cli import main

    cv2.imwrite(str(tmp_path / "scene.png"), frames[0].color)
    policy = Path(__file__).parent.parent / "redact" / "policies" / "bibs.toml"
    assert main(["redact", str(tmp_path / "scene.png"), "--out", str(tmp_path / "out"), "--policy", str(policy),
                 "--json"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    regions = json.loads(line)["regions"]
    assert {"face", "custom:bib"} <= {r["class"] for r in regions}
    assert all(set(r) == {"bbox", "class", "score", "action"} for r in regions)
    bib = next(r for r in regions if r["class"] == "custom:bib")
    assert bib["action"] == "pixelate" and "1047" not in line
    out = cv2.imread(str(tmp_path / "out" / "scene.png"))
    x1, y1, x2, y2 = bib["bbox"]
    assert not np.array_equal(out[y1:y2, x1:x2], frames[0].color[y1:y2, x1:x2])


def test_lines_not_read_yet_stay_private_and_reads_per_pass_are_capped(frames: list, tmp_path: Path) -> None:
    from redact import build_stage
    from redact.config import RedactConfig

    p = tmp_path / "p.toml"  # a form no line of the scene matches: only reading a line clears it
    p.write_text('version = "t"\n[[forms]]\nname = "never"\nfrom = "text"\nmatch = \'^NO SUCH LINE$\'\n'
                 '[[rules]]\nclass = "face"\n[[rules]]\nclass = "custom:never"\n')
    counts = {}
    for reads in (0, 1, 64):
        stage = build_stage(RedactConfig(policy=str(p), budget_ms=10000.0, text_every=1, text_reads_per_pass=reads))
        n = [sum(r["class"] == "custom:never" for r in stage.apply(f).redaction["regions"]) for f in frames]
        lines = stage.status()["forms"]["lines_read"]
        counts[reads] = (n, lines)
        assert lines <= reads * len(frames)
        stage.close()
    assert counts[0][1] == 0 and min(counts[0][0]) >= 5  # nothing read: every line is private
    assert 0 < counts[1][1] <= len(frames) and counts[1][0][0] < counts[0][0][0]  # one read per pass
    # All read: none matches; only lines the reader cannot read (tiny, blurred) or that the frame's
    # edge cuts stay private (unknown counts as a match).
    assert counts[64][1] > counts[1][1] and sum(counts[64][0]) <= sum(counts[0][0]) / 3, counts


@pytest.mark.parametrize(("extra", "reads"), [
    ('[[rules]]\nclass = "text"\n', 1),  # every line already blurred: reading only labels it
    ('[[rules]]\nclass = "text"\naction = "pixelate"\n', 6),  # the bib's blur is stronger than text's
    ('[[rules]]\nclass = "text"\napplies_to = "color"\n', 6),  # the bib's depth is not covered by text
    ('[[rules]]\nclass = "text"\nmin_score = 0.6\n', 6),  # text keeps fewer lines than the bib rule
    ("", 6),
])
def test_reads_are_cut_only_where_the_text_rule_hides_the_same_lines(extra: str, reads: int) -> None:
    import tomllib

    from redact.config import RedactConfig
    from redact.schedule import FormSchedule, Models

    text = ('version = "t"\n[[forms]]\nname = "bib"\nfrom = "text"\nmatch = \'^[0-9]+$\'\n'
            '[[rules]]\nclass = "face"\n[[rules]]\nclass = "custom:bib"\n' + extra)
    cfg = RedactConfig(text_reads_per_pass=6)
    sched = FormSchedule(cfg, parse_policy(tomllib.loads(text), "t"), ["face"], Models(cfg))
    assert sched.status()["forms"]["reads_per_pass"] == reads


@pytest.mark.parametrize(("read", "plate"), [
    ("M AB 1234", True), ("MAB 1234", True), ("MAB 1234]", True), ("|7ABC123|", True), ("ABC-1234", True),
    ("AB-123-CD", True), ("1234 BCD", True), ("AB12 CDE", True), ("12-ABC-3", True), ("b mw 123", True),
    ("EXIT 12", False), ("EXIT12", False), ("Room 204", False), ("GATE 12", False), ("1047", False),
    ("Meeting 10:00", False), ("Your PIN is 4821", False), ("", False),
])
def test_builtin_plate_matches_plates_not_signs(read: str, plate: bool) -> None:
    """The built-in `plate` form on a plate-shaped line (aspect 4) whose text the reader returns."""
    from redact.forms import BUILTIN_FORMS

    line = Found(np.array([[10.0, 10.0, 210.0, 60.0, 0.9]]), [[0]])
    out = evaluate([BUILTIN_FORMS["plate"]], {"text": line}, lambda idx: {i: read for i in idx})
    assert len(out["plate"].boxes) == int(plate)
    wide = Found(np.array([[10.0, 10.0, 610.0, 60.0, 0.9]]), [[0]])  # aspect 12: not plate-shaped
    assert not len(evaluate([BUILTIN_FORMS["plate"]], {"text": wide}, lambda idx: {i: read for i in idx})["plate"].boxes)


def test_a_plate_cut_by_the_frames_edge_stays_private(tmp_path: Path) -> None:
    """At the end of the synthetic trajectory the US plate leaves the frame on the left: the reader sees
    "BC1", "ABC12" or nothing it can read. A fragment proves nothing, so the line counts as a plate
    (before: released, 6 frames with the plate's visible part sharp)."""
    from capture.synthetic import SyntheticSource
    from redact import build_stage
    from redact.config import RedactConfig

    src = SyntheticSource(640, 480, pace="fast", n_frames=120)
    src.open()
    tail = [f for f in iter(src.read, None) if f.seq >= 108]
    p = tmp_path / "p.toml"
    p.write_text('version = "t"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "plate"\n')
    stage = build_stage(RedactConfig(policy=str(p), floor="lowered", budget_ms=10000.0))
    cut = 0
    for f in tail:
        out = stage.apply(f)
        hidden = np.zeros((480, 640), bool)
        for r in out.redaction["regions"]:
            x1, y1, x2, y2 = r["bbox"]
            hidden[y1:y2, x1:x2] = True
        for x1, y1, x2, y2 in f.attachments["truth"]["private"].get("plate", []):
            cut += x1 == 0
            # ≥ 0.5: the detector boxes only the plate's visible glyphs, the truth is its clipped text box
            assert hidden[y1:y2, x1:x2].mean() >= 0.5, (f.seq, [x1, y1, x2, y2], out.redaction["regions"])
    assert cut >= 4  # the case is there


def test_person_class_takes_a_body_below_each_detected_face_unless_turned_off(tmp_path: Path) -> None:
    from capture.synthetic import SyntheticSource
    from redact import build_stage
    from redact.config import RedactConfig

    src = SyntheticSource(640, 480, pace="fast", n_frames=1)
    src.open()
    frame = src.read()
    p = tmp_path / "p.toml"
    p.write_text('version = "t"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "person"\n')
    counts = {}
    for on in (True, False):
        stage = build_stage(RedactConfig(policy=str(p), floor="lowered", budget_ms=10000.0, person_from_faces=on))
        out = stage.apply(frame)
        faces = [r for r in out.redaction["regions"] if r["class"] == "face"]
        people = [r for r in out.redaction["regions"] if r["class"] == "person"]
        counts[on] = len(people)
        if on:  # each face's body: its top at the face's top, below it, wider than it
            for f in faces:
                fx = (f["bbox"][0] + f["bbox"][2]) / 2
                assert any(b["bbox"][0] <= fx <= b["bbox"][2] and b["bbox"][3] > f["bbox"][3] for b in people)
        stage.close()
    assert counts[True] > counts[False], counts


def test_exposed_strips_follow_the_cameras_shift_and_edge_holds_add_only() -> None:
    from redact.hold import Exposed, Hold

    e = Exposed()
    assert e.strips(640, 480, 32) == []
    e.step(10.0, 0.0)
    e.step(8.5, -6.0)  # content moved right 18.5 px and up 6 px since the pass: new on the left and bottom
    assert e.strips(640, 480, 32) == [(0, 0, 51, 480), (0, 442, 640, 38)]
    e.reset()
    assert e.strips(640, 480, 32) == []
    h = Hold()
    h.refresh(np.array([[10, 10, 100, 40, 0.9]]), 640, 480)
    h.refresh(np.array([[12, 11, 60, 40, 0.8]]), 640, 480, add_only=True)  # a strip's partial box replaces nothing
    assert len(h.boxes) == 2
    h.refresh(np.array([[12, 11, 98, 40, 0.8]]), 640, 480)  # a whole pass's box replaces what it overlaps
    assert len(h.boxes) == 1


def test_text_entering_the_frame_is_found_by_the_edge_pass_between_whole_passes(tmp_path: Path) -> None:
    """Whole text passes every 12 frames: a plate that comes into view as the camera turns waited up to
    11 frames for one (the synthetic trajectory's US plate enters on the left at the end). The edge pass
    half-way looks at the strips that came into view, and holds what it finds (unread: private)."""
    from capture.synthetic import SyntheticSource
    from redact import build_stage
    from redact.config import RedactConfig

    src = SyntheticSource(640, 480, pace="fast", n_frames=120)
    src.open()
    frames = list(iter(src.read, None))
    p = tmp_path / "p.toml"
    p.write_text('version = "t"\n[[rules]]\nclass = "face"\n[[rules]]\nclass = "plate"\n')
    missed = {}
    for on in (True, False):
        stage = build_stage(RedactConfig(policy=str(p), floor="lowered", budget_ms=10000.0, text_every=12,
                                         text_edge_pass=on))
        missed[on] = 0
        for f in frames:
            out = stage.apply(f)
            hidden = np.zeros((480, 640), bool)
            for r in out.redaction["regions"]:
                x1, y1, x2, y2 = r["bbox"]
                hidden[y1:y2, x1:x2] = True
            missed[on] += sum(hidden[y1:y2, x1:x2].mean() < 0.7
                              for x1, y1, x2, y2 in f.attachments["truth"]["private"].get("plate", []))
        if on:
            assert stage.status()["forms"]["passes"]["text_edge"] >= 5
    assert missed[True] == 0 and missed[False] >= 3, missed
