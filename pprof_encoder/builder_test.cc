#include "pprof_encoder/builder.h"

#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_encoder {
namespace {

using ::pprof_sidecar::testing::CommandResult;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::PprofSummary;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::SummarizeProfile;
using ::testing::HasSubstr;

constexpr int64_t kPeriod = 10'000'000;  // 100 Hz in ns

std::string WriteFile(const std::string& dir, const std::string& name, const std::string& data) {
  std::string path = dir + "/" + name;
  std::ofstream f(path, std::ios::binary);
  f.write(data.data(), data.size());
  f.close();
  EXPECT_TRUE(f.good()) << path;
  return path;
}

// A test model of one sample: frames (function names, leaf first, inlined frames expanded), the
// location ids to encode, and its sample count.
struct ModelSample {
  std::vector<uint64_t> locs;
  std::vector<std::string> frames;
  int64_t count;
  std::vector<Label> labels;
};

// Builds a CPU profile resembling what the agent emits: an executable mapping with symbolized,
// inlined Go-style frames and a libc mapping, samples with pid/thread labels.
class CpuProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    b_.AddSampleType("samples", "count");
    b_.AddSampleType("cpu", "nanoseconds");
    b_.SetDefaultSampleType("cpu");
    b_.SetPeriodType("cpu", "nanoseconds");
    b_.SetPeriod(kPeriod);
    b_.SetTimeNanos(1'700'000'000'000'000'000);
    b_.SetDurationNanos(2'000'000'000);
    b_.AddComment("pprof-sidecar test profile");

    MappingInfo exe;
    exe.memory_start = 0x400000;
    exe.memory_limit = 0x800000;
    exe.filename = "/app/server";
    exe.build_id = "abcdef0123";
    exe.has_functions = exe.has_filenames = exe.has_line_numbers = exe.has_inline_frames = true;
    exe_ = b_.AddMapping(exe);
    MappingInfo libc;
    libc.memory_start = 0x7f0000000000;
    libc.memory_limit = 0x7f0000200000;
    libc.file_offset = 0x28000;
    libc.filename = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    libc.has_functions = true;
    libc_ = b_.AddMapping(libc);

    // Location with two inlined frames on top of the physical function.
    hot_ = b_.AddLocation(exe_, 0x401000,
                          {{"main.hash", "", "/app/hash.go", 12, 10},
                           {"main.mix", "", "/app/hash.go", 30, 28},
                           {"main.worker", "", "/app/worker.go", 55, 50}});
    worker_ = b_.AddLocation(exe_, 0x402000, {{"main.worker", "", "/app/worker.go", 60, 50}});
    main_ = b_.AddLocation(exe_, 0x403000, {{"main.main", "", "/app/main.go", 20, 5}});
    write_ = b_.AddLocation(libc_, 0x7f0000010000, {{"__write", "", "", 0, 0}});
    syscall_ = b_.AddLocation(exe_, 0x404000,
                              {{"syscall.Write", "", "/go/src/syscall/syscall.go", 80, 75}});

    samples_ = {
        {{hot_, main_},
         {"main.hash", "main.mix", "main.worker", "main.main"},
         7,
         {{"thread", "worker-1"}}},
        {{hot_, main_},
         {"main.hash", "main.mix", "main.worker", "main.main"},
         3,
         {{"thread", "worker-2"}}},
        {{worker_, main_}, {"main.worker", "main.main"}, 4, {{"thread", "worker-1"}}},
        {{write_, syscall_, main_}, {"__write", "syscall.Write", "main.main"}, 5, {}},
        // Unwound only to the leaf: its root is the leaf itself.
        {{write_}, {"__write"}, 1, {}},
    };
    for (const ModelSample& s : samples_) {
      b_.AddSample(s.locs, {s.count, s.count * kPeriod}, s.labels);
    }
  }

