// Key encoding: big-endian numbers sort numerically; composite keys split back.
#include <gtest/gtest.h>

#include "storage/keys.h"

namespace anneal::storage {
namespace {

TEST(Keys, BigEndianNumbersSortNumerically) {
  EXPECT_LT(JobStepKey("job-1", 2), JobStepKey("job-1", 10));
  EXPECT_LT(JobStepKey("job-1", 255), JobStepKey("job-1", 256));
  EXPECT_LT(JobStepKey("job-1", 1ull << 40), JobStepKey("job-1", (1ull << 40) + 1));
}

TEST(Keys, JobStepKeyRoundTrips) {
  auto decoded = DecodeJobStepKey(JobStepKey("job-000042", 123456789));
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->first, "job-000042");
  EXPECT_EQ(decoded->second, 123456789u);
  EXPECT_FALSE(DecodeJobStepKey("short").has_value());
}

TEST(Keys, PrefixSeparatesIdsThatArePrefixesOfEachOther) {
  // "job-1" must not match keys of "job-10".
  const std::string key10 = JobStepKey("job-10", 1);
  EXPECT_NE(key10.compare(0, IdPrefix("job-1").size(), IdPrefix("job-1")), 0);
}

}  // namespace
}  // namespace anneal::storage
