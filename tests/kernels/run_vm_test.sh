#!/usr/bin/env bash
# Boots the agent on real kernels of the supported range and checks what it serves there.
#
#   tests/kernels/run_vm_test.sh [KERNEL...]     (KERNEL: a first column of kernels.txt; default all)
#
# For each kernel of tests/kernels/kernels.txt: downloads the distribution's kernel package (cached
# in build-kernels/, verified against the archive's signed index), boots it in QEMU with an
# initramfs holding the agent (build/pprof-sidecar) and its shared libraries, busybox, and targets
# built here, and runs init.sh there (only proc and sysfs mounted: no tracefs, no debugfs). Per run
# of the agent it checks, from what the VM printed on its second serial port:
#  - /healthz: 200, the clock and the program variant expected on that kernel with those flags,
#    and exactly the "reduced: kernel lacks ..." lines of the features older than the kernel;
#  - /metrics: ready, the same clock and variant;
#  - CPU runs: a 5 s profile of a C target (2 threads, ~75 % spin_hot / ~25 % spin_cold of their
#    CPU time, measured by the target itself over the window) read by google/pprof
#    (tests/tools/pprofcheck) and `go tool pprof -top`: the split within 5 sigma of the target's,
#    >= 95 % of samples in the two functions, >= 95 % of those with the thread's function
#    (worker) on the stack, >= 95 % of stacks rooted by the agent's own count;
#  - heap runs: the allocs profile of a malloc target (uprobes on libc): each site's sampled bytes
#    within 5 sigma of what it allocated;
#  - runs with caps=... run the agent as a pod does (only those capabilities, kptr_restrict=1,
#    a small RLIMIT_MEMLOCK); fail-* runs are expected to be refused: 503 with the reason.
# Prints one summary line per run with the numbers, and exits non-zero if anything failed.
#
# Acceleration: KVM when the host has hardware virtualization (kvm_intel/kvm_amd), else QEMU's
# TCG emulation (slower, same checks; e.g. a host whose /dev/kvm is kvm-pvm, which runs only PVM
# guest kernels at speed). PPROF_SIDECAR_VM_ACCEL=kvm|tcg forces one.
# PPROF_SIDECAR_AGENT=PATH: the agent binary (default build/pprof-sidecar, built if missing).
# PPROF_SIDECAR_VM_RUNS=RUNS: these runs (kernels.txt's syntax) on every kernel instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here=$root/tests/kernels
work=${PPROF_SIDECAR_KERNELS_DIR:-$root/build-kernels}
agent=${PPROF_SIDECAR_AGENT:-$root/build/pprof-sidecar}
mkdir -p "$work/cache" "$work/tools"

die() { echo "run_vm_test: $*" >&2; exit 1; }
note() { echo "run_vm_test: [${SECONDS}s] $*" >&2; }

for tool in qemu-system-x86_64 busybox gcc dpkg-deb gpgv xz curl base64 awk go setpriv; do
  command -v "$tool" >/dev/null || die "$tool missing (scripts/install-deps.sh installs it)"
done
file -L "$(command -v busybox)" | grep -q 'statically linked' ||
  die "busybox is not static (install busybox-static)"

# ---- acceleration ----
accel=${PPROF_SIDECAR_VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
  if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    accel=kvm
  else
    why="no /dev/kvm"
    [ -e /dev/kvm ] && why="/dev/kvm is not hardware virtualization ($(ls /sys/module | grep -m1 '^kvm_' || echo unknown))"
    note "$why: using QEMU's TCG emulation"
    accel=tcg
  fi
fi
case "$accel" in
  kvm) [ -w /dev/kvm ] || die "PPROF_SIDECAR_VM_ACCEL=kvm but /dev/kvm is not usable"
       qemu_accel=(-accel kvm -cpu host); boot_timeout=240 ;;
  tcg) qemu_accel=(-accel tcg,thread=multi -cpu max); boot_timeout=900 ;;
  *) die "PPROF_SIDECAR_VM_ACCEL must be auto, kvm or tcg" ;;
