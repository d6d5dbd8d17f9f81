"""Kamailio (Debian `kamailio`) for tests: a mediation server (registrar + usrloc over TCP, optional digest),
or any other role given its request_route (a record-routing proxy: tests/sip/kamailio_proxy.py), on
127.0.0.1 or ::1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port

MODULES = ("tm", "sl", "pv", "maxfwd", "textops", "siputils", "xlog", "sanity", "usrloc", "registrar",
           "ctl", "kex", "corex", "auth")
MODULE_PATH = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

CONFIG = """#!KAMAILIO
{defines}
debug=2
log_stderror=yes
children=2
tcp_children=2
disable_tcp=no
auto_aliases=no
listen=tcp:{listen}:{port}
mpath="{mpath}"
{loads}
modparam("ctl", "binrpc", "unix:{ctl}")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("auth", "algorithm", "{algorithm}")
{extra}
request_route {{
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
#!ifdef WITH_AUTH
        if (!pv_www_authenticate("$td", "{password}", "0") || $au != "{username}") {{
            www_challenge("$td", "0");
            exit;
        }}
#!endif
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    sl_send_reply("404", "Not Found");
}}
"""
REGISTRAR_ROUTE = CONFIG[CONFIG.index("request_route {{"):]


class Kamailio:
    def __init__(self, directory: Path, *, username: str = "", password: str = "",
                 algorithm: str = "MD5", port: int | None = None, host: str = "127.0.0.1",
                 route: str | None = None, modules: tuple[str, ...] = (), extra: str = "", head: str = "") -> None:
        """`route` replaces the registrar's request_route (its text is formatted like CONFIG: {{ }});
        `head` goes before the modules are loaded (enable_tls), `extra` after their parameters."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.ctl = directory / "ctl.sock"
        self.log_path = directory / "kamailio.log"
        self.config = directory / "kamailio.cfg"
        template = CONFIG if route is None else CONFIG.replace(REGISTRAR_ROUTE, route)
        self.config.write_text(template.format(
            defines=("#!define WITH_AUTH\n" if username else "") + head, port=self.port, mpath=MODULE_PATH,
            loads="\n".join(f'loadmodule "{m}.so"' for m in (*MODULES, *modules)), ctl=self.ctl,
            algorithm=algorithm, password=password, username=username, extra=extra,
            listen=f"[{host}]" if ":" in host else host))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Kamailio:
        binary = shutil.which("kamailio")
        assert binary, "kamailio missing (apt-get install kamailio)"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "-f", str(self.config), "-DD", "-E", "-w", str(self.directory),
                                      "-Y", str(self.directory), "-m", "32", "-M", "8"],
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                if self.ctl.exists():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"kamailio not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def location(self) -> str:
        """`kamcmd ul.dump`: the location table as text."""
        result = subprocess.run(["kamcmd", "-s", f"unix:{self.ctl}", "ul.dump"], capture_output=True,
                                text=True, timeout=10)
        return result.stdout

    def contacts(self, aor: str = "avedge") -> list[str]:
        text, found, in_aor = self.location(), [], False
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("AoR:"):
                in_aor = stripped.split(":", 1)[1].strip() == aor
            elif in_aor and stripped.startswith("Address:"):
                found.append(stripped.split(":", 1)[1].strip())
        return found
