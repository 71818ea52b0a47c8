#include "agent/goprofile/go_stack_format.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "pprof_encoder/builder.h"

namespace pprof_sidecar {
namespace {

// What runtime.CallersFrames reports for one recorded PC.
struct PcFrame {
  uint64_t pc = 0;     // runtime address of the call (recorded - 1)
  uint64_t entry = 0;  // runtime entry of the physical function
  std::string function, file;
  int64_t line = 0;
  bool known = false;
};

PcFrame FrameOf(const GoImage& img, uint64_t recorded) {
  PcFrame f;
  f.pc = recorded - 1;
  absl::StatusOr<GoPclntab::FuncInfo> fi = img.bin->pcln().LookupFunc(f.pc - img.bias);
  absl::StatusOr<SourceLines> lines = img.bin->pcln().Symbolize(f.pc - img.bias);
  if (!fi.ok() || !lines.ok() || lines->empty()) return f;
  f.known = true;
  f.entry = fi->entry + img.bias;
  f.function = img.bin->pcln().PrintName(lines->front().function);
  f.file = lines->front().file;
  f.line = lines->front().line;
  return f;
}

size_t Utf8Width(absl::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

// text/tabwriter.NewWriter(w, 1, 8, 1, '\t', 0), as runtime/pprof formats debug=1 text.
class TabWriter {
 public:
  explicit TabWriter(const std::vector<std::string>& lines) {
    for (const std::string& l : lines) cells_.push_back(absl::StrSplit(l, '\t'));
  }
  std::string Format() {
    Block(0, cells_.size());
    return out_;
  }

 private:
  void Block(size_t line0, size_t line1) {
    const size_t column = widths_.size();
    for (size_t row = line0; row < line1; ++row) {
      if (column + 1 >= cells_[row].size()) continue;
      Write(line0, row);
      line0 = row;
      size_t width = 1;  // minwidth
      for (; row < line1 && column + 1 < cells_[row].size(); ++row) {
        width = std::max(width, Utf8Width(cells_[row][column]) + 1);  // + padding
      }
      widths_.push_back(width);
      Block(line0, row);
      widths_.pop_back();
      line0 = row;
    }
    Write(line0, line1);
  }
  void Write(size_t line0, size_t line1) {
    for (size_t i = line0; i < line1; ++i) {
      for (size_t j = 0; j < cells_[i].size(); ++j) {
        out_ += cells_[i][j];
        if (j < widths_.size()) {
          const size_t cellw = (widths_[j] + 7) / 8 * 8;
          out_.append((cellw - Utf8Width(cells_[i][j]) + 7) / 8, '\t');
        }
      }
      out_ += '\n';
    }
  }
  std::vector<std::vector<std::string>> cells_;
  std::vector<size_t> widths_;
  std::string out_;
};

bool HiddenInCountProfile(const GoImage& img, const std::string& name) {
  return absl::StartsWith(name, "runtime.") ||
         (img.bin->minor() >= 24 && absl::StartsWith(name, "internal/runtime/"));
}

// runtime/pprof's printStackRecord: leading runtime frames hidden unless all are. PCs outside Go
// functions (zeros of a fixed-size record) yield no frame, as in runtime.CallersFrames, which
// gives one empty frame ("#\t0x0") when there are none at all.
void StackRecordLines(const GoImage& img, const std::vector<uint64_t>& pcs, bool all_frames,
                      std::vector<std::string>* out) {
  bool show = all_frames;
  const size_t start = out->size();
  bool any = false;
  for (uint64_t pc : pcs) {
    PcFrame f = pc == 0 ? PcFrame() : FrameOf(img, pc);
    if (!f.known) continue;
    any = true;
    if (f.function != "runtime.goexit" && (show || !HiddenInCountProfile(img, f.function))) {
      show = true;
      out->push_back(absl::StrFormat("#\t0x%x\t%s+0x%x\t%s:%d", f.pc, f.function, f.pc - f.entry,
                                     f.file, f.line));
    }
  }
  if (!any) {
    show = true;
    out->push_back("#\t0x0");
  }
  if (!show) {
    out->resize(start);
    StackRecordLines(img, pcs, true, out);
    return;
  }
  out->push_back("");
}

std::string Quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      o += absl::StrFormat("\\x%02x", c);
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

std::string StackKey(const std::vector<uint64_t>& pcs, const std::string& labels) {
  std::string k = "@";
  for (uint64_t pc : pcs) absl::StrAppendFormat(&k, " 0x%x", pc);
  if (!labels.empty()) absl::StrAppend(&k, "\n# labels: ", labels);
  return k;
}

}  // namespace

std::vector<uint64_t> GoTracebackPcs(const GoImage& img, const std::vector<GoFrame>& frames) {
  std::vector<uint64_t> pcs;
  std::vector<uint64_t> levels;
  for (const GoFrame& f : frames) {
    absl::StatusOr<SourceLines> lines = img.bin->pcln().SymbolizeLevels(f.sym_pc, &levels);
    if (!lines.ok() || lines->size() != levels.size()) {
      pcs.push_back(f.sym_pc + 1 + img.bias);
      continue;
    }
    for (size_t i = 0; i < lines->size(); ++i) {
      if ((*lines)[i].go_wrapper) continue;
      pcs.push_back(levels[i] + 1 + img.bias);
    }
  }
  return pcs;
}

std::vector<uint64_t> GoExpandInlined(const GoImage& img, const std::vector<uint64_t>& pcs) {
  std::vector<uint64_t> out, levels;
  size_t i = 0;
  for (uint64_t next = 0;;) {
    uint64_t pc;
    if (next != 0) {
      pc = next;
      next = 0;
    } else if (i < pcs.size()) {
      pc = pcs[i++];
    } else {
      break;
    }
    absl::StatusOr<GoPclntab::FuncInfo> f = img.bin->pcln().LookupFunc(pc - img.bias);
    if (!f.ok()) continue;
    const uint64_t link = pc - img.bias > f->entry ? pc - img.bias - 1 : pc - img.bias;
    absl::StatusOr<SourceLines> sl = img.bin->pcln().SymbolizeLevels(link, &levels);
    out.push_back(link + 1 + img.bias);
    // Inlined here: continue with the caller's PC unless the record already has it next.
    if (sl.ok() && levels.size() > 1 && i < pcs.size() && pcs[i] != levels[1] + 1 + img.bias) {
      next = levels[1] + 1 + img.bias;
    }
  }
  return out;
}

std::string GoLabelsText(const std::vector<std::pair<std::string, std::string>>& labels) {
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    absl::StrAppend(&s, i ? ", " : "", Quote(labels[i].first), ":", Quote(labels[i].second));
  }
  return s + "}";
}

std::string CountProfileText(const GoImage& img, const std::string& name,
                             const std::vector<CountStack>& stacks) {
  std::map<std::string, size_t> count, index;
  std::vector<std::string> keys;
  for (size_t i = 0; i < stacks.size(); ++i) {
    const std::string labels = stacks[i].labels.empty() ? "" : GoLabelsText(stacks[i].labels);
    std::string k = StackKey(stacks[i].pcs, labels);
    if (count[k]++ == 0) {
      index[k] = i;
      keys.push_back(std::move(k));
    }
  }
  std::sort(keys.begin(), keys.end(), [&](const std::string& a, const std::string& b) {
    return count[a] != count[b] ? count[a] > count[b] : a < b;
  });
  std::vector<std::string> lines;
  lines.push_back(absl::StrCat(name, " profile: total ", stacks.size()));
  for (const std::string& k : keys) {
    for (absl::string_view l : absl::StrSplit(absl::StrCat(count[k], " ", k), '\n')) {
      lines.emplace_back(l);
    }
    StackRecordLines(img, stacks[index[k]].pcs, false, &lines);
  }
  std::string text = TabWriter(lines).Format();
  return text;
}

void AppendStackRecordLines(const GoImage& img, const std::vector<uint64_t>& pcs, bool all_frames,
                            std::vector<std::string>* lines) {
  StackRecordLines(img, pcs, all_frames, lines);
}

std::string TabFormat(const std::vector<std::string>& lines) { return TabWriter(lines).Format(); }

bool GoShowFrame(const std::string& name, bool first_frame) {
  if (name == "runtime.gopanic" && !first_frame) return true;
  if (name.find('.') == std::string::npos) return false;
  if (!absl::StartsWith(name, "runtime.")) return true;
  // isExportedRuntime: exported functions and exported methods on exported types.
  std::string rest = name.substr(8), rcvr;
  const size_t dot = rest.rfind('.');
  if (dot != std::string::npos) {
    rcvr = rest.substr(0, dot);
    rest = rest.substr(dot + 1);
    if (rcvr.size() >= 3 && rcvr[0] == '(' && rcvr[1] == '*' && rcvr.back() == ')') {
      rcvr = rcvr.substr(2, rcvr.size() - 3);
    }
  }
  auto upper = [](const std::string& s) { return !s.empty() && s[0] >= 'A' && s[0] <= 'Z'; };
  return upper(rest) && (rcvr.empty() || upper(rcvr));
}

absl::StatusOr<std::string> CountProfileProto(const GoImage& img, pid_t pid,
                                              ProcessSymbolizer* symbolizer,
                                              const std::string& name,
                                              const std::vector<CountStack>& stacks,
                                              absl::Time time,
                                              const std::vector<std::string>& comments) {
  pprof_encoder::Builder b;
  b.AddSampleType(name, "count");
  b.SetPeriodType(name, "count");
  b.SetPeriod(1);
  b.SetTimeNanos(absl::ToUnixNanos(time));
  for (const std::string& c : comments) b.AddComment(c);
  LocationTable table(&b, symbolizer);
  GoStackLocations locations(img, &table, table.ImageOf(static_cast<uint32_t>(pid)));
  for (const CountStack& st : stacks) {
    std::vector<pprof_encoder::Label> labels;
    for (const auto& [k, v] : st.labels) labels.push_back({k, v, 0, ""});
    b.AddSample(locations.Of(st.pcs), {1}, labels);
  }
  for (const std::string& e : table.MapsErrors()) b.AddComment(e);
  return b.Finish();
}

namespace {

// The runtime's printArgs: argument words from the frame's argument area (spill slots of
// register arguments), as the compiler's FUNCDATA_ArgInfo program lists them; "?" after a
// value the liveness info says may be stale.
std::string GoFrameArgs(const GoImage& img, const GoFrame& fr, const GoPclntab::FuncInfo& fi,
                        MemoryReader* mem) {
  constexpr int kFuncdataArgInfo = 5, kFuncdataArgLiveInfo = 6, kPcdataArgLiveIndex = 3;
  const GoPclntab& pcln = img.bin->pcln();
  absl::string_view p = pcln.FuncData(fr.sym_pc, kFuncdataArgInfo);
  if (p.empty() || mem == nullptr || fr.argp == 0) return "";
  absl::string_view live = pcln.FuncData(fr.sym_pc, kFuncdataArgLiveInfo);
  const int32_t live_idx = pcln.PcDataAt(fr.sym_pc, kPcdataArgLiveIndex);
  const uint8_t start_offset = live.empty() ? 0xff : static_cast<uint8_t>(live[0]);
  auto is_live = [&](uint8_t off, uint8_t slot) {
    if (live.empty() || live_idx <= 0 || off < start_offset) return true;
    const size_t at = static_cast<size_t>(live_idx) + slot / 8;
    return at < live.size() && (static_cast<uint8_t>(live[at]) & (1 << (slot % 8))) != 0;
  };
  std::string out;
  bool start = true;
  auto comma = [&] {
    if (!start) out += ", ";
  };
  uint8_t slot = 0;
  for (size_t pi = 0; pi < p.size() && pi < 161;) {
    const uint8_t o = static_cast<uint8_t>(p[pi++]);
    if (o == 0xff) break;  // end
    if (o == 0xfe) {       // start aggregate
      comma();
      out += "{";
      start = true;
      continue;
    }
    if (o == 0xfd) {
      out += "}";
    } else if (o == 0xfc) {
      comma();
      out += "...";
    } else if (o == 0xfb) {
      comma();
      out += "_";
    } else {
      comma();
      if (pi >= p.size()) break;
      const uint8_t sz = static_cast<uint8_t>(p[pi++]);
      uint64_t x = 0;
      absl::StatusOr<uint64_t> w = mem->ReadU64(fr.argp + o);
      if (w.ok()) x = *w;
      if (sz < 8) x = x << (64 - sz * 8) >> (64 - sz * 8);
      absl::StrAppendFormat(&out, "0x%x", x);
      if (!is_live(o, slot)) out += "?";
      if (o >= start_offset) ++slot;
    }
    start = false;
  }
  return out;
}

void DumpHeader(const GoImage& img, const Goroutine& g, int64_t nanotime, std::string* out) {
  std::string status = img.bin->StatusString(g.status);
  const bool waiting = g.status == kGwaiting || (img.bin->minor() >= 26 && g.status == kGleaked);
  if (waiting && g.wait_reason != 0) status = img.bin->WaitReason(g.wait_reason);
  int64_t minutes = 0;
  if ((g.status == kGwaiting || g.status == kGsyscall) && g.wait_since != 0) {
    minutes = (nanotime - g.wait_since) / 60000000000;
  }
  absl::StrAppend(out, "goroutine ", g.goid, " [", status, g.scan ? " (scan)" : "");
  if (minutes >= 1) absl::StrAppend(out, ", ", minutes, " minutes");
  if (g.locked_to_thread) absl::StrAppend(out, ", locked to thread");
  absl::StrAppend(out, "]:\n");
}

void DumpCreator(const GoImage& img, const Goroutine& g, std::string* out) {
  absl::StatusOr<GoPclntab::FuncInfo> f = img.bin->pcln().LookupFunc(g.gopc);
  if (!f.ok() || g.goid == 1) return;
  const std::string name = img.bin->pcln().PrintName(f->name);
  if (!GoShowFrame(name, false)) return;
  absl::StrAppend(out, "created by ", name);
  if (img.bin->minor() >= 21 && g.parent_goid != 0) {
    absl::StrAppend(out, " in goroutine ", g.parent_goid);
  }
  const uint64_t tracepc = g.gopc > f->entry ? g.gopc - 1 : g.gopc;
  absl::StatusOr<SourceLines> sl = img.bin->pcln().Symbolize(tracepc);
  absl::StrAppend(out, "\n\t", sl.ok() ? sl->front().file : "?", ":",
                  sl.ok() ? sl->front().line : 0);
  if (g.gopc > f->entry) absl::StrAppendFormat(out, " +0x%x", g.gopc - f->entry);
  absl::StrAppend(out, "\n");
}

}  // namespace

std::string GoroutineDump(const GoImage& img, const GoroutineSnapshot& snap,
                          MemoryReader* mem_for_args) {
  std::string out;
  std::vector<uint64_t> levels;
  bool first_g = true;
  for (const Goroutine& g : snap.goroutines) {
    if (g.system) continue;
    if (!first_g) out += "\n";
    first_g = false;
    DumpHeader(img, g, snap.nanotime, &out);
    if (g.frames.empty()) out += "\tgoroutine running on other thread; stack unavailable\n";
    int printed = 0;
    for (const GoFrame& fr : g.frames) {
      absl::StatusOr<SourceLines> lines = img.bin->pcln().SymbolizeLevels(fr.sym_pc, &levels);
      absl::StatusOr<GoPclntab::FuncInfo> fi = img.bin->pcln().LookupFunc(fr.sym_pc);
      if (!lines.ok() || !fi.ok()) continue;
      for (size_t i = 0; i < lines->size(); ++i) {
        const SourceLine& l = (*lines)[i];
        const bool inlined = i + 1 < lines->size();
        const std::string name = img.bin->pcln().PrintName(l.function);
        if (l.go_wrapper || !GoShowFrame(name, printed == 0)) continue;
        absl::StrAppend(&out, name, "(",
                        inlined ? "..." : GoFrameArgs(img, fr, *fi, mem_for_args), ")\n\t", l.file,
                        ":", l.line);
        const uint64_t pc = fr.pc - img.bias;
        if (!inlined && pc > fi->entry) absl::StrAppendFormat(&out, " +0x%x", pc - fi->entry);
        out += "\n";
        ++printed;
      }
    }
    DumpCreator(img, g, &out);
  }
  return out;
}

}  // namespace pprof_sidecar