esac

# ---- kernels ----
# fetch_kernel ARCHIVE SUITE KEYRING PACKAGE VERSION SHA256: prints the path of the verified .deb.
fetch_kernel() {
  local archive=$1 suite=$2 keyring=/usr/share/keyrings/$3 pkg=$4 version=$5 sha=$6
  local dir=$work/cache/$suite deb=$work/cache/${pkg}_${version}_amd64.deb
  if [ -f "$deb" ] && [ "$(sha256sum <"$deb" | cut -d' ' -f1)" = "$sha" ]; then
    echo "$deb"
    return
  fi
  [ -f "$keyring" ] || die "keyring $keyring missing (scripts/install-deps.sh installs it)"
  mkdir -p "$dir"
  note "fetching $pkg $version from $archive $suite"
  curl -fsS --retry 3 -o "$dir/InRelease" "$archive/dists/$suite/InRelease" ||
    die "cannot fetch $archive/dists/$suite/InRelease"
  gpgv --quiet --keyring "$keyring" --output "$dir/Release" "$dir/InRelease" 2>"$dir/gpgv.log" ||
    die "$archive/dists/$suite/InRelease: bad signature: $(cat "$dir/gpgv.log")"
  local want
  want=$(awk '/^SHA256:/ {s = 1; next} /^[^ ]/ {s = 0} s && $3 == "main/binary-amd64/Packages.xz" {print $1}' \
    "$dir/Release")
  [ -n "$want" ] || die "$suite Release lists no main/binary-amd64/Packages.xz"
  curl -fsS --retry 3 -o "$dir/Packages.xz" "$archive/dists/$suite/main/binary-amd64/Packages.xz"
  [ "$(sha256sum <"$dir/Packages.xz" | cut -d' ' -f1)" = "$want" ] ||
    die "$suite Packages.xz does not match its signed Release"
  local entry
  entry=$(xzcat "$dir/Packages.xz" | awk -v p="$pkg" -v v="$version" '
    /^Package: / {pk = $2} /^Version: / {ve = $2} /^Filename: / {fn = $2} /^SHA256: / {sh = $2}
    /^$/ {if (pk == p && ve == v) print fn, sh; pk = ve = fn = sh = ""}')
  if [ -z "$entry" ]; then
    die "$pkg $version is no longer in $suite; update tests/kernels/kernels.txt. Now there: $(
      xzcat "$dir/Packages.xz" | grep -oE "^Package: ${pkg%%-[0-9]*}-[0-9.]+-[0-9]+-.*" |
      sed 's/Package: //' | sort -V | tail -3 | tr '\n' ' ')"
  fi
  local file=${entry% *} index_sha=${entry#* }
  [ "$index_sha" = "$sha" ] ||
    die "$pkg $version: SHA-256 in the signed index $index_sha, pinned $sha"
  curl -fsS --retry 3 -o "$deb.part" "$archive/$file" || die "cannot fetch $archive/$file"
  [ "$(sha256sum <"$deb.part" | cut -d' ' -f1)" = "$sha" ] || die "$archive/$file: SHA-256 mismatch"
  mv "$deb.part" "$deb"
  echo "$deb"
}

# vmlinuz DEB: prints the path of the kernel image extracted from the package.
vmlinuz() {
  local out=${1%.deb}.vmlinuz
  if [ ! -f "$out" ]; then
    local x
    x=$(mktemp -d)
    dpkg-deb --fsys-tarfile "$1" | tar -x -C "$x" --wildcards './boot/vmlinuz-*'
    mv "$x"/boot/vmlinuz-* "$out"
    rm -rf "$x"
  fi
  echo "$out"
}

# ---- the initramfs: agent, its libraries, busybox, targets (the same for every kernel) ----
build_initramfs() {
  [ -x "$agent" ] || {
    note "building the agent"
    cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$root/build" -j2 --target pprof-sidecar >/dev/null
  }
  local r=$work/rootfs
  rm -rf "$r"
  mkdir -p "$r"/{bin,agent,proc,sys,dev,tmp}
  cp "$(command -v busybox)" "$r/bin/busybox"
  cp "$here/init.sh" "$r/init"
  chmod 755 "$r/init"
  cp "$agent" "$r/agent/pprof-sidecar"
  # The CPU target: static, frame pointers, no optimization; it measures its own split.
  gcc -O0 -fno-omit-frame-pointer -pthread -static "$here/cpu_split.c" -o "$r/agent/cpu_split"
  # The malloc target: dynamic, so that the agent probes the C library's allocator.
  gcc -O2 -g -fno-omit-frame-pointer -fno-builtin "$root/tests/targets/heap_c_split/heap_c_split.c" \
    -o "$r/agent/heap_c_split"
  gcc -O2 -Wall -static "$here/http_get.c" -o "$r/agent/http_get"
  local bpftool
  bpftool=$(command -v bpftool || echo /usr/sbin/bpftool)
  cp "$bpftool" "$r/agent/bpftool"
  cp "$(command -v setpriv)" "$r/agent/setpriv"  # util-linux's: busybox's cannot set the bounding set
  # Shared-library closure (the dynamic loader included), at the paths the binaries name.
  local lib
  for lib in $(ldd "$r/agent/pprof-sidecar" "$r/agent/heap_c_split" "$r/agent/bpftool" \
               "$r/agent/setpriv" |
               grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
  (cd "$r" && find . | busybox cpio -o -H newc 2>/dev/null) >"$work/initrd.cpio"
}

# ---- checks ----
pprofcheck=$work/tools/pprofcheck
build_pprofcheck() {
  [ -x "$pprofcheck" ] && [ "$pprofcheck" -nt "$root/tests/tools/pprofcheck/main.go" ] && return
  (cd "$root/tests/tools/pprofcheck" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= \
    GOCACHE="$work/tools/gocache" GOTOOLCHAIN=local /usr/lib/go-1.19/bin/go build -o "$pprofcheck" .)
}

# Kernel features the default CPU program needs, with the release that brought each (the
# "reduced:" lines of /healthz name them; docs/KERNELS.md).
FEATURES=(
  "5.11|task storage"
  "5.11|bpf_get_current_task_btf"
  "5.15|bpf_task_pt_regs"
  "5.17|bpf_find_vma"
  "5.17|bpf_loop"
)
version_lt() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }

failures=0
fail() { echo "FAIL [$kernel $run] $*"; failures=$((failures + 1)); run_failed=1; }

# item NAME: the file holding RUN's item NAME from the VM's output.
item() { echo "$out/$run.$1"; }

# A run named fail-memlock* or fail-paranoid*: the agent cannot take CPU profiles there (BPF maps
# beyond RLIMIT_MEMLOCK on a kernel before 5.11; perf events refused at Debian's
# perf_event_paranoid=3): /healthz and the profile answer 503 with the reason, and the agent's log
# says what to change.
check_unavailable() {
  local why
  case $run in
    fail-memlock*) why='RLIMIT_MEMLOCK.*CAP_SYS_RESOURCE' ;;
    fail-paranoid*) why='perf_event_paranoid=[3-9].*SYS_ADMIN' ;;
    *) fail "unknown kind of failure run"; return ;;
  esac
  local h
  h=$(item healthz)
  head -1 "$h" | grep -q ' 503' || fail "/healthz: $(head -1 "$h"), expected 503"
  grep -q '^cpu: unavailable: .' "$h" || fail "/healthz gives no reason: $(cat "$h")"
  grep -q '^pprof_sidecar_cpu_profiling_ready 0$' "$(item metrics)" || fail "/metrics: ready"
  grep -q ' 503' "$(item cpu.status)" || fail "profile request: $(cat "$(item cpu.status)")"
  grep -q "$why" "$(item agent.log)" || fail "the agent's log does not say why ($why)"
  summary+=" $(grep -m1 '^cpu: ' "$h")"
}