  absl::StatusOr<PprofSummary> EncodeAndSummarize() {
    absl::StatusOr<std::string> gz = b_.Finish();
    if (!gz.ok()) return gz.status();
    path_ = WriteFile(MakeTempDir("enc"), "cpu.pb.gz", *gz);
    return SummarizeProfile(path_);
  }

  Builder b_;
  uint64_t exe_, libc_, hot_, worker_, main_, write_, syscall_;
  std::vector<ModelSample> samples_;
  std::string path_;
};

TEST_F(CpuProfileTest, RoundTripsThroughGooglePprof) {
  absl::StatusOr<PprofSummary> s = EncodeAndSummarize();
  ASSERT_TRUE(s.ok()) << s.status();

  ASSERT_EQ(s->sample_types.size(), 2u);
  EXPECT_EQ(s->sample_types[0].type, "samples");
  EXPECT_EQ(s->sample_types[0].unit, "count");
  EXPECT_EQ(s->sample_types[1].type, "cpu");
  EXPECT_EQ(s->sample_types[1].unit, "nanoseconds");
  EXPECT_EQ(s->default_sample_type, "cpu");
  EXPECT_EQ(s->period_type.type, "cpu");
  EXPECT_EQ(s->period_type.unit, "nanoseconds");
  EXPECT_EQ(s->period, kPeriod);
  EXPECT_EQ(s->time_nanos, 1'700'000'000'000'000'000);
  EXPECT_EQ(s->duration_nanos, 2'000'000'000);
  EXPECT_THAT(s->comments, ::testing::ElementsAre("pprof-sidecar test profile"));
  EXPECT_EQ(s->num_samples, static_cast<int64_t>(samples_.size()));
  EXPECT_EQ(s->num_locations, 5);

  // Expected aggregates computed from the model, independently of the encoder.
  int64_t total = 0;
  std::map<std::string, int64_t> flat, cum, roots;
  for (const ModelSample& m : samples_) {
    total += m.count;
    flat[m.frames.front()] += m.count;
    for (const std::string& f : std::set<std::string>(m.frames.begin(), m.frames.end())) {
      cum[f] += m.count;
    }
    roots[m.frames.back()] += m.count;
  }
  ASSERT_EQ(s->totals.size(), 2u);
  EXPECT_EQ(s->totals[0], total);
  EXPECT_EQ(s->totals[1], total * kPeriod);
  ASSERT_EQ(s->funcs.size(), cum.size());
  for (const auto& [name, c] : cum) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(s->funcs.count(name));
    const auto& st = s->funcs.at(name);
    EXPECT_EQ(st.cum, (std::vector<int64_t>{c, c * kPeriod}));
    EXPECT_EQ(st.flat, (std::vector<int64_t>{flat[name], flat[name] * kPeriod}));
  }
  EXPECT_EQ(s->roots, roots);
  EXPECT_EQ(s->funcs.at("main.mix").filename, "/app/hash.go");
  EXPECT_EQ(s->funcs.at("main.worker").filename, "/app/worker.go");

  // Inline frames keep their own lines; main.worker appears at two distinct lines.
  std::map<std::pair<std::string, int64_t>, int64_t> line_cum;
  for (const auto& l : s->lines) line_cum[{l.function, l.line}] = l.cum[0];
  EXPECT_EQ(line_cum[std::make_pair(std::string("main.hash"), int64_t{12})], 10);
  EXPECT_EQ(line_cum[std::make_pair(std::string("main.mix"), int64_t{30})], 10);
  EXPECT_EQ(line_cum[std::make_pair(std::string("main.worker"), int64_t{55})], 10);
  EXPECT_EQ(line_cum[std::make_pair(std::string("main.worker"), int64_t{60})], 4);
  EXPECT_EQ(s->inline_locations, 1);
  EXPECT_DOUBLE_EQ(s->lines_fraction, 4.0 / 5.0);  // __write has no line
  EXPECT_EQ(s->unsymbolized_locations, 0);

  ASSERT_EQ(s->mappings.size(), 2u);
  EXPECT_EQ(s->mappings[0].start, 0x400000u);
  EXPECT_EQ(s->mappings[0].limit, 0x800000u);
  EXPECT_EQ(s->mappings[0].file, "/app/server");
  EXPECT_EQ(s->mappings[0].build_id, "abcdef0123");
  EXPECT_TRUE(s->mappings[0].has_functions);
  EXPECT_TRUE(s->mappings[0].has_line_numbers);
  EXPECT_EQ(s->mappings[1].offset, 0x28000u);
  EXPECT_FALSE(s->mappings[1].has_line_numbers);

  // String labels survive and are attributed to the right samples.
  EXPECT_EQ((s->labels[{"thread", "worker-1"}]), 11);
  EXPECT_EQ((s->labels[{"thread", "worker-2"}]), 3);

  EXPECT_DOUBLE_EQ(pprof_sidecar::testing::FlatShare(*s, "main.hash"), 10.0 / total);
  EXPECT_DOUBLE_EQ(pprof_sidecar::testing::CumShare(*s, "main.worker"), 14.0 / total);
  EXPECT_DOUBLE_EQ(pprof_sidecar::testing::CumShare(*s, "main."), 19.0 / total);
  EXPECT_DOUBLE_EQ(pprof_sidecar::testing::FlatShare(*s, "__write", 1), 6.0 / total);
}

