"""Everything an operator and systemd talk to, around a running `Service`, started in one call:

    ops = Operations.start(service)   # after service.start()
    service.wait()                    # housekeeping runs the health reporter and the watchdog
    ops.close()                       # before service.close(); says STOPPING=1 to systemd

- the command layer (`device.control.Controller`), shared by all of the below;
- the control socket `<state_dir>/control.sock` (mode 0600) for `crowdcap status|ctl|console`;
- the serial console on `console.port`, when one is configured;
- health telemetry + thermal rate limiting and the sd_notify watchdog, as housekeeping hooks;
- the signed downlink on the uplink's command topic.

A part that cannot start (a missing serial port, a socket path in use) is logged and skipped: the
device keeps capturing, and `status` shows what is missing in `ops`.
"""

from __future__ import annotations

import logging
from typing import Any

from device.console.serial_port import SerialConsole
from device.console.shell import LocalBackend
from device.control import Controller
from device.control_socket import ControlServer, socket_path
from device.downlink import Downlink
from device.health import HealthReporter
from device.sdnotify import Notifier, Watchdog

log = logging.getLogger("crowdcap.ops")


class Operations:
    def __init__(self, service: Any) -> None:
        self.service = service
        self.controller = Controller(service)
        self.server: Any = None
        self.console: Any = None
        self.downlink: Any = None
        self.reporter: Any = None
        self.watchdog: Any = None
        self.notifier: Any = None
        self.problems: dict[str, str] = {}

    @classmethod
    def start(cls, service: Any, *, control_socket: bool = True, console: bool = True,
              downlink: bool = True) -> Operations:
        ops = cls(service)
        ops._start_health()
        if control_socket:
            ops._start_control_socket()
        if console and service.config.console.port:
            ops._start_console()
        if downlink:
            ops._start_downlink()
        return ops

    def _start_health(self) -> None:
        self.reporter = HealthReporter(self.service)
        self.controller.health_sample = self.reporter.sample_for_status
        self.controller.ops_status = self.reporter.extra = self.status
        self.notifier = Notifier()
        reporter = self.reporter
        self.watchdog = Watchdog(self.service, self.notifier, health=lambda: reporter.last)
        self.service.housekeeping.extend([self.reporter, self.watchdog])

    def _start_control_socket(self) -> None:
        server = ControlServer(self.controller, socket_path(self.service.config))
        try:
            server.start()
        except OSError as e:
            self.problems["control_socket"] = str(e)
            log.error("control socket not available: %s", e)
            return
        self.server = server

    def _start_console(self) -> None:
        cc = self.service.config.console
        self.console = SerialConsole(cc.port, lambda: LocalBackend(self.controller), baudrate=cc.baudrate)
        self.console.start()  # retries the port in the background until it appears

    def _start_downlink(self) -> None:
        self.downlink = Downlink(self.service, self.controller)
        outcome = self.downlink.models.check_pending()  # a model activated by the last restart
        if outcome == "rolled back":
            self.problems["model_update"] = "the new model did not load; previous model restored, restarting"
        self.downlink.attach()

    def status(self) -> dict[str, Any]:
        """What `Service.status()` may include under "ops"."""
        out: dict[str, Any] = {"problems": dict(self.problems)}
        if self.server is not None:
            out["control_socket"] = str(self.server.path)
        if self.console is not None:
            out["console"] = {"port": self.console.url, "open": self.console.opened.is_set(),
                              "last_error": self.console.last_error}
        if self.downlink is not None:
            out["downlink"] = self.downlink.status()
        if self.watchdog is not None:
            out["watchdog"] = {"systemd": self.notifier.enabled, "ready": self.watchdog.ready_sent,
                               "pings": self.watchdog.pings, "stalled": self.watchdog.stalled}
        return out

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
        for part in (self.console, self.server, self.downlink):
            if part is None:
                continue
            try:
                part.stop() if hasattr(part, "stop") else part.close()
            except Exception as e:
                log.warning("closing %s: %s", type(part).__name__, e)
        for hook in (self.reporter, self.watchdog):
            if hook in self.service.housekeeping:
                self.service.housekeeping.remove(hook)
        if self.notifier is not None:
            self.notifier.close()
