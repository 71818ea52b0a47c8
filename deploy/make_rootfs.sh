#!/bin/sh
# make_rootfs.sh BUILD_DIR OUT: lays out the runtime tree of the pprof-sidecar image in OUT from
# the binaries pprof-sidecar and pprof-sidecar-webhook in BUILD_DIR (a Release build on Debian 12):
# the two stripped binaries, the shared libraries they load (their ldd closure, under their
# sonames in /usr/lib/x86_64-linux-gnu, a directory the loader searches without
# /etc/ld.so.cache), the loader where the binaries' PT_INTERP names it (/lib64 -> usr/lib64), as
# Debian's merged /usr, and nothing else. Fails unless both binaries start from OUT alone
# (chroot). Used by the Dockerfile and by tests/k8s/build_image.sh. Needs root, binutils, ldd.
set -eu
build=$1
out=$2
lib=$out/usr/lib/x86_64-linux-gnu
mkdir -p "$out/usr/local/bin" "$lib" "$out/usr/lib64" "$out/tmp" "$out/proc" "$out/sys" \
  "$out/dev" "$out/etc"
chmod 1777 "$out/tmp"
ln -sfn usr/lib "$out/lib"
ln -sfn usr/lib64 "$out/lib64"
for b in pprof-sidecar pprof-sidecar-webhook; do strip -o "$out/usr/local/bin/$b" "$build/$b"; done
interp=$(readelf -l "$build/pprof-sidecar" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ "$interp" = /lib64/ld-linux-x86-64.so.2 ] || { echo "unexpected interpreter: $interp" >&2; exit 1; }
closure=$(mktemp)
for b in pprof-sidecar pprof-sidecar-webhook; do ldd "$build/$b"; done |
  awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u >"$closure"
while read -r soname path; do cp -L "$path" "$lib/$soname"; done <"$closure"
rm -f "$closure"
cp -L "$interp" "$lib/ld-linux-x86-64.so.2"
ln -sfn ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$out/usr/lib64/ld-linux-x86-64.so.2"
chroot "$out" /usr/local/bin/pprof-sidecar --version
chroot "$out" /usr/local/bin/pprof-sidecar-webhook --version
du -sh "$out"
ls -l "$lib"