TEST_F(CpuProfileTest, NumericLabelsRoundTrip) {
  b_.AddSample({main_}, {2, 2 * kPeriod}, {{"pid", "", 4242, ""}, {"bytes", "", 512, "bytes"}});
  absl::StatusOr<PprofSummary> s = EncodeAndSummarize();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((s->num_labels[std::make_tuple(std::string("pid"), int64_t{4242}, std::string())]), 2);
  EXPECT_EQ(
      (s->num_labels[std::make_tuple(std::string("bytes"), int64_t{512}, std::string("bytes"))]),
      2);
}

std::string GoPprof(const std::string& args) {
  std::string tmp = MakeTempDir("pproftmp");
  return absl::StrCat("HOME='", tmp, "' PPROF_TMPDIR='", tmp, "' GOCACHE='", tmp,
                      "/cache' /usr/bin/go tool pprof ", args);
}

TEST_F(CpuProfileTest, GoToolPprofRawAndTopReadIt) {
  ASSERT_TRUE(EncodeAndSummarize().ok());

  CommandResult raw = RunCommand(GoPprof("-raw '" + path_ + "'"));
  ASSERT_EQ(raw.exit_code, 0) << raw.output;
  EXPECT_THAT(raw.output, HasSubstr("samples/count cpu/nanoseconds"));
  for (const char* fn :
       {"main.hash", "main.mix", "main.worker", "main.main", "__write", "syscall.Write"}) {
    EXPECT_THAT(raw.output, HasSubstr(fn));
  }
  EXPECT_THAT(raw.output, HasSubstr("/app/hash.go:12"));
  EXPECT_THAT(raw.output, HasSubstr("/app/server"));

  CommandResult top = RunCommand(GoPprof("-top -nodecount=20 '" + path_ + "'"));
  ASSERT_EQ(top.exit_code, 0) << top.output;
  // Default sample type is cpu: 20 samples * 10ms = 200ms total; main.hash is 10 samples = 50%.
  EXPECT_THAT(top.output, HasSubstr("Total samples = 200ms"));
  std::vector<std::string> lines = absl::StrSplit(top.output, '\n');
  std::string hash_line;
  for (const auto& l : lines) {
    if (absl::StrContains(l, "main.hash")) hash_line = l;
  }
  EXPECT_THAT(hash_line, HasSubstr("100ms 50.00%")) << top.output;
  // main.main is on every stack except the leaf-only one: cum 19 samples.
  std::string main_line;
  for (const auto& l : lines) {
    if (absl::StrContains(l, "main.main")) main_line = l;
  }
  EXPECT_THAT(main_line, HasSubstr("190ms 95.00%")) << top.output;
}

