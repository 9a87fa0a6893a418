// AuditLog: records land with the batch, survive a restart, are read newest-last with filters, and the log
// keeps only the newest max_records.
#include "coordinator/audit.h"

#include <gtest/gtest.h>

#include "temp_store.h"

namespace anneal::coordinator {
namespace {

using testing::TempStore;

TEST(AuditLog, RecordsAreNumberedDurableAndFiltered) {
  TempStore t;
  {
    AuditLog log(t.batch(), t.store(), t.clock(), 100);
    ASSERT_TRUE(log.Recover().ok());
    log.Append({.user = "bob", .team = "nlp", .operation = "submit", .target = "job-000001", .message = "ok"},
               Status::Ok());
    t.clock()->Advance(5);
    log.Append({.user = "eve", .team = "nlp", .operation = "cancel", .target = "job-000001"},
               PermissionDeniedError("user 'eve' may not cancel jobs of team 'nlp'"));
    log.Append({.operation = "drain", .target = "(unauthenticated)"}, UnauthenticatedError("no token"));
    t.Commit();
  }
  t.Reopen();
  AuditLog log(t.batch(), t.store(), t.clock(), 100);
  ASSERT_TRUE(log.Recover().ok());
  EXPECT_EQ(log.next_seq(), 4u);
  auto all = log.Read(0, 0, "", "");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].seq(), 1u);
  EXPECT_EQ((*all)[0].user(), "bob");
  EXPECT_EQ((*all)[0].result(), pb::OK);
  EXPECT_EQ((*all)[1].result(), pb::PERMISSION_DENIED);
  EXPECT_EQ((*all)[1].message(), "user 'eve' may not cancel jobs of team 'nlp'");
  EXPECT_EQ((*all)[1].time_ms(), (*all)[0].time_ms() + 5);
  EXPECT_EQ((*all)[2].user(), "");
  auto eve = log.Read(0, 0, "eve", "");
  ASSERT_EQ(eve->size(), 1u);
  EXPECT_EQ(eve->front().operation(), "cancel");
  EXPECT_EQ(log.Read(0, 0, "", "nlp")->size(), 2u);
  auto before = log.Read(3, 1, "", "");
  ASSERT_EQ(before->size(), 1u);
  EXPECT_EQ(before->front().seq(), 2u);  // the newest before seq 3
}

TEST(AuditLog, KeepsOnlyTheNewestMaxRecordsAndBoundsText) {
  TempStore t;
  AuditLog log(t.batch(), t.store(), t.clock(), 3);
  ASSERT_TRUE(log.Recover().ok());
  for (int i = 0; i < 5; ++i)
    log.Append({.user = "u", .operation = "submit", .target = std::string(10000, 'x')}, Status::Ok());
  t.Commit();
  auto all = log.Read(0, 100, "", "");
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(all->front().seq(), 3u);
  EXPECT_LT(all->front().target().size(), 300u);
  // After a restart the oldest kept record is known again: the next appends keep trimming.
  t.Reopen();
  AuditLog again(t.batch(), t.store(), t.clock(), 3);
  ASSERT_TRUE(again.Recover().ok());
  again.Append({.user = "u", .operation = "cancel"}, Status::Ok());
  t.Commit();
  auto after = again.Read(0, 100, "", "");
  ASSERT_EQ(after->size(), 3u);
  EXPECT_EQ(after->front().seq(), 4u);
  EXPECT_EQ(after->back().seq(), 6u);
}

}  // namespace
}  // namespace anneal::coordinator
