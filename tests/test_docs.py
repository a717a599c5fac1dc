"""The docs stay true: the README's config reference is the one the code generates."""

import re
from pathlib import Path

from device.commands.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- config-reference:start -->\n(.*?)\n<!-- config-reference:end -->", readme, re.S)
    assert m, "README.md lost its config-reference markers"
    assert m.group(1).strip() == reference_markdown().strip(), \
        "README config reference is stale: run `crowdcap config reference` and paste it between the markers"


def test_readme_and_ci_run_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    cmd = re.search(r"\./install\.sh test && \.venv/bin/python -m pytest[^\n`]*", readme).group(0)
    assert cmd in ci