TEST_F(CpuProfileTest, FinishBytesDecodeToTheBuiltProfile) {
  absl::StatusOr<std::string> gz = b_.Finish();
  ASSERT_TRUE(gz.ok()) << gz.status();
  ASSERT_GE(gz->size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>((*gz)[0]), 0x1f);
  EXPECT_EQ(static_cast<uint8_t>((*gz)[1]), 0x8b);
  absl::StatusOr<std::string> raw = Gunzip(*gz);
  ASSERT_TRUE(raw.ok()) << raw.status();
  perftools::profiles::Profile p;
  ASSERT_TRUE(p.ParseFromString(*raw));
  EXPECT_EQ(p.SerializeAsString(), b_.profile().SerializeAsString());
}

TEST(BuilderDedupTest, Strings) {
  Builder b;
  ASSERT_GE(b.profile().string_table_size(), 1);
  EXPECT_EQ(b.profile().string_table(0), "");
  EXPECT_EQ(b.StringId(""), 0);
  int64_t a = b.StringId("alpha");
  EXPECT_NE(a, 0);
  EXPECT_EQ(b.StringId(std::string("alp") + "ha"), a);
  EXPECT_NE(b.StringId("beta"), a);
  EXPECT_EQ(b.profile().string_table(a), "alpha");
  EXPECT_EQ(b.profile().string_table_size(), 3);
}

TEST(BuilderDedupTest, FunctionsLocationsMappings) {
  Builder b;
  uint64_t f1 = b.AddFunction("f", "f", "a.go", 1);
  EXPECT_NE(f1, 0u);
  EXPECT_EQ(b.AddFunction("f", "f", "a.go", 1), f1);
  EXPECT_NE(b.AddFunction("f", "f", "a.go", 2), f1);
  EXPECT_NE(b.AddFunction("f", "f", "b.go", 1), f1);
  EXPECT_EQ(b.profile().function_size(), 3);

  MappingInfo m;
  m.memory_start = 0x1000;
  m.memory_limit = 0x2000;
  m.filename = "/bin/x";
  uint64_t m1 = b.AddMapping(m);
  EXPECT_NE(m1, 0u);
  EXPECT_EQ(b.AddMapping(m), m1);
  m.build_id = "bid";
  EXPECT_NE(b.AddMapping(m), m1);
  EXPECT_EQ(b.profile().mapping_size(), 2);

  std::vector<LineInfo> lines = {{"g", "", "a.go", 5, 1}, {"f", "f", "a.go", 10, 1}};
  uint64_t l1 = b.AddLocation(m1, 0x1100, lines);
  EXPECT_NE(l1, 0u);
  EXPECT_EQ(b.AddLocation(m1, 0x1100, lines), l1);
  EXPECT_NE(b.AddLocation(m1, 0x1104, lines), l1);
  lines[0].line = 6;
  EXPECT_NE(b.AddLocation(m1, 0x1100, lines), l1);
  EXPECT_EQ(b.profile().location_size(), 3);
  // Line "f" with system_name "f" and start line 1 is the function added first.
  EXPECT_EQ(b.profile().location(0).line(1).function_id(), b.AddFunction("f", "f", "a.go", 1));
  // Empty system_name means "same as the display name".
  EXPECT_EQ(b.profile().location(0).line(0).function_id(), b.AddFunction("g", "g", "a.go", 1));
  // The two mappings differing only in build id cover the same range: that is not a valid profile.
  EXPECT_THAT(std::string(b.CheckValid().message()), HasSubstr("overlap"));
}

