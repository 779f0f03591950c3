#!/usr/bin/env bash
# Build veil's Debian package with cargo-deb: target/debian/veil_VERSION-1_ARCH.deb holding
# /usr/bin/veil, /usr/bin/veil-flood, the veil-wg link (made by the package's postinst), the
# systemd unit veil@.service, the example config and alert rules under
# /usr/share/doc/veil/examples, and the docs.
#
# Usage: scripts/package.sh [--check]
#
#   --check   then install it on this machine with dpkg -i, check that `veil --version` and
#             `veil-wg --version` run, that the unit is in place and passes
#             `systemd-analyze verify`, and remove it again with dpkg -r (nothing of it may be
#             left). Needs root; do not use it where a veil package is installed for real.
#
# cargo-deb comes from crates.io: scripts/install-deps.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

check=no
for arg in "$@"; do
    case "$arg" in
        --check) check=yes ;;
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        *)
            echo "package.sh: unknown argument '$arg' (expected --check)" >&2
            exit 2
            ;;
    esac
done

die() {
    echo "package.sh: $*" >&2
    exit 1
}

cargo deb --version >/dev/null 2>&1 || die "cargo-deb is not installed; run scripts/install-deps.sh"

cargo build --release --locked --bins
# The unit as packaged: the binary where the package puts it, and no hand-install notes.
mkdir -p target/package
sed -e 's|/usr/local/bin/veil|/usr/bin/veil|g' \
    -e '/^#   install /d' -e '/^#   systemctl daemon-reload/d' \
    scripts/veil@.service >target/package/veil@.service
grep -q '^ExecStart=/usr/bin/veil ' target/package/veil@.service ||
    die "scripts/veil@.service: no ExecStart=/usr/local/bin/veil line to rewrite"
deb="$(cargo deb --no-build | tail -n 1)"
[ -f "$deb" ] || die "cargo deb did not report a package file (got '$deb')"
echo "package.sh: built $deb"

if [ "$check" = no ]; then
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "--check installs the package: run as root"
if dpkg-query -W -f='${Status}' veil 2>/dev/null | grep -q 'install ok installed'; then
    die "a veil package is installed here already; --check would replace and then remove it"
fi

removed=no
cleanup() {
    if [ "$removed" = no ]; then
        dpkg -P veil >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

dpkg -i "$deb"
version="$(/usr/bin/veil --version)" || die "veil --version failed"
echo "package.sh: /usr/bin/veil --version: $version"
/usr/bin/veil-wg --version >/dev/null || die "veil-wg --version failed"
[ -L /usr/bin/veil-wg ] || die "/usr/bin/veil-wg is not a link"
for f in /lib/systemd/system/veil@.service /usr/bin/veil-flood \
    /usr/share/doc/veil/examples/veil-server.conf /usr/share/doc/veil/OPERATIONS.md; do
    [ -e "$f" ] || die "$f is not installed"
done
# A template is verified through an instance; it reads /etc/veil/NAME.conf only when started.
systemd-analyze verify veil@veil0.service
echo "package.sh: systemd-analyze verify veil@veil0.service: OK"
/usr/bin/veil check /usr/share/doc/veil/examples/veil-server.conf >/dev/null 2>&1 ||
    die "the packaged example config does not pass veil check"

dpkg -r veil
removed=yes
for f in /usr/bin/veil /usr/bin/veil-wg /usr/bin/veil-flood /lib/systemd/system/veil@.service \
    /usr/share/doc/veil; do
    [ ! -e "$f" ] && [ ! -L "$f" ] || die "$f is left after dpkg -r"
done
echo "package.sh: dpkg -r removed everything"
# dpkg keeps the maintainer scripts of a removed package (state config-files) until a purge.
dpkg -P veil >/dev/null
echo "package.sh: check passed"
