# pprof-sidecar image: the eBPF profiler agent and the admission webhook.
#
# Build: docker build -t pprof-sidecar .    (or tests/k8s/build_image.sh with podman, offline)
# The runtime image holds the two stripped binaries, the shared libraries they load (their ldd
# closure, with the dynamic loader) and nothing else: no shell, no package manager, no
# distribution base. Neither binary reads files of its own beyond those (the webhook reads the
# certificate and key it is given; the agent reads /proc and /sys of the node), and neither
# makes outgoing TLS connections, so there are no CA certificates.

FROM debian:bookworm AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config clang llvm bpftool libbpf-dev libelf-dev libdw-dev \
      zlib1g-dev libabsl-dev libgflags-dev libcpp-httplib-dev libssl-dev libprotobuf-dev \
      protobuf-compiler nlohmann-json3-dev libgtest-dev libgmock-dev binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The same CMake build as the README, restricted to the two shipped binaries.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
    && cmake --build build -j"$(nproc)" --target pprof-sidecar pprof-sidecar-webhook
# The runtime tree in /out, laid out like Debian's merged /usr: libraries under their sonames in
# /usr/lib/x86_64-linux-gnu (a directory the loader searches without /etc/ld.so.cache), the
# loader where the binaries' PT_INTERP names it (/lib64 -> usr/lib64).
RUN set -eu; out=/out; lib=$out/usr/lib/x86_64-linux-gnu; \
    mkdir -p "$out/usr/local/bin" "$lib" "$out/usr/lib64" "$out/tmp" "$out/proc" "$out/sys" "$out/dev" "$out/etc"; \
    chmod 1777 "$out/tmp"; \
    ln -s usr/lib "$out/lib"; ln -s usr/lib64 "$out/lib64"; \
    for b in pprof-sidecar pprof-sidecar-webhook; do strip -o "$out/usr/local/bin/$b" "build/$b"; done; \
    interp=$(readelf -l build/pprof-sidecar | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p'); \
    [ "$interp" = /lib64/ld-linux-x86-64.so.2 ]; \
    for b in build/pprof-sidecar build/pprof-sidecar-webhook; do ldd "$b"; done \
      | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u >/tmp/closure; \
    while read -r soname path; do cp -L "$path" "$lib/$soname"; done </tmp/closure; \
    cp -L "$interp" "$lib/ld-linux-x86-64.so.2"; \
    ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$out/usr/lib64/ld-linux-x86-64.so.2"; \
    : both binaries must start from the tree alone; \
    chroot "$out" /usr/local/bin/pprof-sidecar --version; \
    chroot "$out" /usr/local/bin/pprof-sidecar-webhook --version; \
    du -sh "$out"; ls -l "$lib"

FROM scratch
COPY --from=build /out/ /
# Root in the container, but only with the capabilities the pod spec grants (BPF, PERFMON,
# SYS_PTRACE by default); the filesystem can be mounted read-only.
USER 0
EXPOSE 6060
ENTRYPOINT ["/usr/local/bin/pprof-sidecar"]
