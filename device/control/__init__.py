"""The command layer: ONE implementation of every operator command, used by the serial console, the
control socket (`crowdcap ctl`/`status`) and the signed downlink.

    controller = Controller(service)
    reply = controller.execute(["config", "set", "capture.fps", "15"], session)   # -> Reply

Tasmota style: a command without an argument is a query (`config KEY`, `spool`, `privacy`). `help`,
`status`, `version`, `login` and `logout` are open; everything else needs a logged-in session (the
console logs in with the PIN; the control socket and the downlink are authorised by file mode and by
signature). Every reply is a dict (`--json` prints it on one line) plus a short text for humans.

    table.py        the command table (COMMANDS), who may run what (requires_login), Session, Reply
    controller.py   Controller: login, dispatch, one lock; help/status/version/login/start/stop/restart
    config_cmd.py   config get/set (the change itself is `device.configset.set_config`)
    privacy_cmd.py  privacy (show, reload, the fleet's `update`, the wearer's verbs) and policy
    ops_cmd.py      spool, net, log
    selftest.py     selftest: camera, model, broker, disk

A command other than the controller's own is a function `(service, args, session) -> (data, text)`
that raises `CommandError` with a message the operator can act on; it never sees the controller.
"""

from device.configset import set_config
from device.control.controller import Controller
from device.control.table import (
           COMMANDS,
           OPEN_COMMANDS,
           OPEN_READS,
           CommandError,
           Reply,
           Session,
           requires_login,
)

__all__ = ["COMMANDS", "OPEN_COMMANDS", "OPEN_READS", "CommandError", "Controller", "Reply", "Session",
           "requires_login", "set_config"]
