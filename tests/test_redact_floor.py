"""A privacy floor nobody can lower remotely (issue 16) and layered policy (issue 12).

`rules = []`, `min_score = 1.0` and a depth-only face rule, each through a policy file, a signed
downlink `policy update`, and `config set redact.policy` on the console/control socket: none weakens
redaction. Leaks are counted through the real pipeline with the real CenterFace (tests/leak_count.py).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from leak_count import count_leaks
from test_console_support import make_service, short_dir

import redact
from capture.config import ConfigError
from device.control import Controller, Session
from device.downlink import Downlink, sign_command
from redact.config import RedactConfig
from redact.layers import effective, load_layer
from redact.policy import PolicyError, parse_policy

N = 16
WEAK = {
    "no-rules": ('version = "w-empty"\nrules = []\n', None),
    "min-score-1": ('version = "w-ms"\n[[rules]]\nclass = "face"\nmin_score = 1.0\n', r"rules\[0\]\.min_score: 1\.0"),
    "depth-only": ('version = "w-depth"\n[[rules]]\nclass = "face"\napplies_to = "depth"\n',
                   r"rules\[0\]\.applies_to: 'depth'"),
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", list(WEAK))
def test_policy_file_cannot_weaken_the_floor(tmp_path: Path, case: str) -> None:
    text, error = WEAK[case]
    path = write(tmp_path, case, text)
    if error:
        with pytest.raises(PolicyError, match=error) as e:
            redact.build_stage(RedactConfig(policy=str(path)))
        assert str(path) in str(e.value) and "floor rule face" in str(e.value)
    else:
        stage = redact.build_stage(RedactConfig(policy=str(path)))
        assert [(r.cls, s) for r, s in zip(stage.policy.rules, stage.policy.sources, strict=True)] == [("face", "floor"), ("plate", "built-in")]
        r = count_leaks(stage, N)
        assert r["faces"] > 10 and r["leaks"] == 0 and r["depth_leaks"] == 0, r


def test_the_installer_can_lower_the_floor_in_the_config_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What the floor prevents: with it lowered (the device's own config file), the same policies leak."""
    stage = redact.build_stage(RedactConfig(policy=str(write(tmp_path, "p", WEAK["depth-only"][0])), floor="lowered"))
    assert "PRIVACY FLOOR LOWERED" in caplog.text
    assert stage.status()["floor"] == "lowered"
    r = count_leaks(stage, N)
    assert r["leaks"] == r["faces"] > 10 and r["depth_leaks"] == 0, r
    stage.reload_policy(write(tmp_path, "e", WEAK["no-rules"][0]))
    out = []
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(pace="fast", n_frames=2)
    src.open()
    out.append(stage.apply(src.read()))
    assert out[0].redaction["floor"] == "lowered" and out[0].redaction["regions"] == []


def test_layers_union_and_sources(tmp_path: Path) -> None:
    fleet = parse_policy({"version": "fleet-3", "rules": [{"class": "face", "action": "fill"},
                                                          {"class": "plate", "applies_to": "color"}]}, "fleet.toml")
    wearer = parse_policy({"version": "home-2", "on_fault": "obscure",
                           "rules": [{"class": "face", "margin": 0.6}, {"class": "plate", "applies_to": "depth"},
                                     {"class": "text"}]}, "wearer.toml")
    p = effective(wearer, fleet)
    rules = {r.cls: (r, s) for r, s in zip(p.rules, p.sources, strict=True)}
    face, src = rules["face"]
    assert (face.action, face.margin, face.applies_to, src) == ("fill", 0.6, "both", "floor+fleet+wearer")
    assert rules["plate"][0].applies_to == "both" and rules["plate"][1] == "built-in+fleet+wearer"  # nobody removes the other's
    assert rules["text"][1] == "wearer"
    assert p.version == "home-2" and p.on_fault == "obscure"
    assert dict(p.layers) == {"built-in": "default-2", "fleet": "fleet-3", "wearer": "home-2"}
    assert p.to_dict()["rules"][0]["source"] == "floor+fleet+wearer"
    # A weaker wearer rule than the fleet's is merged stricter, and a below-floor one is an error.
    with pytest.raises(PolicyError, match=r"rules\[0\]\.action: 'pixelate'"):
        load_layer(write(tmp_path, "px", 'version = "x"\n[[rules]]\nclass = "face"\naction = "pixelate"\n'), "enforced")


@pytest.fixture()
def rig(tmp_path: Path):
    key = Ed25519PrivateKey.generate()
    pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    root = short_dir()
    service = make_service(root, stages="config", redact=True, extra=f'\n[downlink]\npublic_key = "{pub}"\n')
    controller = Controller(service)
    yield service, controller, Downlink(service, controller), key, tmp_path


