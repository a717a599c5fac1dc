"""Stereo calibration files: OpenCV FileStorage (YAML, JSON or XML) with K1, D1, K2, D2, R, T, size.

`units` (m, cm, mm) says what T is in; it is converted to metres on load. Every error names the file
and the key, and implausible values (a 80 m baseline because T was in mm) are refused early.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from capture.config import ConfigError

_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}


class CalibrationError(ConfigError):
    """The stereo calibration file is missing, unreadable or implausible; the message names file and key."""


@dataclass(frozen=True)
class StereoCalibration:
    K1: np.ndarray
    D1: np.ndarray
    K2: np.ndarray
    D2: np.ndarray
    R: np.ndarray
    T: np.ndarray  # metres
    size: tuple[int, int]  # (width, height)

    def __post_init__(self) -> None:
        for name, shape in (("K1", (3, 3)), ("K2", (3, 3)), ("R", (3, 3)), ("T", (3,))):
            a = getattr(self, name)
            if a.shape != shape or not np.all(np.isfinite(a)):
                raise CalibrationError(f"{name}: expected a finite {'×'.join(map(str, shape))} matrix, got shape {a.shape}")
        for name in ("D1", "D2"):
            a = getattr(self, name)
            if a.size not in (0, 4, 5, 8, 12, 14) or not np.all(np.isfinite(a)):
                raise CalibrationError(f"{name}: expected 0, 4, 5, 8, 12 or 14 finite coefficients, got {a.size}")
        for name in ("K1", "K2"):
            k = getattr(self, name)
            if k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1.0:
                raise CalibrationError(f"{name}: not a camera matrix (fx, fy > 0 and K[2,2] = 1 expected)")
        if abs(np.linalg.det(self.R) - 1.0) > 1e-3:
            raise CalibrationError(f"R: not a rotation matrix (det = {np.linalg.det(self.R):.4f})")
        baseline = float(np.linalg.norm(self.T))
        if not 0.005 <= baseline <= 2.0:
            raise CalibrationError(f"T: baseline {baseline:.4g} m is implausible (check 'units': m, cm or mm)")
        w, h = self.size
        if w <= 0 or h <= 0:
            raise CalibrationError(f"size: expected positive [width, height], got {list(self.size)}")

    @property
    def baseline(self) -> float:
        return float(np.linalg.norm(self.T))

    @classmethod
    def load(cls, path: str | Path) -> tuple[StereoCalibration, cv2.FileStorage]:
        """The calibration in `path`, and the open FileStorage (for the input keys). Errors name the file."""
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"{p}: stereo config not found")
        try:
            fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
        except (cv2.error, SystemError) as e:  # the Python binding wraps parse errors in SystemError
            raise CalibrationError(f"{p}: not an OpenCV YAML/JSON/XML file: {getattr(e, 'err', None) or e}") from None
        if not fs.isOpened():
            raise CalibrationError(f"{p}: not an OpenCV YAML/JSON/XML file")

        def mat(key: str, required: bool = True) -> np.ndarray:
            node = fs.getNode(key)
            if node.empty():
                if required:
                    raise CalibrationError(f"{p}: {key}: missing (expected K1, D1, K2, D2, R, T, size)")
                return np.zeros(0)
            try:
                m = node.mat() if node.isMap() else _seq(node)
            except cv2.error as e:
                raise CalibrationError(f"{p}: {key}: malformed matrix ({e.err})") from None
            if m is None:
                raise CalibrationError(f"{p}: {key}: expected a matrix or a list of numbers")
            return np.asarray(m, np.float64)

        units = fs.getNode("units").string() or "m"
        if units not in _UNITS:
            raise CalibrationError(f"{p}: units: expected one of m, cm, mm, got {units!r}")
        size = mat("size").ravel()
        if size.size != 2 or not np.all(size == np.round(size)):
            raise CalibrationError(f"{p}: size: expected [width, height] integers, got {size.tolist()}")
        def mat33(key: str) -> np.ndarray:
            m = mat(key)
            return m.reshape(3, 3) if m.size == 9 else m  # JSON users may write a flat list of 9

        try:
            calib = cls(mat33("K1"), mat("D1", False).ravel(), mat33("K2"), mat("D2", False).ravel(), mat33("R"),
                        mat("T").ravel() * _UNITS[units], (int(size[0]), int(size[1])))
        except CalibrationError as e:
            raise CalibrationError(f"{p}: {e}") from None
        return calib, fs

    def save(self, path: str | Path, **inputs: str) -> None:
        """Write the calibration (T in metres) plus input keys (left=, right= or sbs=)."""
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
        for key in ("K1", "D1", "K2", "D2", "R"):
            fs.write(key, np.asarray(getattr(self, key), np.float64))
        fs.write("T", self.T.reshape(3, 1))
        fs.write("size", np.array([[self.size[0], self.size[1]]], np.float64))
        fs.write("units", "m")
        for key, value in inputs.items():
            fs.write(key, str(value))
        fs.release()


def _seq(node: cv2.FileNode) -> np.ndarray | None:
    """A plain list of numbers (JSON users write these) as an array; nested lists become rows."""
    if not node.isSeq():
        return None
    rows = []
    for i in range(node.size()):
        item = node.at(i)
        if item.isSeq():
            rows.append([item.at(j).real() for j in range(item.size())])
        elif item.isReal() or item.isInt():
            rows.append(item.real())
        else:
            return None
    try:
        return np.array(rows, np.float64)
    except ValueError:  # ragged rows
        return None