TEST(BuilderDedupTest, SamplesWithSameStackAndLabelsMerge) {
  Builder b;
  b.AddSampleType("samples", "count");
  b.AddSampleType("cpu", "nanoseconds");
  uint64_t l1 = b.AddLocation(0, 0x10, {{"f", "", "a.c", 1, 1}});
  uint64_t l2 = b.AddLocation(0, 0x20, {{"g", "", "a.c", 2, 2}});
  b.AddSample({l1, l2}, {1, 10});
  b.AddSample({l1, l2}, {2, 20});
  EXPECT_EQ(b.profile().sample_size(), 1);
  EXPECT_THAT(b.profile().sample(0).value(), ::testing::ElementsAre(3, 30));
  b.AddSample({l2, l1}, {1, 10});  // different order: different stack
  EXPECT_EQ(b.profile().sample_size(), 2);
  b.AddSample({l1, l2}, {1, 10}, {{"k", "v"}, {"n", "", 5, "bytes"}});
  b.AddSample({l1, l2}, {1, 10}, {{"n", "", 5, "bytes"}, {"k", "v"}});  // same set of labels
  EXPECT_EQ(b.profile().sample_size(), 3);
  EXPECT_THAT(b.profile().sample(2).value(), ::testing::ElementsAre(2, 20));
  b.AddSample({l1, l2}, {1, 10}, {{"k", "w"}});
  b.AddSample({l1, l2}, {1, 10}, {{"n", "", 6, "bytes"}});
  EXPECT_EQ(b.profile().sample_size(), 5);
  EXPECT_TRUE(b.CheckValid().ok()) << b.CheckValid();
}

TEST(BuilderDedupTest, CopiesAreIndependent) {
  Builder a;
  a.AddSampleType("samples", "count");
  uint64_t l = a.AddLocation(0, 0x10, {{"f", "", "a.c", 1, 1}});
  a.AddSample({l}, {1});
  Builder b = a;
  b.AddSample({l}, {5});
  const int64_t n = a.profile().string_table_size();
  EXPECT_EQ(b.StringId("only-in-b"), n);
  EXPECT_EQ(a.StringId("only-in-a"), n);  // a's table did not see b's string
  EXPECT_EQ(a.profile().string_table(n), "only-in-a");
  EXPECT_EQ(b.profile().string_table(n), "only-in-b");
  EXPECT_THAT(a.profile().sample(0).value(), ::testing::ElementsAre(1));
  EXPECT_THAT(b.profile().sample(0).value(), ::testing::ElementsAre(6));
}

// Writes the builder's raw (unvalidated) profile and reports whether google/pprof accepts it.
bool GooglePprofAccepts(const Builder& b) {
  auto gz = Gzip(b.profile().SerializeAsString());
  EXPECT_TRUE(gz.ok());
  std::string path = WriteFile(MakeTempDir("enc-neg"), "p.pb.gz", *gz);
  return SummarizeProfile(path).ok();
}

Builder MinimalValid() {
  Builder b;
  b.AddSampleType("samples", "count");
  MappingInfo m;
  m.memory_start = 0x1000;
  m.memory_limit = 0x2000;
  m.filename = "/bin/x";
  uint64_t mid = b.AddMapping(m);
  uint64_t l = b.AddLocation(mid, 0x1010, {{"f", "", "x.c", 3, 1}});
  b.AddSample({l}, {1});
  return b;
}

TEST(BuilderCheckValidTest, MinimalIsValidForUsAndGooglePprof) {
  Builder b = MinimalValid();
  EXPECT_TRUE(b.CheckValid().ok()) << b.CheckValid();
  EXPECT_TRUE(GooglePprofAccepts(b));
  EXPECT_TRUE(b.Finish().ok());
}

TEST(BuilderCheckValidTest, WrongValueCount) {
  Builder b = MinimalValid();
  b.AddSample({1}, {1, 2});
  absl::Status st = b.CheckValid();
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("values"));
  EXPECT_FALSE(b.Finish().ok());
  EXPECT_FALSE(GooglePprofAccepts(b));  // the reference implementation agrees
}

TEST(BuilderCheckValidTest, WrongValueCountOnMergedStack) {
  Builder b = MinimalValid();
  b.AddSample({1}, {});  // same stack as the existing sample, but no values
  EXPECT_FALSE(b.CheckValid().ok());
}

