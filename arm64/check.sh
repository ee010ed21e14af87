#!/usr/bin/env bash
# The CI check of the Raspberry Pi 5 artefact, on an x86_64 Debian machine.
#
#   arm64/check.sh                    build the artefact (twice: must be byte-identical), then check it
#   arm64/check.sh --artefact FILE    check an existing fleetd-*-rpi5-aarch64.tar.gz instead
#   arm64/check.sh --install          also run the bundle's install.sh in an arm64 chroot
#                                     (needs binfmt_misc; adds about a minute)
#
# Under qemu-aarch64 user emulation, with a Debian bookworm arm64 root (the same
# Debian release, glibc and CPython 3.11 as Raspberry Pi OS bookworm) and the
# artefact's wheels unpacked on sys.path, it runs:
#   1. arm64/smoke.py: imports fleetd and every dependency and drives each
#      native library once (libgit2, age, OpenSSL, libyaml, aiohttp);
#   2. fleetd --version;
#   3. fleetd check --config clusters/fleetd.toml against kubeconfigs whose API
#      servers are down (exit 1 expected, with the inventory ok and both clusters
#      in the table) and a local copy of examples/fleet-repo;
#   4. a subset of the unit tests (pytest from arm64/check-requirements.txt);
#   5. with --install: install.sh itself, as root in a chroot of a copy of the root
#      (venv, offline pip install, user, directories, unit), then the installed fleetd.
#
# The arm64 root, the test wheels and the unpacked wheels are cached in ${FLEETD_ARM64_CACHE:-~/.cache/fleetd-arm64},
# keyed by a hash of what they are made of. Needs root the first time (apt-get
# install qemu-user-static debootstrap; debootstrap). Exit 0 only if every step passed.
set -euo pipefail
umask 022
export LC_ALL=C PIP_DISABLE_PIP_VERSION_CHECK=1

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${FLEETD_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fleetd-arm64}
artefact=
install_test=0

SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
ROOT_RECIPE=1   # bump when the way the root is made changes, to rebuild cached roots
UNIT_TESTS=(tests/unit/test_inventory.py tests/unit/test_durations.py tests/unit/test_semver.py
            tests/unit/test_pointers.py)
PLATFORM_ARGS=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311
  --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64)

die() { echo "check.sh: FAILED: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --artefact) [ $# -ge 2 ] || die "--artefact needs a file"; artefact=$(realpath "$2"); shift ;;
    --install) install_test=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (use --artefact FILE, --install or --help)" ;;
  esac
  shift
done

t0=$(date +%s.%N)
timings=()
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step_start=
begin() { step_name=$1; step_start=$(now); echo "check.sh: --- $1"; }
end() { local s; s=$(since "$step_start"); timings+=("$(printf '%-42s %6ss' "$step_name" "$s")"); echo "check.sh: --- $step_name: ok (${s}s)"; }

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PY=$repo/.venv/bin/python; else PY=python3; fi
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
  || die "host Python $PY is not 3.11+ (set PYTHON, or run 'make install')"

# --- tools ---------------------------------------------------------------------------
begin "host tools"
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})"
  echo "check.sh: installing ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >"${TMPDIR:-/tmp}/fleetd-arm64-apt.log" 2>&1 \
    || die "apt-get install ${need[*]} (log: ${TMPDIR:-/tmp}/fleetd-arm64-apt.log)"
fi
export PATH=$PATH:/usr/sbin:/sbin
for tool in qemu-aarch64-static debootstrap dpkg-deb git tar sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
end

work=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-arm64-check.XXXXXX")
opt=
trap 'rm -rf "$work" ${opt:+"$opt"}' EXIT

# --- the artefact, built twice --------------------------------------------------------
if [ -z "$artefact" ]; then
  begin "build the artefact twice (--verify)"
  "$here/build.sh" --verify 2>&1 | sed 's/^/  /' || die "arm64/build.sh --verify (output above)"
  artefact=$(ls -t "$here"/dist/fleetd-*-rpi5-aarch64.tar.gz | head -1)
  end
