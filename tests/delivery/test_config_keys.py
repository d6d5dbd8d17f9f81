"""[delivery], [mwi] and the mailboxes' email key: a bad value is one line naming the key and what is allowed
(exit 2), never a traceback; `voicemail outbox` works on the files without a running node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import umedge


@pytest.mark.parametrize(("text", "expected"), [
    ('[delivery]\nmode = "smtps"\n', '[delivery].mode'),
    ('[delivery]\nmode = "smtp"\nusername = "u"\npassword_file = "/nonexistent/pw"\n',
     "[delivery].password_file: cannot read /nonexistent/pw"),
    ('[delivery]\nmode = "lmtp"\nusername = "u"\npassword_file = "PW"\nstarttls = "off"\n',
     "[delivery].username: AUTH is only sent over TLS"),
    ('[delivery]\nmode = "lmtp"\nimap_host = "127.0.0.1"\n', "[delivery].imap_master_user"),
    ('[delivery]\nfrom_address = "not an address"\n', "[delivery].from_address"),
    ('[callrouter]\nmailboxes = [{ extension = "1001", email = "nobody" }]\n', "email 'nobody'"),
    ('[mwi]\nnotify_targets = [{ address = "pbx" }]\n', "[mwi].notify_targets"),
    ('[callrouter]\ndial_plans = [{ name = "d", language = "fr" }]\n', "language"),
])
def test_bad_keys_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "PW").write_text("secret\n")
    path = tmp_path / "config.toml"
    path.write_text(text.replace('"PW"', f'"{tmp_path / "PW"}"'))
    result = umedge("check-config", "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert "secret" not in result.stderr


def test_outbox_cli_without_a_node(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[node]\nstate_dir = "{tmp_path / "state"}"\n')
    listed = umedge("voicemail", "outbox", "--config", str(path))
    assert listed.returncode == 0 and "queued: 0" in listed.stdout and "mode is off" in listed.stdout
    bad = umedge("voicemail", "outbox", "retry", "--config", str(path))
    assert bad.returncode == 2 and "needs one message ID or --all" in bad.stderr
    missing = umedge("voicemail", "outbox", "retry", "20260101T000000Z-0000abcd", "--config", str(path))
    assert missing.returncode == 1 and "no queued or dead message" in missing.stderr
    everything = umedge("voicemail", "outbox", "retry", "--all", "--json", "--config", str(path))
    assert everything.returncode == 0 and '"retried": []' in everything.stdout