check_health() {
  local flags=$1 clock=tick variant
  [[ $flags == *--cpu_sampling_clock=perf* ]] && clock=perf
  if [[ $flags == *--bpf_program=compat* ]]; then variant=compat
  elif [[ $flags == *--bpf_program=default* ]]; then variant=default
  elif version_lt "$kernel" 5.17; then variant=compat
  else variant=default; fi
  local h
  h=$(item healthz)
  [ -s "$h" ] || { fail "no /healthz answer"; return; }
  head -1 "$h" | grep -q ' 200' || fail "/healthz: $(head -1 "$h")"
  grep -q "^cpu: $clock clock.*, $variant BPF program$" "$h" ||
    fail "/healthz does not name the $clock clock and the $variant program: $(grep '^cpu' "$h")"
  local want=() f
  if [[ $flags != *--bpf_program=* ]]; then
    for f in "${FEATURES[@]}"; do version_lt "$kernel" "${f%%|*}" && want+=("${f#*|}"); done
  fi
  for f in "${want[@]}"; do
    grep -qF "reduced: kernel lacks $f (" "$h" || fail "/healthz does not say the kernel lacks $f"
  done
  local got
  got=$(grep -c '^reduced: ' "$h" || true)
  [ "$got" -eq "${#want[@]}" ] || fail "/healthz has $got reduced lines, expected ${#want[@]}"
  local m
  m=$(item metrics)
  grep -q '^pprof_sidecar_cpu_profiling_ready 1$' "$m" || fail "/metrics: not ready"
  grep -q "^pprof_sidecar_cpu_sampling_clock{clock=\"$clock\"} 1$" "$m" ||
    fail "/metrics: clock is not $clock"
  grep -q "^pprof_sidecar_bpf_program_info{variant=\"$variant\"" "$m" ||
    fail "/metrics: program variant is not $variant"
  local seen
  seen=$(sed -n 's/^cpu: \([a-z]*\) clock.*, \([a-z]*\) BPF program$/clock=\1 variant=\2/p' "$h")
  summary+=" ${seen:-cpu=unavailable} reduced=$got startup_ms=$(cat "$(item startup)")"
}