fi
[ -f "$artefact" ] || die "no artefact at $artefact"
name=$(basename "$artefact" .tar.gz)
version=$(echo "$name" | cut -d- -f2)

# --- the arm64 root -------------------------------------------------------------------
begin "Debian $SUITE arm64 root"
# The mirror this machine's apt uses for $SUITE (or, on another release, its main Debian archive).
mirror=${FLEETD_ARM64_MIRROR:-$("$PY" - "$SUITE" <<'EOF'
import glob, re, sys
suite, entries = sys.argv[1], []
def one_line(path):
    for line in open(path, errors="replace"):
        words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
        if len(words) >= 4 and words[0] == "deb":
            entries.append((words[1], [words[2]], words[3:]))
def deb822(path):
    for stanza in re.split(r"\n\s*\n", open(path, errors="replace").read()):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ", "\t")):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0].lower() != "no":
            for uri in fields.get("uris", []):
                entries.append((uri, fields.get("suites", []), fields.get("components", [])))
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try: one_line(path)
    except OSError: pass
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    deb822(path)
exact = [u for u, suites, comps in entries if suite in suites and "main" in comps]
release = [u for u, suites, comps in entries
           if "main" in comps and any(re.fullmatch(r"[a-z]+", s) and s != "nodistro" for s in suites)]
print((exact or release or [""])[0].rstrip("/"))
EOF
)}
[ -n "$mirror" ] || die "no Debian mirror for $SUITE in /etc/apt/sources.list(.d) (set FLEETD_ARM64_MIRROR=URL)"
key=$(printf '%s\n' "recipe=$ROOT_RECIPE" "suite=$SUITE" arch=arm64 variant=minbase "packages=$PACKAGES" "mirror=$mirror" \
      | sha256sum | cut -c1-16)
root=$cache/root-$key
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # one run at a time makes the cached root and unpacked wheels
if [ -f "$root/.fleetd-root-ready" ]; then
  echo "check.sh: reusing $root (cache key $key: $PACKAGES from $mirror)"
