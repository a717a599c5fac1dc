"""Crowd tags: the format (bad lines refused by line and field), consensus, and the score → propose →
check loop on sessions made by the real redaction stage (CenterFace) and the real ingest sink."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from crowd_support import FLEET_POLICY, crowd_tags, make_session, version_stats

from device.cli import main
from uplink.backend.tags import consensus
from uplink.backend.tags.format import TagError, parse_tag, read_tags

GOOD = {"device": "dev-a", "session": "s1", "seq": 3, "bbox": [10, 10, 30, 40], "label": "private",
        "class": "face", "tagger": "ann", "time": "2026-12-03T08:00:00Z"}


def test_bad_lines_are_refused_with_line_number_and_field(tmp_path, capsys):
    bad = [
        ({**GOOD, "bbox": [5, 5, 3, 9]}, "bbox"),
        ({**GOOD, "label": "secret"}, "label"),
        ({**GOOD, "class": "custom:"}, "class"),
        ({**GOOD, "seq": -1}, "seq"),
        ({**GOOD, "device": "../etc"}, "device"),
        ({**GOOD, "time": "yesterday"}, "time"),
        ({**GOOD, "tagger": ""}, "tagger"),
        ({**GOOD, "lable": "private"}, "lable"),
        ({k: v for k, v in GOOD.items() if k != "bbox"}, "bbox"),
        ({**GOOD, "polygon": [[0, 0], [1, 1], [2, 0]]}, "bbox"),  # both
        ({**{k: v for k, v in GOOD.items() if k != "bbox"}, "polygon": [[0, 0], [1, 1]]}, "polygon"),
        ({**GOOD, "bbox": [1, 2, float("nan"), 4]}, "bbox"),
    ]
    lines = [json.dumps(GOOD)] + [json.dumps(obj) for obj, _ in bad] + ["{not json", "[1, 2]"]
    path = tmp_path / "tags.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TagError) as e:
        read_tags(path)
    msg = str(e.value)
    for n, (_, field) in enumerate(bad, start=2):
        assert f"tags.jsonl:{n}: {field}:" in msg, (n, field, msg)
    assert f"tags.jsonl:{len(bad) + 2}: (line): not JSON" in msg and f"tags.jsonl:{len(bad) + 3}: (line)" in msg
    tags, refused = read_tags(path, skip_bad=True)
    assert len(tags) == 1 and len(refused) == len(bad) + 2
    # the CLI: a clear error, exit 2, no traceback
    (tmp_path / "out" / "d" / "s").mkdir(parents=True)
    (tmp_path / "out" / "d" / "s" / "frames.jsonl").write_text("")
    assert main(["tags", "score", str(path), "--sessions", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tags.jsonl:2: bbox:" in err and "Traceback" not in err
    poly = parse_tag({**{k: v for k, v in GOOD.items() if k != "bbox"}, "polygon": [[1, 2], [9, 3], [5, 8]],
                      "time": 1796000000, "text": "4127", "x-tool": {"v": 2}})
    assert poly.bbox == (1, 2, 9, 8) and poly.text == "4127"


def test_consensus_majority_minimum_agreement_and_tagger_rates():
    def tag(tagger, label, box=(10, 10, 30, 40), seq=1, t=0):
        return parse_tag({**GOOD, "seq": seq, "bbox": list(box), "label": label, "tagger": tagger, "time": 1e9 + t})

    tags = [tag("a", "private"), tag("b", "private"), tag("c", "not_private", (11, 10, 30, 41)),
            tag("a", "private", seq=2), tag("b", "not_private", seq=2),  # a tie: never decided
            tag("a", "private", (100, 100, 120, 130), seq=3),  # one voter: not decided with min 2
            tag("c", "private", t=-5), ]  # c changed their mind later: only the latest vote counts
    cons = consensus.build(tags, min_taggers=2, min_agreement=0.6)
    dec = cons.decided
    assert len(cons.regions) == 3 and len(dec) == 1
    r = dec[0]
    assert r.label == "private" and r.voters == 3 and abs(r.agreement - 2 / 3) < 1e-9 and r.frame == ("dev-a", "s1", 1)
    assert cons.taggers["a"] == {"votes": 1, "agreed": 1, "agreement": 1.0}
    assert cons.taggers["c"] == {"votes": 1, "agreed": 0, "agreement": 0.0}
    assert len(consensus.build(tags, min_taggers=2, min_agreement=0.7).decided) == 0
    assert consensus.build([tag("a", "private"), tag("b", "private", (13, 12, 33, 40))]).decided[0].bbox == \
        (11.5, 11.0, 31.5, 40.0)  # the median of the winners' boxes
    with pytest.raises(ValueError, match="min-agreement"):
        consensus.build(tags, min_agreement=0.4)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("crowd")
    (root / "fleet-1.toml").write_text(FLEET_POLICY)
    truth = make_session(root / "out", "dev-a", "s1", str(root / "fleet-1.toml"))
    tags = crowd_tags(truth, root / "tags.jsonl", root / "out")
    return root, truth, tags


def test_score_finds_the_leaks_per_version_and_the_page_shows_only_sent_pixels(loop, capsys):
    root, truth, tags = loop
    assert main(["tags", "score", str(tags), "--sessions", str(root / "out"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    faces = sum(len(v) for v in truth.values())
    o = doc["overall"]
    assert o["private"] == faces and 0 < o["leaks"] < faces and o["recall"] < 0.8, o
    (version,) = doc["by_version"]
    assert version.startswith("fleet-1 ") and "centerface@" in version
    assert doc["by_class"]["face"]["leaks"] == o["leaks"] == len(doc["leaks"])
    assert doc["taggers"]["dan"]["agreement"] < 0.8 < doc["taggers"]["ann"]["agreement"]
    page = Path(doc["page"]).read_text()
    assert page.count("data:image/jpeg;base64,") >= 3 and "fleet-1" in page

    # a crop around a redacted region shows grey where the redaction was, never its (blurred) pixels
    from uplink.backend.tags.page import safe_crop
    from uplink.backend.tags.sessions import Sessions

    sessions = Sessions(root / "out")
    rec = next(r for r in sessions.frames.values() if r.regions)
    box = rec.regions[0]["bbox"]
    uri = safe_crop(sessions, rec.key, box, context=0.0)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    inner = img[h // 5:-h // 5, w // 5:-w // 5].astype(int)  # away from the outline's JPEG ringing
    assert np.abs(inner - 128).max() < 12, "a crop showed pixels from inside a redacted region"


@pytest.mark.slow
def test_propose_then_check_passes_and_the_next_session_has_no_leaks(loop, capsys):
    root, truth, tags = loop
    out = root / "out"
    new = root / "fleet-2.toml"
    assert main(["tags", "propose", str(tags), "--sessions", str(out), "--policy", str(root / "fleet-1.toml"),
                 "-o", str(new), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (change,) = doc["changes"]
    assert change["class"] == "face" and change["from"] == 0.6 and 0.2 < change["to"] < 0.5, change
    # (a face no threshold reaches may stay a leak: the scene grows hard cases; not this loop's to fix)
    assert change["after"]["recall"] >= 0.95 and change["after"]["over_redaction"] <= 0.05
    assert doc["replayed"]["recall"] >= 0.95 and doc["replayed"]["over_redaction"] <= 0.05, doc["replayed"]
    text = new.read_text()
    assert "version = 'fleet-2'" in text and "# face: min_score 0.6 →" in text

    assert main(["tags", "check", str(new), "--tags", str(tags), "--sessions", str(out),
                 "--current", str(root / "fleet-1.toml"), "--json"]) == 0
    chk = json.loads(capsys.readouterr().out)
    assert chk["ok"] and chk["recall"]["new"] > chk["recall"]["current"], chk

    # the gate refuses a policy that loses recall, and one that over-redacts
    worse = root / "worse.toml"
    worse.write_text(FLEET_POLICY.replace("0.6", "0.85").replace("fleet-1", "worse-1"))
    assert main(["tags", "check", str(worse), "--sessions", str(out)]) == 2  # no DIR/tags.jsonl
    assert "give --tags FILE" in capsys.readouterr().err
    (out / "tags.jsonl").write_bytes(tags.read_bytes())
    assert main(["tags", "check", str(worse), "--sessions", str(out)]) == 1  # the exact command
    assert "REFUSED: recall" in capsys.readouterr().out
    greedy = root / "greedy.toml"
    greedy.write_text(FLEET_POLICY.replace("0.6", "0.02").replace("fleet-1", "greedy-1"))
    assert main(["tags", "check", str(greedy), "--tags", str(tags), "--sessions", str(out)]) == 1
    assert "over-redaction" in capsys.readouterr().out.split("REFUSED")[1]

    # the same scene under the new policy: the crowd's tags now find no leak, side by side per version
    truth2 = make_session(out, "dev-a", "s2", str(new))
    tags2 = crowd_tags({**truth, **truth2}, root / "tags2.jsonl", out)
    assert main(["tags", "score", str(tags2), "--sessions", str(out), "--json", "--html", "-"]) == 0
    doc2 = json.loads(capsys.readouterr().out)
    by_v = doc2["by_version"]
    before, after = version_stats(doc2, "fleet-1"), version_stats(doc2, "fleet-2")
    assert after["recall"] >= 0.95 > before["recall"] and after["leaks"] <= before["leaks"] // 5, by_v


def test_propose_places_a_volume_and_exemplars_for_what_no_detector_finds(tmp_path, capsys):
    """A poster on the wall, tagged private in posed frames: no detector finds it, so propose places a
    world-anchored volume where it is (triangulated from poses and depth) and keeps exemplar crops."""
    from crowd_support import POSTER, poster_tags

    (tmp_path / "fleet-1.toml").write_text(FLEET_POLICY)
    out = tmp_path / "out"
    truth = make_session(out, "dev-p", "s1", str(tmp_path / "fleet-1.toml"), n=6, step=5, posed=True)
    tags = poster_tags([k[2] for k in truth], "dev-p", "s1", tmp_path / "tags.jsonl")
    assert main(["tags", "propose", str(tags), "--sessions", str(out), "--policy", str(tmp_path / "fleet-1.toml"),
                 "-o", str(tmp_path / "new.toml"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["changes"] == []  # nothing for the policy file: no detector sees posters
    vols = [a for a in doc["device_actions"] if a["kind"] == "volume"]
    ex = [a for a in doc["device_actions"] if a["kind"] == "exemplar"]
    assert len(vols) == 1 and vols[0]["frames"] == 6 and vols[0]["device"] == "dev-p", vols
    (x1, y1, z), (x2, y2, _) = POSTER
    centre, box = np.array(vols[0]["centre"]), np.array(vols[0]["box"])
    assert np.linalg.norm(centre - [(x1 + x2) / 2, (y1 + y2) / 2, z]) < 0.1, centre
    assert abs(box[0] - (x2 - x1)) < 0.25 and abs(box[1] - (y2 - y1)) < 0.25 and box[2] < 0.3, box
    assert vols[0]["command"].startswith("crowdcap privacy add-volume ") and "--box" in vols[0]["command"]
    assert len(ex) == 1 and ex[0]["name"] == "poster" and len(ex[0]["files"]) >= 3
    crop = cv2.imread(ex[0]["files"][0])
    assert crop is not None and crop.shape[0] >= 8
    assert "# device-side: custom:poster" in (tmp_path / "new.toml").read_text()


def test_text_forms_from_transcriptions_and_shapes():
    from uplink.backend.tags.consensus import Region
    from uplink.backend.tags.propose import next_version, text_form

    def reg(text, box=(0, 0, 40, 12)):
        return Region(("d", "s", 1), box, "private", "custom:bib", 3, 1.0, True, text)

    bibs = text_form("bib", [reg("4127"), reg("88"), reg("120345")])
    assert bibs["match"] == "^[0-9]{2,6}$" and bibs["from"] == "text"
    assert "aspect" not in bibs  # the pattern is enough
    plates = text_form("plate_x", [reg("AB-123"), reg("XY-987"), reg("KL 55")])
    assert plates["match"] == "^([A-Z]{2} [0-9]{2}|[A-Z]{2}-[0-9]{3})$", plates["match"]
    import re

    assert all(re.search(plates["match"], t) for t in ("AB-123", "QQ 12")) and not re.search(plates["match"], "A-1")
    assert text_form("door", [reg(None), reg(None)]) is None  # two boxes, no text: too weak
    door = text_form("door", [reg(None)] * 3)
    assert "match" not in door and door["aspect"][0] < 40 / 12 < door["aspect"][1]
    assert next_version("fleet-9") == "fleet-10" and next_version("home") == "home-crowd-1"


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("chromium") is None,
                    reason="Debian's chromium is installed by ./install.sh test")
def test_tags_page_renders_in_headless_chromium(loop, tmp_path, capsys):
    import subprocess

    root, _, tags = loop
    page = tmp_path / "tags.html"
    assert main(["tags", "score", str(tags), "--sessions", str(root / "out"), "--html", str(page)]) == 0
    capsys.readouterr()
    shot = tmp_path / "tags.png"
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--window-size=1200,1600", f"--screenshot={shot}",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert proc.returncode == 0 and not console, proc.stderr[-2000:]
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (1600, 1200)
    assert (img < 200).any(axis=2).mean() > 0.01 and img.std() > 20  # tables and crops, not a blank page
    assert "http" not in page.read_text().split("<body>")[1]  # self-contained: opens offline
