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
# The runtime tree in /out: the stripped binaries and their libraries (deploy/make_rootfs.sh).
RUN sh deploy/make_rootfs.sh build /out

FROM scratch
COPY --from=build /out/ /
# Root in the container, but only with the capabilities the pod spec grants (BPF, PERFMON,
# SYS_PTRACE by default); the filesystem can be mounted read-only.
USER 0
EXPOSE 6060
ENTRYPOINT ["/usr/local/bin/pprof-sidecar"]
