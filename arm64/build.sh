#!/usr/bin/env bash
# Build the Raspberry Pi 5 artefact: an offline bundle of fleetd and every
# runtime dependency as aarch64 wheels for CPython 3.11, with an installer.
#
#   arm64/build.sh            build arm64/dist/fleetd-<version>-rpi5-aarch64.tar.gz (+ .sha256)
#   arm64/build.sh --lock     re-resolve the newest versions pyproject.toml allows, rewrite
#                             arm64/constraints.txt, then build
#   arm64/build.sh --out DIR  write the artefact to DIR instead of arm64/dist
#   arm64/build.sh --verify   also build it a second time, from the same snapshot of the
#                             tree at another path, and fail unless the bytes are equal
#
# Reproducible: versions come from arm64/constraints.txt (the runtime wheels and
# the backend that builds the fleetd wheel), every timestamp is the last commit's
# (SOURCE_DATE_EPOCH), tar members are sorted and owned by 0/0, and gzip stores
# no name or time. The source is a snapshot of the files git would commit
# (tracked and new, not ignored), so build/ and *.egg-info never touch the tree.
#
# Needs: git, GNU tar, gzip, sha256sum, and Python 3.11+ with pip >= 25.3 (the
# repo's .venv, or $PYTHON). Reaches PyPI; pip's cache makes reruns quick.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC PIP_DISABLE_PIP_VERSION_CHECK=1

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
constraints=$here/constraints.txt
out=$here/dist
lock=0
verify=0

die() { echo "build.sh: FAILED: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --lock) lock=1 ;;
    --verify) verify=1 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$(realpath -m "$2"); shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (use --lock, --out DIR, --verify or --help)" ;;
  esac
  shift
done

# The target: Raspberry Pi OS bookworm, aarch64, CPython 3.11 (glibc 2.36).
PLATFORM_ARGS=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311
  --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64)

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PY=$repo/.venv/bin/python; else PY=python3; fi
fi
"$PY" -c 'import sys, tomllib' 2>/dev/null || die "$PY is not Python 3.11+ (set PYTHON, or run 'make install')"
"$PY" -m pip wheel --help 2>/dev/null | grep -q -- --build-constraint \
  || die "pip in $PY has no --build-constraint (needs pip >= 25.3: $PY -m pip install -U pip)"

t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
step() { echo "build.sh: [$(elapsed)s] $*"; }

cd "$repo"
git rev-parse --git-dir >/dev/null 2>&1 || die "$repo is not a git checkout (SOURCE_DATE_EPOCH comes from the last commit)"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
if [ -n "$(git status --porcelain --untracked-files=normal 2>/dev/null)" ]; then
  echo "build.sh: note: the working tree has uncommitted changes; they are built in" \
       "(the same tree always gives the same bytes, but only a commit names that tree)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-arm64-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 0. a snapshot of the source ---------------------------------------------------
