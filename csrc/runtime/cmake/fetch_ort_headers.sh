#!/bin/sh
# Downloads Debian trixie's libonnxruntime-dev (85 KB, MIT-licensed headers) with a private apt state (no change
# to the system's apt configuration) and extracts its include/ into DEST/include.  Needs apt-get and dpkg-deb.
# Only the C API header is used; the library itself is loaded at run time from any ORT >= 1.11.
set -eu
DEST=${1:?usage: fetch_ort_headers.sh DEST}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial"
# The Debian mirror this machine already uses (its apt sources), asked for the trixie suite that has the package.
MIRROR=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || { echo "fetch_ort_headers.sh: no Debian mirror found in this machine's apt sources" >&2; exit 1; }
echo "deb $MIRROR trixie main" > "$WORK/sources.list"
A="-o Dir::Etc::SourceList=$WORK/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$WORK/lists -o Dir::Cache=$WORK/cache -o APT::Sandbox::User=root"
apt-get $A -qq update
(cd "$WORK" && apt-get $A -qq download libonnxruntime-dev)
dpkg-deb -x "$WORK"/libonnxruntime-dev_*.deb "$WORK/x"
mkdir -p "$DEST/include"
cp -r "$WORK/x/usr/include/onnxruntime" "$DEST/include/"
test -f "$DEST/include/onnxruntime/onnxruntime_c_api.h"
