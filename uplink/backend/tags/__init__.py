"""The crowd loop's backend half: crowd tags (format), consensus, scoring, policy proposals, a regression gate.

    format.py     read and validate a tags file (JSON Lines; docs/tags.md)
    consensus.py  group tags into regions, majority vote with a minimum agreement, tagger agreement
    sessions.py   the ingested session folders: frames, manifests, redacted areas
    score.py      leaks, over-redaction, recall and precision per class/form and per model+policy version
    page.py       tags.html: the numbers and example crops of already-sent, non-redacted pixels only
    replay.py     sent frames through the real redaction stage with a given policy
    propose.py    a new policy version from the consensus, with a reason for every change
    private.py    exemplar crops and world-anchored volumes (device-side `crowdcap privacy` commands)
    toml_out.py   writes the proposed policy as TOML
    check.py      the regression gate: recall must not drop, over-redaction must stay within the bound

Backend only: device-side code never imports this package.
"""
