// The cron table: expressions (ranges, steps, lists, names, macros, Vixie's day rule) and their fire times in
// UTC, Europe/Berlin and America/New_York, across both DST changes of 2026; and every parse refusal.
#include "coordinator/cron.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

namespace anneal::coordinator {
namespace {

// "2026-03-29T01:00" (UTC) -> Unix ms.
int64_t Utc(const std::string& text) {
  std::tm tm{};
  int year = 0, month = 0, day = 0, hour = 0, minute = 0;
  EXPECT_EQ(std::sscanf(text.c_str(), "%d-%d-%dT%d:%d", &year, &month, &day, &hour, &minute), 5) << text;
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

std::string Iso(int64_t ms) {
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M", &tm);
  return buffer;
}

struct Row {
  const char* expression;
  const char* tz;
  const char* after;                  // UTC
  std::vector<std::string> expected;  // UTC, the next fire times in order
};

class CronTable : public ::testing::TestWithParam<Row> {};

TEST_P(CronTable, NextFireTimesMatchTheTable) {
  const Row& row = GetParam();
  auto cron = ParseCron(row.expression);
  ASSERT_TRUE(cron.ok()) << cron.status().ToString();
  auto times = NextFireTimes(*cron, row.tz, Utc(row.after), row.expected.size() + (row.expected.empty() ? 1 : 0));
  ASSERT_TRUE(times.ok()) << times.status().ToString();
  std::vector<std::string> got;
  for (int64_t ms : *times) got.push_back(Iso(ms));
  EXPECT_EQ(got, row.expected) << row.expression << " in " << row.tz << " after " << row.after;
}

const Row kRows[] = {
    // 2026-01-01 is a Thursday.
    {"0 3 * * 1", "", "2026-01-01T00:00", {"2026-01-05T03:00", "2026-01-12T03:00", "2026-01-19T03:00"}},
    {"*/15 * * * *",
     "UTC",
     "2026-01-01T00:07",
     {"2026-01-01T00:15", "2026-01-01T00:30", "2026-01-01T00:45", "2026-01-01T01:00"}},
    {"10-40/10 9 * * *",
     "UTC",
     "2026-01-01T09:10",
     {"2026-01-01T09:20", "2026-01-01T09:30", "2026-01-01T09:40", "2026-01-02T09:10"}},
    {"50/5 23 * * *", "UTC", "2026-01-01T00:00", {"2026-01-01T23:50", "2026-01-01T23:55", "2026-01-02T23:50"}},
    {"0 0 1,15 * *", "UTC", "2026-01-01T00:00", {"2026-01-15T00:00", "2026-02-01T00:00", "2026-02-15T00:00"}},
    {"0 12 * jan-Mar mon-FRI", "UTC", "2026-03-31T12:00", {"2027-01-01T12:00", "2027-01-04T12:00"}},
    {"0 0 * * 7", "UTC", "2026-01-01T00:00", {"2026-01-04T00:00", "2026-01-11T00:00"}},
    {"0 0 * * SUN", "UTC", "2026-01-01T00:00", {"2026-01-04T00:00", "2026-01-11T00:00"}},
    {"0 0 * * 5-7",
     "UTC",
     "2026-01-01T00:00",
     {"2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00", "2026-01-09T00:00"}},
    // Vixie's day rule: both restricted -> either matches (the 1st OR a Monday); 2026-02-01 is a Sunday.
    {"0 0 1 * MON",
     "UTC",
     "2026-02-01T00:00",
     {"2026-02-02T00:00", "2026-02-09T00:00", "2026-02-16T00:00", "2026-02-23T00:00", "2026-03-01T00:00",
      "2026-03-02T00:00"}},
    // ... but a field starting with '*' is unrestricted: odd days that are Mondays.
    {"0 0 */2 * MON",
     "UTC",
     "2026-02-01T00:00",
     {"2026-02-09T00:00", "2026-02-23T00:00", "2026-03-09T00:00", "2026-03-23T00:00", "2026-04-13T00:00"}},
    {"@hourly", "UTC", "2026-01-01T00:00", {"2026-01-01T01:00", "2026-01-01T02:00"}},
    {"@daily", "UTC", "2026-01-01T00:00", {"2026-01-02T00:00", "2026-01-03T00:00"}},
    {"@midnight", "UTC", "2026-01-01T00:00", {"2026-01-02T00:00"}},
    {"@weekly", "UTC", "2026-01-01T00:00", {"2026-01-04T00:00", "2026-01-11T00:00"}},
    {"@monthly", "UTC", "2026-01-01T00:00", {"2026-02-01T00:00", "2026-03-01T00:00"}},
    {"@yearly", "UTC", "2026-01-01T00:00", {"2027-01-01T00:00", "2028-01-01T00:00"}},
    {"@annually", "UTC", "2026-06-01T00:00", {"2027-01-01T00:00"}},
    {"0 0 29 2 *", "UTC", "2026-01-01T00:00", {"2028-02-29T00:00", "2032-02-29T00:00"}},
    {"0 0 30 2 *", "UTC", "2026-01-01T00:00", {}},  // never: no fire time at all
    // Strictly after: a fire time equal to `after` is not returned.
    {"0 3 * * *", "UTC", "2026-01-01T03:00", {"2026-01-02T03:00"}},
    // Europe/Berlin winter (UTC+1) and summer (UTC+2).
    {"0 3 * * 1", "Europe/Berlin", "2026-01-01T00:00", {"2026-01-05T02:00", "2026-01-12T02:00"}},
    {"0 3 * * 1", "Europe/Berlin", "2026-07-01T00:00", {"2026-07-06T01:00"}},
    // Spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC): 02:30 does not exist, fires once at 03:00.
    {"30 2 * * *", "Europe/Berlin", "2026-03-27T12:00", {"2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"}},
    // ... and the gap's times fire once together with 03:00 itself.
    {"*/30 * * * *", "Europe/Berlin", "2026-03-29T00:00", {"2026-03-29T00:30", "2026-03-29T01:00", "2026-03-29T01:30"}},
    // Fall back 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC): 02:30 occurs twice, fires once (the first).
    {"30 2 * * *", "Europe/Berlin", "2026-10-24T12:00", {"2026-10-25T00:30", "2026-10-26T01:30"}},
    {"*/30 * * * *", "Europe/Berlin", "2026-10-25T00:00", {"2026-10-25T00:30", "2026-10-25T02:00", "2026-10-25T02:30"}},
    // America/New_York: spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
    {"30 2 * * *", "America/New_York", "2026-03-07T12:00", {"2026-03-08T07:00", "2026-03-09T06:30"}},
    // Fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC): 01:30 fires once, at 01:30 EDT.
    {"30 1 * * *", "America/New_York", "2026-10-31T12:00", {"2026-11-01T05:30", "2026-11-02T06:30"}},
    {"0 * * * *", "America/New_York", "2026-11-01T04:30", {"2026-11-01T05:00", "2026-11-01T07:00", "2026-11-01T08:00"}},
};

INSTANTIATE_TEST_SUITE_P(Expressions, CronTable, ::testing::ValuesIn(kRows));

struct Refusal {
  const char* expression;
  std::vector<std::string> mentions;  // what the error must name
};

class CronRefusals : public ::testing::TestWithParam<Refusal> {};

TEST_P(CronRefusals, ErrorNamesTheFieldAndTheToken) {
  const Refusal& row = GetParam();
  auto cron = ParseCron(row.expression);
  ASSERT_FALSE(cron.ok()) << row.expression;
  EXPECT_EQ(cron.status().code(), StatusCode::kInvalidArgument);
  for (const auto& text : row.mentions) {
    EXPECT_NE(cron.status().message().find(text), std::string::npos)
        << "'" << cron.status().message() << "' does not mention '" << text << "'";
  }
}

const Refusal kRefusals[] = {
    {"0 3 * *", {"4 field(s)", "expected 5", "minute hour day-of-month month day-of-week"}},
    {"0 3 * * * *", {"6 field(s)"}},
    {"", {"0 field(s)"}},
    {"60 * * * *", {"field 1 (minute)", "'60'", "out of range 0-59"}},
    {"0 24 * * *", {"field 2 (hour)", "'24'", "0-23"}},
    {"0 0 32 * *", {"field 3 (day-of-month)", "'32'", "1-31"}},
    {"0 0 0 * *", {"field 3 (day-of-month)", "'0'"}},
    {"0 0 * 13 *", {"field 4 (month)", "'13'", "1-12"}},
    {"0 0 * FOO *", {"field 4 (month)", "'FOO'", "not a name", "JAN"}},
    {"0 0 * * 8", {"field 5 (day-of-week)", "'8'", "0-7"}},
    {"0 0 * * MONDAY", {"field 5 (day-of-week)", "'MONDAY'", "SUN"}},
    {"*/0 * * * *", {"field 1 (minute)", "'*/0'", "step"}},
    {"*/x * * * *", {"field 1 (minute)", "'*/x'", "step"}},
    {"5-1 * * * *", {"field 1 (minute)", "'5-1'", "end comes before its start"}},
    {"1,,2 * * * *", {"field 1 (minute)", "empty list item"}},
    {"a * * * *", {"field 1 (minute)", "'a'", "not a number"}},
    {"0 JAN * * *", {"field 2 (hour)", "'JAN'", "not a number"}},
    {"1- * * * *", {"field 1 (minute)", "empty value"}},
    {"@reboot", {"'@reboot'", "unknown macro"}},
};

INSTANTIATE_TEST_SUITE_P(Expressions, CronRefusals, ::testing::ValuesIn(kRefusals));

TEST(Cron, UnknownTimeZoneIsRefusedByName) {
  Status st = CheckTimeZone("Europe/Berln");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'Europe/Berln'"), std::string::npos) << st.message();
  auto cron = ParseCron("0 3 * * *");
  ASSERT_TRUE(cron.ok());
  EXPECT_EQ(NextFireTimes(*cron, "Mars/Olympus", 0, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckTimeZone("America/New_York").ok());
  EXPECT_TRUE(CheckTimeZone("").ok());  // UTC
}

TEST(Cron, FiresBetweenCountsTheWindow) {
  auto cron = ParseCron("* * * * *");
  ASSERT_TRUE(cron.ok());
  auto window = FiresBetween(*cron, "UTC", Utc("2026-01-01T00:00"), Utc("2026-01-01T00:10"));
  ASSERT_TRUE(window.ok());
  EXPECT_EQ(window->count, 10u);
  EXPECT_EQ(Iso(window->first_ms), "2026-01-01T00:01");
  EXPECT_EQ(Iso(window->last_ms), "2026-01-01T00:10");
  auto none = FiresBetween(*cron, "UTC", Utc("2026-01-01T00:00"), Utc("2026-01-01T00:00") + 59'000);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->count, 0u);
  // A week of downtime of an every-minute schedule: counted, not listed.
  auto week = FiresBetween(*cron, "Europe/Berlin", Utc("2026-03-25T00:00"), Utc("2026-04-01T00:00"));
  ASSERT_TRUE(week.ok());
  // Every real minute fires once: the 60 local minutes of the spring-forward gap collapse onto 03:00 CEST.
  EXPECT_EQ(week->count, 7u * 24 * 60);
}

TEST(Cron, MacroAndFieldsAgree) {
  auto macro = ParseCron("  @weekly ");
  auto fields = ParseCron("0 0 * * 0");
  ASSERT_TRUE(macro.ok() && fields.ok());
  EXPECT_EQ(macro->text, "@weekly");
  EXPECT_EQ(macro->minutes, fields->minutes);
  EXPECT_EQ(macro->days_of_week, fields->days_of_week);
  EXPECT_TRUE(macro->day_of_month_star);
}

}  // namespace
}  // namespace anneal::coordinator
