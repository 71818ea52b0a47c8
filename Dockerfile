# pprof-sidecar image: the eBPF profiler agent and the admission webhook.
#
# Build: docker build -t pprof-sidecar .    (or tests/k8s/build_image.sh with podman, offline)
# The runtime stage has only the shared libraries the two binaries link (found with ldd in the
# build stage and mapped to their Debian packages), no compiler and no shell tools beyond slim.

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
    && cmake --build build -j"$(nproc)" --target pprof-sidecar pprof-sidecar-webhook \
    && mkdir -p /out/usr/local/bin \
    && strip -o /out/usr/local/bin/pprof-sidecar build/pprof-sidecar \
    && strip -o /out/usr/local/bin/pprof-sidecar-webhook build/pprof-sidecar-webhook \
    && for b in /out/usr/local/bin/*; do ldd "$b"; done \
       | awk '$3 ~ /^\// {print $3}' | sort -u \
       | xargs -r -n1 realpath | xargs -r dpkg -S 2>/dev/null | cut -d: -f1 | sort -u \
       | grep -v '^libc6$' >/out/runtime-packages \
    && cat /out/runtime-packages

FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends $(cat /tmp/runtime-packages) \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/runtime-packages
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
# Root in the container, but only with the capabilities the pod spec grants (BPF, PERFMON,
# SYS_PTRACE by default); the filesystem can be mounted read-only.
USER 0
EXPOSE 6060
ENTRYPOINT ["/usr/local/bin/pprof-sidecar"]
