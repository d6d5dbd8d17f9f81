"""Config loading and validation: defaults, every error class, and `umedge check-config`."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from edge.node.config import ConfigError, embedded_default_text, load, with_roles
from edge.node.schema import SECTIONS
from tests.conftest import ROOT, umedge, write_config
from um.config import ROLES


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(p) for p in caught.value.problems]


def test_embedded_default_is_the_root_config_toml() -> None:
    assert embedded_default_text() == (ROOT / "config.toml").read_text()


def test_default_config_has_every_key_and_only_known_keys() -> None:
    doc = tomllib.loads((ROOT / "config.toml").read_text())
    assert list(doc) == list(SECTIONS)
    for section, cls in SECTIONS.items():
        assert sorted(doc[section]) == sorted(f.name for f in fields(cls)), section


def test_every_default_key_is_commented() -> None:
    lines = (ROOT / "config.toml").read_text().splitlines()
    for index, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            before = lines[index - 1]
            assert before.startswith("#") or "=" in before, f"key without a comment: {line}"


def test_defaults_load_with_the_seed_ports() -> None:
    config = load()
    assert (config.callrouter.sip_tcp_port, config.callrouter.sip_tls_port) == (5060, 5061)
    assert (config.mailbox.sip_tcp_port, config.mailbox.sip_tls_port) == (5062, 5063)
    assert config.worker.sip_ports == (5065, 5067)
    assert config.worker.sip_dual_tls_ports == (5066, 5068)
    assert (config.worker.rtp_port_min, config.worker.rtp_port_max) == (1024, 65535)
    assert config.callrouter.startup_mode == config.worker.startup_mode == "dual"
    assert (config.edge.turn_udp_port, config.edge.turn_tcp_port, config.edge.turn_tls_port) == (3478, 3478, 5349)
    assert config.auth.mras_tls_port == 5064
    assert config.node.roles == ROLES
    assert Path(config.node.state_dir).is_absolute()


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    config = load(files.path)
    assert config.node.state_dir == str(tmp_path / "state")
    assert config.node.certs_dir == str(tmp_path / "certs")


def test_partial_file_takes_the_rest_from_the_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[callrouter]\nsip_tcp_port = 6060\nstartup_mode = "tcp"\n')
    config = load(path)
    assert config.callrouter.sip_tcp_port == 6060
    assert config.mailbox.sip_tcp_port == 5062


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    [line] = problems_for(tmp_path, "[worker]\nrtp_port_mni = 2000\n")
    assert "bad.toml: [worker].rtp_port_mni: unknown key" in line
    assert "did you mean rtp_port_min?" in line


def test_unknown_section(tmp_path: Path) -> None:
    [line] = problems_for(tmp_path, "[callroutr]\nsip_tcp_port = 5060\n")
    assert "[callroutr]: unknown section" in line and "did you mean callrouter?" in line


@pytest.mark.parametrize("text, where, allowed", [
    ("[worker]\nrtp_port_min = 70000\n", "[worker].rtp_port_min: 70000", "1024-65535"),
    ("[worker]\nrtp_port_max = 80\n", "[worker].rtp_port_max: 80", "1024-65535"),
    ('[callrouter]\nstartup_mode = "secure"\n', '[callrouter].startup_mode: "secure"', '"tcp" or "tls" or "dual"'),
    ('[worker]\nstartup_mode = "both"\n', '[worker].startup_mode: "both"', '"dual"'),
    ('[mailbox]\nsip_tcp_port = "5062"\n', '[mailbox].sip_tcp_port: "5062"', "integer port"),
    ("[mailbox]\nsip_tls_port = true\n", "[mailbox].sip_tls_port: true", "integer port"),
    ("[web]\nhttp_port = 0\n", "[web].http_port: 0", "1-65535"),
    ('[edge]\nallowed_peer_networks = ["10.0.0.1/8"]\n', "[edge].allowed_peer_networks", "CIDRs"),
    ('[edge]\nlisten_address = "localhost"\n', '[edge].listen_address: "localhost"', "IPv4 or IPv6"),
    ('[node]\nroles = ["edge", "sbc"]\n', "[node].roles", '"callrouter"'),
    ('[log]\nformat = "xml"\n', '[log].format: "xml"', '"json"'),
    ('[edge]\nnative_forwarder = "yes"\n', '[edge].native_forwarder: "yes"', '"auto" or "on" or "off"'),
    ('[edge]\nkernel_offload = 1\n', '[edge].kernel_offload: 1', '"auto" or "on" or "off"'),
    ("[worker]\nsip_ports = [5065]\n", "[worker].sip_ports: [5065]", "two distinct ports"),
])
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path: Path, text: str, where: str,
                                                       allowed: str) -> None:
    [line] = problems_for(tmp_path, text)
    assert line.startswith(str(tmp_path / "bad.toml") + ": ")
    assert where in line and "allowed: " in line and allowed in line


def test_short_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    [line] = problems_for(tmp_path, '[edge]\nauth_secrets = ["hunter2"]\n')
    assert "[edge].auth_secrets" in line and "at least 16" in line
    assert "hunter2" not in line


def test_port_collision_between_roles(tmp_path: Path) -> None:
    [line] = problems_for(tmp_path, "[web]\nhttp_port = 5061\n")
    assert "[web].http_port: 5061 collides with [callrouter].sip_tls_port" in line


def test_udp_and_tcp_on_the_same_number_do_not_collide() -> None:
    config = load()
    assert config.edge.turn_udp_port == config.edge.turn_tcp_port  # 3478 both, no error


def test_collision_only_among_enabled_roles_and_modes(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[node]\nroles = ["edge", "web"]\n[callrouter]\nsip_tcp_port = 8080\n')
    load(path)  # the call router does not run here
    path.write_text('[callrouter]\nstartup_mode = "tls"\nsip_tcp_port = 5062\n')
    load(path)  # tcp port unused in tls mode
    with pytest.raises(ConfigError, match=r"\[mailbox\].sip_tcp_port: 5062 collides"):
        load(_write(tmp_path, '[callrouter]\nsip_tcp_port = 5062\n'))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w.toml"
    path.write_text(text)
    return path


def test_different_specific_addresses_do_not_collide(tmp_path: Path) -> None:
    path = _write(tmp_path, '[node]\nlisten_address = "127.0.0.2"\n[web]\nhttp_port = 3478\n'
                  '[edge]\nturn_tcp_port = 3478\n')
    load(path)
    path = _write(tmp_path, '[node]\nlisten_address = "0.0.0.0"\n[web]\nhttp_port = 3478\n')
    with pytest.raises(ConfigError, match="collides"):
        load(path)


def test_range_with_min_above_max(tmp_path: Path) -> None:
    lines = problems_for(tmp_path, "[worker]\nrtp_port_min = 6000\nrtp_port_max = 5000\n"
                         "[edge]\nrelay_port_min = 59000\nrelay_port_max = 51000\n")
    assert any("[worker].rtp_port_min: 6000 is greater than [worker].rtp_port_max 5000" in line for line in lines)
    assert any("[edge].relay_port_min: 59000 is greater than" in line for line in lines)


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    [line] = problems_for(tmp_path, "[node\nname = 1\n")
    assert "not valid TOML" in line
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_serve_roles_recheck_collisions(tmp_path: Path) -> None:
    path = _write(tmp_path, '[node]\nroles = ["edge"]\n[web]\nhttp_port = 5064\n')
    config = load(path)
    with pytest.raises(ConfigError, match=r"\[auth\].mras_tls_port: 5064 collides|\[web\].http_port: 5064"):
        with_roles(config, ("edge", "web"))


def test_check_config_cli_reports_all_three_problems(tmp_path: Path) -> None:
    path = _write(tmp_path, "[worker]\nrtp_port_min = 70000\nstartup_mdoe = \"tcp\"\n"
                  "[mailbox]\nsip_tcp_port = 5060\n")
    result = umedge("check-config", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert any("[worker].startup_mdoe: unknown key" in line for line in lines)
    assert any("[worker].rtp_port_min: 70000 is not allowed" in line for line in lines)
    assert any("[mailbox].sip_tcp_port: 5060 collides with [callrouter].sip_tcp_port" in line for line in lines)
    assert all(line.startswith(str(path)) for line in lines)


def test_check_config_cli_ok(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    result = umedge("check-config", "--config", str(files.path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and ": ok: node node1" in result.stdout
    assert umedge("check-config").returncode == 0


def test_serve_validates_first(tmp_path: Path) -> None:
    path = _write(tmp_path, "[worker]\nrtp_port_min = 70000\n")
    result = umedge("serve", "--config", str(path))
    assert result.returncode == 2 and "[worker].rtp_port_min" in result.stderr


def test_bad_roles_argument() -> None:
    result = umedge("serve", "--roles", "edge,sbc")
    assert result.returncode == 2 and "sbc not allowed" in result.stderr