def test_signed_downlink_policy_update_cannot_weaken(rig) -> None:
    service, controller, dl, key, tmp_path = rig
    stage = service.stages["redact"]
    for _case, (text, error) in WEAK.items():
        r = dl.handle(sign_command(key, "test-dev", "policy update", {"policy": text}))
        if error:
            assert not r["ok"] and "policy refused, previous policy kept" in r["detail"], r
            assert "floor rule face" in r["detail"] and ("min_score" in r["detail"] or "applies_to" in r["detail"])
        else:
            assert r["ok"], r  # the fleet layer adds nothing; the floor's face rule stays
            assert service.config.redact.fleet_policy == r["result"]["policy_file"]
            assert service.config.redact.policy == ""  # the wearer's layer is never touched by the fleet
        assert stage.policy.rule_for("face") is not None
    reply = controller.execute(["policy"], Session(origin="socket", authorized=True))
    assert reply.ok and reply.data["floor"] == "enforced" and reply.data["layers"]["fleet"] == "w-empty"
    assert "[floor]" in reply.text
    r = count_leaks(stage, N)
    assert r["faces"] > 10 and r["leaks"] == 0 and r["depth_leaks"] == 0, r


@pytest.mark.parametrize("origin", ["console", "socket"])
def test_config_set_cannot_weaken(rig, origin: str) -> None:
    service, controller, dl, key, tmp_path = rig
    session = Session(origin=origin, authorized=True)
    stage = service.stages["redact"]
    for case, (text, error) in WEAK.items():
        path = write(tmp_path, case, text)
        reply = controller.execute(["config", "set", "redact.policy", f'"{path}"'], session)
        if error:
            assert not reply.ok and "floor rule face" in reply.data["error"] and str(path) in reply.data["error"], reply
        else:
            assert reply.ok and reply.data["applied"] == "live", reply
        assert stage.policy.rule_for("face") is not None and stage.policy.rule_for("face").applies_to == "both"
    for argv, words in ((["config", "set", "redact.floor", "lowered"], "cannot be changed by a command"),
                        (["config", "set", "redact.enabled", "false"], "cannot be switched off"),
                        (["config", "set", "redact.fleet_policy", '"/tmp/x.toml"'], "signed downlink"),
                        (["config", "set", "redact.canary_every", "30"], "may only lower it"),
                        (["config", "set", "redact.detect_width", "64"], "may only raise it"),
                        (["config", "set", "redact.hold_frames", "0"], "may only raise it"),
                        (["config", "set", "redact.text_every", "30"], "may only lower it"),
                        (["privacy", "update", 'version = "x"'], "only the signed downlink")):
        reply = controller.execute(argv, session)
        assert not reply.ok and words in reply.data["error"], reply
    assert service.config.redact.floor == "enforced" and service.config.redact.enabled
    assert "floor" not in (service.config_path.read_text().split("[redact]")[1].split("[")[0])
    r = count_leaks(stage, N)
    assert r["faces"] > 10 and r["leaks"] == 0 and r["depth_leaks"] == 0, r


def test_downlink_config_set_cannot_lower_the_floor(rig) -> None:
    service, controller, dl, key, tmp_path = rig
    for k, v in (("redact.floor", "lowered"), ("redact.enabled", False), ("redact.policy", "")):
        r = dl.handle(sign_command(key, "test-dev", "config set", {"key": k, "value": v}))
        assert not r["ok"] and k in r["detail"], r
    assert service.config.redact.floor == "enforced"


def test_guard_names_the_key() -> None:
    from redact.floor import guard_setting

    with pytest.raises(ConfigError, match="redact.floor"):
        guard_setting(RedactConfig(), "floor", "lowered")
    with pytest.raises(ConfigError, match="redact.verify_min_score"):
        guard_setting(RedactConfig(), "verify_min_score", 0.9)
    cfg = RedactConfig()
    guard_setting(cfg, "hold_frames", cfg.hold_frames + 5)  # more privacy: allowed
    guard_setting(cfg, "text_every", 1)
    guard_setting(cfg, "budget_ms", 100.0)  # not tuning detection down: a tighter budget withholds, never leaks
    with pytest.raises(ConfigError, match="redact.text_edge_pass: a command may only switch it on"):
        guard_setting(cfg, "text_edge_pass", False)
    guard_setting(cfg, "text_edge_pass", True)


def test_config_show_lists_the_effective_policy_with_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from device.cli import main

    wearer = write(tmp_path, "w", 'version = "home-2"\n[[rules]]\nclass = "face"\nmargin = 0.5\n[[rules]]\nclass = "plate"\n')
    fleet = write(tmp_path, "f", 'version = "fleet-9"\n[[rules]]\nclass = "text"\n')
    cfg = write(tmp_path, "c", f'[redact]\npolicy = "{wearer}"\nfleet_policy = "{fleet}"\n')
    assert main(["config", "show", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out[out.index("{"):])["effective_policy"]
    assert shown["layers"] == {"built-in": "default-2", "fleet": "fleet-9", "wearer": "home-2"}
    assert {r["class"]: r["source"] for r in shown["rules"]} == {"face": "floor+wearer", "text": "fleet", "plate": "built-in+wearer"}
    assert shown["floor"] == "enforced" and shown["rules"][0]["margin"] == 0.5