else
  [ "$(id -u)" = 0 ] || die "making the arm64 root needs root (debootstrap); run once with sudo"
  echo "check.sh: making $root from $mirror (cache key $key)"
  rm -rf "$root" "$root.partial"
  for stale in "$cache"/root-*; do [ -e "$stale" ] && echo "check.sh: removing stale root $stale" && rm -rf "$stale"; done
  # Only debootstrap's first stage: its second stage runs dpkg under emulation and
  # takes ~5 minutes. Unpacking every downloaded .deb gives the same files, minus
  # what maintainer scripts would do, which none of the checks needs.
  debootstrap --arch=arm64 --variant=minbase --foreign --include="$PACKAGES" "$SUITE" "$root.partial" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || die "debootstrap --foreign $SUITE arm64 from $mirror (log: $cache/debootstrap.log)"
  for deb in "$root.partial"/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$root.partial" --keep-directory-symlink \
      || die "unpacking $(basename "$deb") into the arm64 root"
  done
  rm -f "$root.partial"/var/cache/apt/archives/*.deb
  # The user database base-passwd's and passwd's maintainer scripts would make
  # (install.sh adds a system user in --install).
  (cd "$root.partial/etc" && cp ../usr/share/base-passwd/passwd.master passwd \
    && cp ../usr/share/base-passwd/group.master group \
    && awk -F: '{ print $1 ":*:19000:0:99999:7:::" }' passwd > shadow \
    && awk -F: '{ print $1 ":*::" }' group > gshadow && chmod 0640 shadow gshadow) \
    || die "writing the arm64 root's /etc/passwd, group, shadow and gshadow"
  mv "$root.partial" "$root"
  [ -x "$root/usr/bin/python3.11" ] || die "the arm64 root has no usr/bin/python3.11 (is $SUITE's python3 still 3.11?)"
fi
end

# Runs the root's CPython 3.11 under emulation: -L makes the aarch64 loader and
# libraries come from the root; -P keeps the current directory off sys.path so
# fleetd is imported from the artefact, never from the repo's source.
emu() {
  env -i PATH=/usr/bin:/bin HOME="$home" LANG=C.UTF-8 TZ=UTC PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 \
    PYTHONPATH="$pythonpath" qemu-aarch64-static -L "$root" "$root/usr/bin/python3.11" -P "$@"
}
pythonpath=
home=$work/home

if [ ! -f "$root/.fleetd-root-ready" ]; then
  begin "precompile the root's stdlib"
  # Debian compiles the stdlib in postinst scripts, which the unpacked root did
  # not run; compiling once here (under emulation, so the bytecode is the
  # target's own) keeps every later start-up from compiling it again.
  env -i PATH=/usr/bin:/bin qemu-aarch64-static -L "$root" "$root/usr/bin/python3.11" \
    -m compileall -q -j 0 -x '/(test|idlelib|lib2to3|tkinter)/' "$root/usr/lib/python3.11" >/dev/null \
    || die "compiling the arm64 root's standard library under emulation"
  touch "$root/.fleetd-root-ready"
  end
fi

# --- the artefact's wheels on sys.path --------------------------------------------------
begin "unpack $name"
# This run's own directory inside the root (removed on exit), so runs never share one.
mkdir -p "$root/opt"
opt=$(mktemp -d "$root/opt/fleetd-check.XXXXXX")
mkdir -p "$opt/bundle" "$opt/site" "$opt/testsite" "$home"
tar -xzf "$artefact" -C "$opt/bundle" || die "extracting $artefact"
bundle=$opt/bundle/$name
[ -d "$bundle" ] || die "$artefact has no top directory $name/"
(cd "$bundle" && sha256sum --quiet --strict -c SHA256SUMS) || die "SHA256SUMS inside $artefact does not match its files"
for f in install.sh README.md constraints.txt; do [ -f "$bundle/$f" ] || die "$artefact lacks $f"; done
[ -x "$bundle/install.sh" ] || die "install.sh in $artefact is not executable"
bash -n "$bundle/install.sh" || die "install.sh in $artefact has a syntax error"
if [ -f "$bundle/systemd/fleetd.service" ]; then
  echo "check.sh: bundle has systemd/fleetd.service"
else
  echo "check.sh: note: bundle has no systemd/fleetd.service"
fi
end

begin "test wheels (pytest, cached)"
req=$here/check-requirements.txt
tkey=$(cat "$req" <(printf '%s\n' "${PLATFORM_ARGS[@]}") | sha256sum | cut -c1-16)
twheels=$cache/test-wheels-$tkey
if [ ! -f "$twheels/.ready" ]; then
  rm -rf "$twheels"
  "$PY" -m pip download --quiet --no-deps "${PLATFORM_ARGS[@]}" -r "$req" -d "$twheels" \
    || die "downloading the test wheels in arm64/check-requirements.txt (pip output above)"
  touch "$twheels/.ready"
fi
end

# A wheel is a zip laid out for site-packages: unzipping it is installing it,
# minus scripts. Each wheel is unpacked and compiled once, into a cache entry
# named by its sha256, and hard-linked into this run's site: the site is then
# as pip leaves it on the Pi (compiled), and only a new wheel costs time.
# Host and target share CPython 3.11's bytecode when the host Python is 3.11;
# otherwise compile under emulation (slower).
begin "install the wheels on sys.path (cached)"
unpacked=$cache/unpacked
mkdir -p "$unpacked"
if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  compile() { "$PY" -m compileall -q -j 0 "$1" >/dev/null; }
else
  compile() { pythonpath='' emu -m compileall -q -j 0 "$1" >/dev/null; }
fi
link_wheels() {  # link_wheels DIR SITE
  local whl entry fresh=0
  for whl in "$1"/*.whl; do
    case $(basename "$whl" .whl) in
      *-any|*aarch64*) ;;
      *) die "$(basename "$whl") is not an aarch64 or pure-Python wheel" ;;
    esac
    entry=$unpacked/$(basename "$whl" .whl)-$(sha256sum <"$whl" | cut -c1-16)
    if [ ! -f "$entry.ready" ]; then
      rm -rf "$entry"
      "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$entry" \
        || die "unzipping $(basename "$whl")"
      compile "$entry" || die "compiling $(basename "$whl")"
      touch "$entry.ready"
      fresh=$((fresh + 1))
    fi
    touch "$entry.ready"
    cp -al "$entry/." "$2/" || die "linking $(basename "$whl") into $2"
  done
  echo "check.sh: $(ls "$1"/*.whl | wc -l) wheels from $(basename "$1") on sys.path ($fresh new)"
}
link_wheels "$bundle/wheels" "$opt/site"
link_wheels "$twheels" "$opt/testsite"
# Entries no run used for a week go.
find "$unpacked" -maxdepth 1 -name '*.ready' -mtime +7 | while read -r stale; do rm -rf "${stale%.ready}" "$stale"; done
exec 9>&-   # the cache is consistent again: other runs may go on
end

# --- emulated runs, two at a time (two cores) ---------------------------------------------
smoke() {
  pythonpath=$opt/site
  emu "$here/smoke.py" "$opt/site" "$version" || die "arm64/smoke.py under emulation (the failed checks are listed above)"
}

fleetd_version() {
  local out
  pythonpath=$opt/site
  out=$(emu -m fleetd --version 2>&1) || die "fleetd --version under emulation exited non-zero: $out"
  echo "$out"
  [ "$out" = "fleetd $version" ] || die "fleetd --version printed '$out', expected 'fleetd $version'"
}

fleetd_check() {
  # The demo inventory points at ~/.kube/fleetd-demo/*.kubeconfig and a local git
  # repository under ~/.local/state/fleetd-demo: give it both, in a throw-away
  # HOME, with API servers that are down (a port nothing listens on).
  local port cluster src out rc
  pythonpath=$opt/site
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$home/.kube/fleetd-demo" "$home/.local/state/fleetd-demo"
  for cluster in mac-mini pi5; do
    cat >"$home/.kube/fleetd-demo/$cluster.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $cluster
  cluster: {server: "https://127.0.0.1:$port", insecure-skip-tls-verify: true}
users:
- name: check
  user: {token: not-a-real-token}
contexts:
- name: $cluster
  context: {cluster: $cluster, user: check}
current-context: $cluster
EOF
  done
  src=$work/fleet-repo
  cp -r "$repo/examples/fleet-repo" "$src"
  git -C "$src" init -q -b main
  git -C "$src" add -A
  git -C "$src" -c user.name=check -c user.email=check@example.invalid commit -q -m "arm64 check" \
    || die "committing examples/fleet-repo into a scratch git repository"
  git clone -q --bare "$src" "$home/.local/state/fleetd-demo/fleet-repo.git" || die "cloning the scratch repository"
  rc=0
  out=$(cd "$repo" && emu -m fleetd check --config "$repo/clusters/fleetd.toml" --timeout 30 2>&1) || rc=$?
  echo "$out"
  [ "$rc" = 1 ] || die "fleetd check exited $rc, expected 1" \
    "(clusters unreachable; 2 = invalid inventory, 0 = something answered on 127.0.0.1:$port)"
  echo "$out" | grep -Eq '^inventory .*: ok' || die "fleetd check did not report the inventory ok"
  for cluster in mac-mini pi5; do
    echo "$out" | grep -Eq "^$cluster " || die "fleetd check's table has no row for $cluster"
  done
}

unit_tests() {
  # the repository comes last: tests/conftest.py imports the test bed, fleetd still comes from the artefact
  pythonpath=$opt/site:$opt/testsite:$repo
  # fleetd is imported first, to prove it is the artefact's; pytest then reuses it.
  (cd "$repo" && emu -c '
import sys, fleetd, pytest
assert fleetd.__file__.startswith(sys.argv[1]), f"fleetd came from {fleetd.__file__}, not the artefact"
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--import-mode=importlib", *sys.argv[2:]]))
' "$opt/site" "${UNIT_TESTS[@]}") || die "unit tests under emulation (pytest failed): ${UNIT_TESTS[*]}"
}

# background TITLE FUNCTION: run FUNCTION in a subshell, its output to a log.
declare -A pids
background() {
  ( started=$(now); "$2"; since "$started" >"$work/$2.time" ) >"$work/$2.log" 2>&1 &
  pids[$2]=$!
}
# collect TITLE FUNCTION: wait for it, show its output, record its time or fail.
collect() {
  local rc=0
  wait "${pids[$2]}" || rc=$?
  echo "check.sh: --- $1"
  sed 's/^/  /' "$work/$2.log"
  if [ "$rc" != 0 ]; then
    wait   # the other step still running: let it end before the exit trap cleans up
    die "$1 (output above)"
  fi
  timings+=("$(printf '%-42s %6ss' "$1" "$(cat "$work/$2.time")")")
  echo "check.sh: --- $1: ok ($(cat "$work/$2.time")s)"
}

background "smoke: imports and native code" smoke
background "fleetd --version" fleetd_version
collect "smoke: imports and native code (emulated)" smoke
collect "fleetd --version (emulated)" fleetd_version
background "fleetd check" fleetd_check
background "unit tests" unit_tests
collect "fleetd check (emulated)" fleetd_check
collect "unit tests (emulated)" unit_tests

if [ "$install_test" = 1 ]; then
  begin "install.sh in an arm64 chroot"
  # chroot runs the root's own aarch64 programs, so the kernel must hand them to
  # qemu: binfmt_misc with qemu-user-static's entry (the F flag keeps the
  # interpreter usable inside the chroot).
  binfmt=/proc/sys/fs/binfmt_misc
  [ "$(id -u)" = 0 ] || die "--install needs root (chroot)"
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" \
    || die "--install needs binfmt_misc, and mounting it on $binfmt failed"
  if [ ! -e "$binfmt/qemu-aarch64" ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$binfmt/register" \
      || die "registering qemu-aarch64 with binfmt_misc (from /usr/lib/binfmt.d/qemu-aarch64.conf)"
  fi
  grep -q '^flags:.*F' "$binfmt/qemu-aarch64" || die "the qemu-aarch64 binfmt entry lacks the F flag; chroot cannot use it"
  iroot=$work/install-root
  mkdir -p "$iroot"
  tar -C "$root" --exclude='./opt/fleetd-check.*' -cf - . | tar -C "$iroot" -xf - || die "copying the arm64 root"
  tar -xzf "$artefact" -C "$iroot/tmp"
  inchroot() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$iroot" "$@"; }
  inchroot /bin/bash "/tmp/$name/install.sh" 2>&1 | sed 's/^/  /' || die "install.sh as root in the arm64 chroot (output above)"
  out=$(inchroot /usr/local/bin/fleetd --version 2>&1) || die "the installed /usr/local/bin/fleetd --version: $out"
  [ "$out" = "fleetd $version" ] || die "the installed fleetd --version printed '$out', expected 'fleetd $version'"
  inchroot getent passwd fleetd >/dev/null || die "install.sh did not create the user fleetd"
  perms=$(inchroot stat -c '%U:%G %a' /etc/fleetd) || die "install.sh did not create /etc/fleetd"
  [ "$perms" = "root:fleetd 750" ] || die "/etc/fleetd is $perms, expected root:fleetd 750"
  if [ -f "$bundle/systemd/fleetd.service" ]; then
    cmp -s "$bundle/systemd/fleetd.service" "$iroot/etc/systemd/system/fleetd.service" \
      || die "install.sh did not install systemd/fleetd.service as /etc/systemd/system/fleetd.service"
  fi
  echo "check.sh: installed: $out, user fleetd, /etc/fleetd $perms"
  end
fi

echo "check.sh: all checks passed for $name ($(du -h "$artefact" | cut -f1), sha256 $(sha256sum <"$artefact" | cut -c1-16)...)"
printf 'check.sh:   %s\n' "${timings[@]}"
echo "check.sh:   total $(since "$t0")s"
