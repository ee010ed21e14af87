#!/usr/bin/env bash
# Install fleetd from this bundle on a Raspberry Pi 5 (Raspberry Pi OS bookworm,
# 64-bit). Offline: everything comes from wheels/ next to this script.
#
#   sudo ./install.sh
#
# What it does (running it again upgrades or repairs; it never touches your config):
#   - checks SHA256SUMS, the machine (aarch64) and python3 (3.11, with venv);
#   - (re)creates /opt/fleetd/venv and installs fleetd with `pip --no-index`;
#   - links /usr/local/bin/fleetd to it;
#   - creates the system user `fleetd`, /etc/fleetd (root:fleetd 0750) and
#     /var/lib/fleetd (fleetd:fleetd 0700, as the unit's StateDirectoryMode);
#   - installs systemd/fleetd.service, if this bundle has one, and reloads systemd
#     (restarting fleetd if it was running).
set -euo pipefail
umask 022
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

PREFIX=/opt/fleetd
ETC=/etc/fleetd
STATE=/var/lib/fleetd
UNIT=/etc/systemd/system/fleetd.service
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "install.sh: FAILED: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

[ "$(id -u)" = 0 ] || die "run as root: sudo $0"
arch=$(uname -m)
[ "$arch" = aarch64 ] || die "this bundle is for aarch64 (a 64-bit OS on the Raspberry Pi 5); this machine is $arch"
command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$pyver" = 3.11 ] || die "the wheels are built for CPython 3.11; python3 here is $pyver"
python3 -c 'import ensurepip' 2>/dev/null || die "python3-venv is missing: apt-get install python3-venv"

say "checking SHA256SUMS"
(cd "$here" && sha256sum --quiet --strict -c SHA256SUMS) \
  || die "files in $here do not match SHA256SUMS: the bundle is damaged or changed; copy it again"

# A fresh venv every time: what is installed is exactly this bundle, nothing left
# over from an older one.
say "creating $PREFIX/venv"
mkdir -p "$PREFIX"
python3 -m venv --clear "$PREFIX/venv" || die "python3 -m venv $PREFIX/venv"
say "installing fleetd and its dependencies from $here/wheels (offline)"
"$PREFIX/venv/bin/pip" install --quiet --no-index --find-links "$here/wheels" fleetd \
  || die "pip install from $here/wheels (pip output above)"
mkdir -p /usr/local/bin
ln -sfn "$PREFIX/venv/bin/fleetd" /usr/local/bin/fleetd
say "installed $("$PREFIX/venv/bin/fleetd" --version) -> /usr/local/bin/fleetd"

if ! getent passwd fleetd >/dev/null; then
  say "creating the system user fleetd"
  useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin fleetd \
    || die "useradd fleetd"
fi
install -d -m 0750 -o root -g fleetd "$ETC"
install -d -m 0700 -o fleetd -g fleetd "$STATE"

if [ -f "$here/systemd/fleetd.service" ]; then
  install -m 0644 "$here/systemd/fleetd.service" "$UNIT"
  say "installed $UNIT"
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if systemctl is-active --quiet fleetd; then
      say "restarting the running fleetd"
      systemctl restart fleetd
    fi
  fi
else
  say "note: this bundle has no systemd/fleetd.service (it was built before the unit existed);" \
      "run '$PREFIX/venv/bin/fleetd run --config $ETC/fleetd.toml' yourself, or install a newer bundle"
fi

cat <<EOF
install.sh: done. Next:
  1. put your fleet-wide file at $ETC/fleetd.toml and one TOML file per cluster next to it
     (plus kubeconfigs and keys; keep them readable by group fleetd only, e.g. chmod 640),
     and set state_dir = "$STATE" in [fleet];
  2. sudo -u fleetd fleetd check --config $ETC/fleetd.toml
  3. sudo systemctl enable --now fleetd
EOF
