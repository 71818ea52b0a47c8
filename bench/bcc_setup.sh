# Sourced by the benchmark scripts: makes a bcc tool usable on this machine, as an optional extra
# row. bcc compiles its BPF C at start against the running kernel's headers, which this kernel
# does not ship: Debian's linux-headers-6.12 packages are linked as /lib/modules/$(uname -r)/build
# and .../source. Needs `log` and `$WORK` from the caller.
#   bcc_setup TOOL   sets BCC_OK=1 when TOOL (e.g. profile-bpfcc) can run, else logs why not.
#   BENCH_NO_BCC=1 skips the row; BENCH_NO_INSTALL=1 never runs apt-get.
BCC_OK=0
bcc_setup() {
  local tool=$1
  [[ ${BENCH_NO_BCC:-0} == 1 ]] && { log "bcc: disabled (BENCH_NO_BCC=1)"; return; }
  if ! command -v "$tool" >/dev/null && [[ ${BENCH_NO_INSTALL:-0} != 1 ]] &&
    command -v apt-get >/dev/null; then
    log "bcc: installing bpfcc-tools and kernel headers (optional extra)..."
    local hdr
    hdr=$(apt-cache search --names-only '^linux-headers-6\.12\..*-amd64$' 2>/dev/null |
      awk '{print $1}' | grep -v -e cloud -e rt | sort -V | tail -1)
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bpfcc-tools \
      ${hdr:+"$hdr"} >"$WORK/apt.log" 2>&1 || log "bcc: apt-get install failed (see $WORK/apt.log)"
  fi
  command -v "$tool" >/dev/null || { log "bcc: $tool not available: row skipped"; return; }
  local mod=/lib/modules/$(uname -r)
  if [[ ! -e $mod/build/Makefile ]]; then
    local arch common
    arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | grep -v -e cloud -e rt | sort -V | tail -1)
    common=${arch%-amd64}-common
    if [[ -d $arch && -d $common ]]; then
      mkdir -p "$mod" && ln -sfn "$arch" "$mod/build" && ln -sfn "$common" "$mod/source"
      log "bcc: linked $mod/build -> $arch, source -> $common"
    else
      log "bcc: no kernel headers for bcc to compile against: row skipped"; return
    fi
  fi
  BCC_OK=1
}
