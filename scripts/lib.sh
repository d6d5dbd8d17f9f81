# Shared shell helpers for scripts/*.sh (sourced, not run).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  [ $# -gt 0 ] || return 0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

stop_services() {
  command -v systemctl >/dev/null 2>&1 || return 0
  for unit in "$@"; do
    as_root systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
}
