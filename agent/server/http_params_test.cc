#include "agent/server/http_params.h"

#include "gtest/gtest.h"

namespace pprof_sidecar {
namespace {

TEST(ParseSymbolRequestTest, GoWireFormat) {
  EXPECT_EQ(ParseSymbolRequest("0x4a5b+0x10"), (std::vector<uint64_t>{0x4a5b, 0x10}));
  EXPECT_EQ(ParseSymbolRequest("4a5b+zz+0X1f+"), (std::vector<uint64_t>{0x4a5b, 0x1f}));
  EXPECT_TRUE(ParseSymbolRequest("").empty());
  EXPECT_TRUE(ParseSymbolRequest("0x+++").empty());
  EXPECT_TRUE(ParseSymbolRequest("0x10000000000000000").empty());  // overflows 64 bits
  std::string many;
  for (int i = 0; i < 100; ++i) many += "0x1+";
  EXPECT_EQ(ParseSymbolRequest(many, 7).size(), 7u);
}

}  // namespace
}  // namespace pprof_sidecar
