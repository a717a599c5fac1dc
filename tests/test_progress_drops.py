"""The demo says it is not keeping up as soon as a frame is dropped before redaction, once."""

import io

from device.progress import Progress


def test_first_drop_is_said_at_once_and_only_once():
    out = io.StringIO()
    p = Progress("demo", 30.0, stream=out, plain_every=1e9)  # no periodic line after the first
    p.update(1.0, captured=30, dropped=0, fps=30.0)
    assert "NOT KEEPING UP" not in out.getvalue()
    p.update(2.0, captured=60, dropped=4, fps=30.0)
    p.update(3.0, captured=90, dropped=9, fps=30.0)
    p.close(3.0)
    lines = out.getvalue().splitlines()
    assert sum("NOT KEEPING UP at 30 fps" in ln for ln in lines) == 1
    assert lines[-1] == "demo: 3/30 s: captured 90, dropped 9, 30.0 fps"


def test_on_a_terminal_too():
    from rich.console import Console

    buf = io.StringIO()
    p = Progress("demo", 20.0, console=Console(file=buf, force_terminal=True, width=80, color_system=None))
    p.update(1.0, captured=30, dropped=1)
    p.close()
    assert "NOT KEEPING UP" in buf.getvalue().replace("\n", " ")
