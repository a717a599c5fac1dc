"""Model updates from the downlink: verify, self-test on reference frames, swap atomically, roll back.

    updater.update(card_toml_text, model_bytes) -> (ok, result)

1. The card and model go to a staging folder under `downlink.models_dir`; the card must parse and the
   model must hash to the card's sha256 (the card itself was covered by the command's signature).
2. Self-test: a redaction stage built with the candidate alone runs on reference frames the device
   ships (the deterministic synthetic scene with real faces and ground truth); it must find at least
   `downlink.selftest_min_recall` of the visible faces. A model that fails to load fails the test.
3. Swap: the staging folder is renamed into place and `redact.models` is set to its card through the
   command layer (validated, config file written atomically). The redaction stage picks it up live if
   it can (`reload_models`), else the service restarts. If any step fails, `redact.models` is put back
   and the new folder removed: the previous model stays active.
4. After an activating restart, `check_pending()` (called by `Operations.start`) keeps the new model if
   the stage loaded it, else puts the previous one back and restarts again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import shutil
import tomllib
from pathlib import Path
from typing import Any

from device.configfile import atomic_write
from device.configset import set_config

log = logging.getLogger("crowdcap.models")

REFERENCE_SEED = 7
REFERENCE_FRAMES = 4
MIN_FACE_PX = 24
PENDING = "pending-activation.json"  # faces smaller than this (far away) are not counted in the self-test


def reference_frames(n: int = REFERENCE_FRAMES, width: int = 640, height: int = 480) -> list[Any]:
    """Frames with visible faces from the synthetic scene (deterministic: same frames on every device)."""
    from capture.synthetic import SyntheticSource

    src = SyntheticSource(width, height, seed=REFERENCE_SEED, pace="fast", n_frames=240)
    src.open()
    frames = []
    try:
        while len(frames) < n:
            f = src.read()
            if f is None:
                break
            faces = [b for b in f.attachments["truth"]["faces"] if b[3] - b[1] >= MIN_FACE_PX]
            if faces and f.seq % 15 == 0:
                frames.append(f)
    finally:
        src.close()
    return frames


def _covered(truth: list[float], boxes: list[list[int]]) -> bool:
    """A true face counts as found when a detected box holds its centre and overlaps it by ≥ 30 %."""
    cx, cy = (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    area = (truth[2] - truth[0]) * (truth[3] - truth[1])
    for b in boxes:
        if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]:
            iw = max(0.0, min(truth[2], b[2]) - max(truth[0], b[0]))
            ih = max(0.0, min(truth[3], b[3]) - max(truth[1], b[1]))
            if area > 0 and iw * ih / area >= 0.3:
                return True
    return False


def selftest(card_path: Path, redact_cfg: Any, frames: list[Any]) -> dict[str, Any]:
    """Recall of a redaction stage with only this model on `frames` (what the wearer would get)."""
    import redact
    from capture.frame import FrameWithheld

    # An offline check of what the model sees, not of the machine's load: a generous time budget.
    cfg = dataclasses.replace(redact_cfg, models=[str(card_path)], hold_frames=0, threads=1, cache_dir="",
                              budget_ms=max(redact_cfg.budget_ms, 5000.0))
    stage = redact.build_stage(cfg)
    try:
        load_error = stage.status().get("load_error")
        if load_error:
            return {"ok": False, "recall": 0.0, "detail": f"model does not load: {load_error}"}
        found = total = withheld = 0
        for f in frames:
            truth = [b for b in f.attachments["truth"]["faces"] if b[3] - b[1] >= MIN_FACE_PX]
            total += len(truth)
            try:
                out = stage.apply(f)
            except FrameWithheld as e:
                withheld += 1
                log.warning("model selftest: frame %d withheld (%s)", f.seq, e)
                continue
            boxes = [r["bbox"] for r in (out.redaction or {}).get("regions", []) if r.get("class") == "face"]
            found += sum(_covered(t, boxes) for t in truth)
    finally:
        close = getattr(stage, "close", None)
        if close is not None:
            close()
    recall = found / total if total else 0.0
    return {"ok": total > 0 and withheld == 0, "recall": round(recall, 3), "faces": total, "found": found,
            "withheld": withheld, "detail": f"{found}/{total} reference faces found, {withheld} frames withheld"}


class ModelUpdater:
    def __init__(self, service: Any, *, frames: list[Any] | None = None) -> None:
        self.service = service
        self._frames = frames

    @property
    def models_dir(self) -> Path:
        cfg = self.service.config
        d = Path(cfg.downlink.models_dir)
        return d if d.is_absolute() else Path(cfg.device.state_dir) / d

    def check_pending(self) -> str:
        """After a restart that activated a new model: keep it if the redaction stage loaded it, else put
        the previous model back and restart again. Returns "", "confirmed" or "rolled back"."""
        marker = self.models_dir / PENDING
        try:
            pending = json.loads(marker.read_text())
            new, previous = list(pending["new"]), list(pending["previous"])
        except FileNotFoundError:
            return ""
        except (OSError, ValueError, KeyError, TypeError):
            marker.unlink(missing_ok=True)
            return ""
        stage = self.service.stages.get("redact")
        load_error = stage.status().get("load_error") if hasattr(stage, "status") else ""
        if self.service.config.redact.models != new or not load_error:
            marker.unlink(missing_ok=True)
            return "confirmed" if self.service.config.redact.models == new else ""
        log.error("model update: the new model did not load after restart (%s); rolling back", load_error)
        set_config(self.service, "redact.models", previous)
        marker.unlink(missing_ok=True)
        self.service.restart_requested = True
        self.service.request_stop()
        return "rolled back"

    def update(self, card_text: str, model: bytes) -> tuple[bool, dict[str, Any]]:
        from redact.cards import CardError, load_card, read_verified

        try:
            raw = tomllib.loads(card_text)
        except tomllib.TOMLDecodeError as e:
            return False, {"error": f"card: not valid TOML ({e})", "stage": "verify"}
        except RecursionError:
            return False, {"error": "card: not valid TOML (nested too deeply)", "stage": "verify"}
        fname = raw.get("file")
        if not isinstance(fname, str) or not fname or Path(fname).name != fname or fname.startswith(("package:", ".")):
            return False, {"error": "card: file: expected a plain file name for the shipped model", "stage": "verify"}
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = self.models_dir / f".staging-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            (staging / fname).write_bytes(model)
            (staging / "card.toml").write_text(card_text, encoding="utf-8")
            try:
                card = load_card(staging / "card.toml")
                read_verified(card)
            except CardError as e:
                return False, {"error": str(e).replace(str(staging), "<staging>"), "stage": "verify"}
            frames = self._frames if self._frames is not None else reference_frames()
            result = selftest(staging / "card.toml", self.service.config.redact, frames)
            min_recall = self.service.config.downlink.selftest_min_recall
            if not result["ok"] or result["recall"] < min_recall:
                return False, {"error": f"self-test failed: {result['detail']} (need recall ≥ {min_recall})",
                               "stage": "selftest", "selftest": result}
            final = self.models_dir / f"{card.name}-{card.version}-{card.sha256[:12]}"
            if str(final / "card.toml") in self.service.config.redact.models:
                return True, {"model": card.model_id, "installed": str(final / "card.toml"),
                              "applied": "already active", "selftest": result}
            if final.exists():
                shutil.rmtree(final)  # a leftover of an earlier, rolled-back attempt
            staging.rename(final)  # atomic on one filesystem
            return self._activate(final, card.model_id, result)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _activate(self, final: Path, model_id: dict[str, str], result: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        previous = list(self.service.config.redact.models)
        card_path = str(final / "card.toml")
        try:
            set_config(self.service, "redact.models", [card_path], must_persist=True)
            stage = self.service.stages.get("redact")
            reload_models = getattr(stage, "reload_models", None)
            if reload_models is not None:
                reload_models([card_path])
                load_error = stage.status().get("load_error") if hasattr(stage, "status") else ""
                if load_error:
                    raise RuntimeError(f"live stage refused the model: {load_error}")
                applied = "live"
            else:
                # confirmed (or rolled back) by `check_pending` once the restarted service has loaded it
                atomic_write(self.models_dir / PENDING, json.dumps({"new": [card_path], "previous": previous}).encode())
                self.service.restart_requested = True  # the runtime exits non-zero; systemd restarts it
                self.service.request_stop()
                applied = "restart"
        except Exception as e:
            log.error("model update: rolling back to %s: %s", previous or "the built-in model", e)
            try:
                set_config(self.service, "redact.models", previous)
                stage = self.service.stages.get("redact")
                if getattr(stage, "reload_models", None) is not None:
                    stage.reload_models(previous)
            finally:
                shutil.rmtree(final, ignore_errors=True)
            return False, {"error": f"activation failed, rolled back: {e}", "stage": "activate",
                           "rolled_back_to": previous}
        log.warning("model update: %s %s installed (%s), recall %.2f", model_id["name"], model_id["version"],
                    applied, result["recall"])
        return True, {"model": model_id, "installed": card_path, "applied": applied, "selftest": result,
                      "previous": previous}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["ModelUpdater", "reference_frames", "selftest", "sha256_hex"]