# decode ITEM: the profile file decoded from RUN's base64 item, or nothing.
decode() {
  local b64 pb
  b64=$(item "$1.b64")
  pb=$(item "$1")
  [ -s "$b64" ] && base64 -d "$b64" >"$pb" && echo "$pb"
}

check_cpu() {
  grep -q ' 200' "$(item cpu.status)" || { fail "profile request: $(cat "$(item cpu.status)")"; return; }
  local pb
  pb=$(decode cpu.pb.gz) || { fail "no profile"; return; }
  "$pprofcheck" "$pb" >"$pb.txt" 2>&1 || { fail "pprofcheck: $(tail -1 "$pb.txt")"; return; }
  # As served: symbolized by the agent (pprof would look for the VM's binaries on this host).
  PPROF_TMPDIR=$out go tool pprof -symbolize=none -top "$pb" >"$pb.top" 2>&1 ||
    fail "go tool pprof -top: $(tail -1 "$pb.top")"
  # total, spin_hot and spin_cold (cum, samples), samples in either that also hold worker.
  local nums
  nums=$(awk -F'\t' '
    $1 == "total" && $2 == 0 {n = $3}
    $1 == "func" && $2 == "spin_hot" {split($5, c, ","); hot = c[1]}
    $1 == "func" && $2 == "spin_cold" {split($5, c, ","); cold = c[1]}
    $1 == "sample" {
      split($2, v, ","); s = w = 0
      for (i = 3; i <= NF; i++) { if ($i == "spin_hot" || $i == "spin_cold") s = 1; if ($i == "worker") w = 1 }
      if (s && w) rooted += v[1]
    }
    END {printf "%d %d %d %d\n", n, hot, cold, rooted}' "$pb.txt")
  local n hot cold rooted
  read -r n hot cold rooted <<<"$nums"
  # The target's own account of the window: two cumulative readings around the request.
  local truth
  truth=$(awk '$1 == "truth" {h[++i] = $2; c[i] = $3}
    END {if (i >= 2 && h[2] + c[2] > h[1] + c[1]) printf "%.4f\n", (h[2] - h[1]) / (h[2] - h[1] + c[2] - c[1])}' \
    "$(item cpu.truth)")
  [ -n "$truth" ] || { fail "no truth from the target: $(cat "$(item cpu.truth)")"; return; }
  local verdict
  verdict=$(awk -v n="$n" -v h="$hot" -v c="$cold" -v r="$rooted" -v t="$truth" 'BEGIN {
    k = h + c; if (n == 0 || k == 0) {print "NONE"; exit}
    split_ = h / k; sigma = sqrt(t * (1 - t) / k)
    printf "%d %.4f %.2f %.4f %.4f\n", k, split_, (split_ - t) / sigma, k / n, r / k}')
  [ "$verdict" != NONE ] || { fail "no samples in spin_hot/spin_cold (total $n)"; return; }
  local k split z in_funcs rooted_share
  read -r k split z in_funcs rooted_share <<<"$verdict"
  summary+=" samples=$n split=$split truth=$truth (${z} sigma) in_target_funcs=$in_funcs"
  summary+=" with_worker=$rooted_share"
  # The agent's own count, in the profile's comments.
  local agent_rooted
  agent_rooted=$(grep -oE '[0-9.]+% of stacks reach a thread root frame' "$pb.txt" | cut -d% -f1)
  summary+=" rooted=${agent_rooted:-?}%"
  awk -v x="${agent_rooted:-0}" 'BEGIN {exit !(x >= 95)}' ||
    fail "only ${agent_rooted:-?}% of stacks rooted (agent's count)"
  # An emulated guest (TCG) on a busy 2-core host gets a fraction of a CPU: 80-500 samples where
  # KVM gives ~1,000. The split's sigma accounts for the count; 50 keeps it meaningful.
  awk -v k="$k" 'BEGIN {exit !(k >= 50)}' || fail "only $k samples in spin_hot/spin_cold (< 50)"
  awk -v z="$z" 'BEGIN {exit !(z <= 5 && z >= -5)}' ||
    fail "split $split is $z sigma from the target's $truth"
  awk -v x="$in_funcs" 'BEGIN {exit !(x >= 0.95)}' ||
    fail "only $in_funcs of samples in the target's functions"
  awk -v x="$rooted_share" 'BEGIN {exit !(x >= 0.95)}' ||
    fail "only $rooted_share of stacks reach worker"
}

check_heap() {
  grep -q ' 200' "$(item heap.status)" || { fail "allocs request: $(cat "$(item heap.status)")"; return; }
  local pb truth
  pb=$(decode heap.pb.gz) || { fail "no allocs profile"; return; }
  "$pprofcheck" "$pb" >"$pb.txt" 2>&1 || { fail "pprofcheck: $(tail -1 "$pb.txt")"; return; }
  PPROF_TMPDIR=$out go tool pprof -symbolize=none -top -sample_index=alloc_space "$pb" \
    >"$pb.top" 2>&1 || fail "go tool pprof -top: $(tail -1 "$pb.top")"
  truth=$(cat "$(item heap.truth)")
  # "done BIG_BYTES SMALL_BYTES ...": 32768 iterations of malloc(3000) and calloc(1, 1000).
  local verdict
  verdict=$(awk -F'\t' -v truth="$truth" '
    $1 == "func" && ($2 == "big_site" || $2 == "small_site") {split($5, c, ","); b[$2] = c[2]}
    END {
      split(truth, t, " "); n = 32768; rate = 16384
      out = ""
      for (i = 0; i < 2; i++) {
        name = i ? "small_site" : "big_site"; size = i ? 1000 : 3000; want = t[i + 2]
        p = 1 - exp(-size / rate); sd = sqrt((1 - p) / (n * p))
        z = want > 0 ? (b[name] / want - 1) / sd : 99
        out = out sprintf("%s=%.4f(%.2f_sigma) ", name, want > 0 ? b[name] / want : 0, z)
        if (z > 5 || z < -5) bad = 1
      }
      print (bad ? "BAD " : "OK ") out
    }' "$pb.txt")
  summary+=" allocs: ${verdict#* }"
  [[ $verdict == OK* ]] || fail "sampled bytes / allocated bytes off by more than 5 sigma: $verdict (truth: $truth)"
}

# ---- main ----
want_kernels=("$@")
build_pprofcheck || die "cannot build pprofcheck"
build_initramfs
note "initramfs $(du -h "$work/initrd.cpio" | cut -f1), acceleration $accel"
ran=0
t_all=$(date +%s)
while read -r kernel archive suite keyring pkg version sha runs; do
  [[ -z $kernel || $kernel == \#* ]] && continue
  if ((${#want_kernels[@]})) && [[ " ${want_kernels[*]} " != *" $kernel "* ]]; then continue; fi
  ran=$((ran + 1))
  runs=${PPROF_SIDECAR_VM_RUNS:-$runs}
  deb=$(fetch_kernel "$archive" "$suite" "$keyring" "$pkg" "$version" "$sha")
  image=$(vmlinuz "$deb")
  note "$kernel: booting $(basename "$deb")"
  out=$work/out/$kernel
  rm -rf "$out"
  mkdir -p "$out"
  t0=$(date +%s)
  set +e
  timeout "$boot_timeout" qemu-system-x86_64 "${qemu_accel[@]}" -m 1G -smp 2 -nodefaults \
    -no-user-config -display none -vga none -no-reboot \
    -serial "file:$out/console.log" -serial "file:$out/results.txt" \
    -kernel "$image" -initrd "$work/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1 random.trust_cpu=on pprof_runs=$runs" \
    </dev/null >"$out/qemu.log" 2>&1
  rc=$?
  set -e
  boot_s=$(($(date +%s) - t0))
  tr -d '\r' <"$out/results.txt" | awk -v d="$out" '
    /^@@begin / {f = d "/" $2 "." $3; printf "" > f; next}
    /^@@end / {close(f); f = ""; next}
    f != "" {print >> f}' || true
  run=vm
  if ! grep -q '^@@done' "$out/results.txt"; then
    fail "the VM did not finish (qemu exit $rc after ${boot_s}s); console:"
    tail -30 "$out/console.log"
    cat "$out/qemu.log"
  fi
  note "$kernel ($(cat "$out/vm.kernel" 2>/dev/null)): VM ran ${boot_s}s"
  for spec in ${runs//,/ }; do
    run=${spec%%:*}
    flags=""
    [ "$run" != "$spec" ] && flags=${spec#*:}
    summary=""
    run_failed=0
    if [ ! -f "$(item healthz)" ]; then
      fail "no output"
    else
      if [[ $run == fail* ]]; then
        check_unavailable
      else
        check_health "$flags"
        if [[ $run == heap* ]]; then check_heap; else check_cpu; fi
      fi
    fi
    echo "$kernel $run:${summary}"
    if ((run_failed)); then
      echo "---- agent log ($kernel $run) ----"
      cat "$(item agent.log)" 2>/dev/null || true
      echo "---- /healthz ----"
      cat "$(item healthz)" 2>/dev/null || true
    fi
  done
done <"$here/kernels.txt"
((ran)) || die "no kernel of kernels.txt matches: $*"
echo "kernel matrix: $ran kernels in $(($(date +%s) - t_all)) s, $failures failures"
((failures == 0))