step "snapshot of the source tree (tracked and new files, as git sees them)"
src=$work/src
mkdir -p "$src"
"$PY" - "$repo" "$src" <<'PYEOF' || die "copying the source tree into $src"
import os, shutil, subprocess, sys
repo, dest = sys.argv[1:3]
listed = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        check=True, capture_output=True).stdout.decode().split("\0")
for rel in sorted(set(filter(None, listed))):
    path = os.path.join(repo, rel)
    if os.path.isfile(path) and not os.path.islink(path):  # deleted-but-tracked files are skipped
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copyfile(path, os.path.join(dest, rel))
        # The mode as git records it, whatever the checkout's umask was.
        os.chmod(os.path.join(dest, rel), 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
PYEOF
toml() { "$PY" -c 'import tomllib, sys; d = tomllib.load(open(sys.argv[1], "rb"))
for k in sys.argv[2].split("."): d = d[k]
print(*(d if isinstance(d, list) else [d]), sep="\n")' "$src/pyproject.toml" "$1"; }

if [ "$lock" = 1 ] || [ ! -s "$constraints" ]; then
  step "resolving the newest allowed versions into arm64/constraints.txt"
  mapfile -t runtime_reqs < <(toml project.dependencies)
  mapfile -t build_reqs < <(toml build-system.requires)
  "$PY" -m pip download --quiet "${PLATFORM_ARGS[@]}" -d "$work/lock-runtime" "${runtime_reqs[@]}" \
    || die "resolving the runtime dependencies as aarch64 wheels (pip output above)"
  "$PY" -m pip download --quiet --only-binary=:all: -d "$work/lock-build" "${build_reqs[@]}" \
    || die "resolving the build backend ${build_reqs[*]} (pip output above)"
  "$PY" - "$work/lock-runtime" "$work/lock-build" "$constraints" <<'PYEOF' || die "writing $constraints"
import os, re, sys
def pins(directory):
    for name in sorted(os.listdir(directory)):
        dist, version = name.split("-")[:2]
        yield re.sub(r"[-_.]+", "-", dist).lower() + "==" + version
runtime, build, path = sys.argv[1:4]
with open(path, "w") as out:
    out.write("# Exact versions of everything in the Raspberry Pi 5 artefact, and of the backend that\n"
              "# builds the fleetd wheel: the artefact is reproducible because nothing floats.\n"
              "# Generated by `arm64/build.sh --lock` from pyproject.toml's ranges; do not edit by hand.\n"
              "\n# Runtime dependencies (manylinux aarch64 or pure-Python wheels for CPython 3.11)\n")
    out.writelines(p + "\n" for p in pins(runtime))
    out.write("\n# Build backend of the fleetd wheel ([build-system] requires)\n")
    out.writelines(p + "\n" for p in pins(build))
PYEOF
  echo "build.sh: wrote $constraints"
  cp "$constraints" "$src/arm64/constraints.txt"
fi
[ -s "$src/arm64/constraints.txt" ] || die "arm64/constraints.txt is missing (run arm64/build.sh --lock)"
version=$(toml project.version)
name=fleetd-$version-rpi5-aarch64

# bundle SRC WORKDIR DEST: build $name.tar.gz into DEST from the snapshot SRC.
bundle() {
  local src=$1 w=$2 dest=$3
  local pins=$1/arm64/constraints.txt top=$2/stage/$name

  # --- 1. the fleetd wheel -------------------------------------------------------
  step "building the fleetd wheel (pip wheel --no-deps, build backend pinned)"
  "$PY" -m pip wheel --quiet --no-deps --build-constraint "$pins" -w "$w/fleetd-wheel" "$src" \
    || die "building the fleetd wheel (pip output above)"
  local whl=$w/fleetd-wheel/fleetd-$version-py3-none-any.whl
  [ -f "$whl" ] || die "pip wheel made '$(ls "$w/fleetd-wheel")', expected $(basename "$whl")"

  # --- 2. every runtime dependency, as aarch64 wheels ----------------------------
  step "downloading the runtime dependencies as aarch64 wheels (pinned by arm64/constraints.txt)"
  mkdir -p "$top/wheels"
  "$PY" -m pip download --quiet "${PLATFORM_ARGS[@]}" -c "$pins" -d "$top/wheels" "$whl" \
    || die "downloading aarch64 wheels for $(basename "$whl") (pip output above)"
  "$PY" - "$top/wheels" "$pins" <<'PYEOF' || die "the downloaded wheels do not match arm64/constraints.txt (see above)"
# Every wheel must be pinned and must run on aarch64 CPython 3.11: a new dependency
# missing from the constraints file would make the artefact float.
import os, re, sys
wheels, constraints = sys.argv[1:3]
pinned = dict(l.strip().split("==") for l in open(constraints) if "==" in l and not l.startswith("#"))
bad = []
for whl in sorted(os.listdir(wheels)):
    dist, version, *_, plat = whl[:-4].split("-")
    dist = re.sub(r"[-_.]+", "-", dist).lower()
    if dist != "fleetd" and pinned.get(dist) != version:
        bad.append(f"{whl}: {dist} {version} is not pinned in arm64/constraints.txt; run arm64/build.sh --lock")
    if plat != "any" and "aarch64" not in plat:
        bad.append(f"{whl}: platform {plat} is not aarch64")
if bad:
    sys.exit("\n".join(bad))
PYEOF

  # --- 3. installer, unit, docs, checksums, tarball --------------------------------
  step "assembling $name"
  install -m 0755 "$src/arm64/install.sh" "$top/install.sh"
  install -m 0644 "$src/arm64/README.md" "$top/README.md"
  install -m 0644 "$pins" "$top/constraints.txt"
  if [ -f "$src/systemd/fleetd.service" ]; then
    install -D -m 0644 "$src/systemd/fleetd.service" "$top/systemd/fleetd.service"
  else
    echo "build.sh: note: systemd/fleetd.service does not exist; the bundle has no unit (install.sh says so)"
  fi
  chmod 0644 "$top"/wheels/*.whl
  (cd "$top" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | xargs sha256sum > SHA256SUMS)
  chmod 0644 "$top/SHA256SUMS"
  find "$w/stage" -type d -exec chmod 0755 {} +

  mkdir -p "$dest"
  tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
      -C "$w/stage" -cf - "$name" | gzip -9 -n > "$dest/$name.tar.gz.tmp" || die "writing $dest/$name.tar.gz"
  mv "$dest/$name.tar.gz.tmp" "$dest/$name.tar.gz"
  (cd "$dest" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
}

if [ "$verify" = 1 ]; then
  # A second, independent build of the same snapshot, from another path, at the
  # same time (two cores): the bytes must depend on neither.
  cp -a "$src" "$work/src-again"
  bundle "$work/src-again" "$work/again" "$work/again/out" >"$work/again.log" 2>&1 &
  again=$!
fi
bundle "$src" "$work/first" "$out"
tarball=$out/$name.tar.gz
sum=$(cut -d' ' -f1 "$tarball.sha256")
echo "build.sh: [$(elapsed)s] built $tarball"
echo "build.sh:   $(du -h "$tarball" | cut -f1), $(ls "$work/first/stage/$name/wheels" | wc -l) wheels," \
     "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
echo "build.sh:   sha256 $sum"
if [ "$verify" = 1 ]; then
  wait "$again" || { sed 's/^/  second build: /' "$work/again.log"; die "the second build (--verify) failed (output above)"; }
  sum2=$(cut -d' ' -f1 "$work/again/out/$name.tar.gz.sha256")
  [ "$sum" = "$sum2" ] || die "not reproducible: a second build of the same snapshot has sha256 $sum2, not $sum" \
    "(rerun with --out DIR twice on a clean checkout and compare the two with diffoscope)"
  echo "build.sh: [$(elapsed)s] reproducible: a second build of the same snapshot gave the same sha256"
fi