TEST(BuilderCheckValidTest, OverlappingMappings) {
  Builder b = MinimalValid();
  MappingInfo m;
  m.memory_start = 0x1800;
  m.memory_limit = 0x3000;
  m.filename = "/lib/y.so";
  b.AddMapping(m);
  absl::Status st = b.CheckValid();
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("overlap"));
  EXPECT_FALSE(b.Finish().ok());
}

TEST(BuilderCheckValidTest, AdjacentMappingsAreFine) {
  Builder b = MinimalValid();
  MappingInfo m;
  m.memory_start = 0x2000;
  m.memory_limit = 0x3000;
  m.filename = "/lib/y.so";
  b.AddMapping(m);
  EXPECT_TRUE(b.CheckValid().ok()) << b.CheckValid();
}

TEST(BuilderCheckValidTest, UnknownReferences) {
  {
    Builder b = MinimalValid();
    b.AddSample({99}, {1});
    EXPECT_FALSE(b.CheckValid().ok());
  }
  {
    Builder b = MinimalValid();
    b.AddLocation(7, 0x1010, {});
    EXPECT_FALSE(b.CheckValid().ok());
  }
  {
    Builder b = MinimalValid();
    b.AddLocation(1, 0x5000, {});  // outside mapping 1
    EXPECT_FALSE(b.CheckValid().ok());
  }
}

TEST(BuilderCheckValidTest, DefaultSampleTypeMustExist) {
  Builder b = MinimalValid();
  b.SetDefaultSampleType("cpu");
  EXPECT_FALSE(b.CheckValid().ok());
  b.SetDefaultSampleType("samples");
  EXPECT_TRUE(b.CheckValid().ok()) << b.CheckValid();
}

TEST(BuilderCheckValidTest, SamplesWithoutTypes) {
  Builder b;
  uint64_t l = b.AddLocation(0, 0x10, {{"f", "", "", 0, 0}});
  b.AddSample({l}, {});
  EXPECT_FALSE(b.CheckValid().ok());
}

TEST(GzipTest, RoundTripsAndInteroperatesWithGzipTool) {
  std::mt19937_64 rng(42);
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>("abcde"[rng() % 5]);
  for (const std::string& in : {std::string(), std::string("x"), big}) {
    absl::StatusOr<std::string> gz = Gzip(in);
    ASSERT_TRUE(gz.ok()) << gz.status();
    absl::StatusOr<std::string> back = Gunzip(*gz);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, in);
  }
  if (big.size() > 1000) {
    absl::StatusOr<std::string> gz = Gzip(big);
    ASSERT_TRUE(gz.ok());
    EXPECT_LT(gz->size(), big.size() / 2);

    // Our gzip is readable by gzip(1), and gzip(1)'s output by Gunzip.
    std::string dir = MakeTempDir("gz");
    WriteFile(dir, "ours.gz", *gz);
    WriteFile(dir, "plain", big);
    CommandResult r = RunCommand("gzip -dc '" + dir + "/ours.gz' | cmp - '" + dir + "/plain'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = RunCommand("gzip -9 -c '" + dir + "/plain' > '" + dir + "/theirs.gz'");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::ifstream f(dir + "/theirs.gz", std::ios::binary);
    std::string theirs((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    absl::StatusOr<std::string> back = Gunzip(theirs);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, big);
  }
}

TEST(GzipTest, RejectsCorruptInput) {
  absl::StatusOr<std::string> gz = Gzip("hello hello hello hello");
  ASSERT_TRUE(gz.ok());
  EXPECT_FALSE(Gunzip("").ok());
  EXPECT_FALSE(Gunzip("not gzip at all").ok());
  EXPECT_FALSE(Gunzip(gz->substr(0, gz->size() - 6)).ok());  // truncated
  std::string flipped = *gz;
  flipped[flipped.size() - 5] ^= 0x55;  // CRC/length trailer corrupted
  EXPECT_FALSE(Gunzip(flipped).ok());
}

}  // namespace
}  // namespace pprof_encoder
