// Cron: the 5-field cron expressions of schedules (coordinator/schedules.h) and their fire times in a time zone.
//
// Syntax (Vixie cron's, as crontab(5) describes it):
//   minute hour day-of-month month day-of-week       e.g. "0 3 * * 1" (Mondays at 03:00)
//   field          values    names
//   minute         0-59
//   hour           0-23
//   day-of-month   1-31
//   month          1-12      JAN-DEC
//   day-of-week    0-7       SUN-SAT (0 and 7 are both Sunday)
// Each field is `*` or a comma list of items; an item is a value, a range `a-b` (a <= b), or either followed by
// `/step` (`*/15`, `10-40/10`; `5/20` means 5-max/20). Names are case-insensitive and work in ranges (MON-FRI).
// Macros: @yearly (= @annually) "0 0 1 1 *", @monthly "0 0 1 * *", @weekly "0 0 * * 0", @daily (= @midnight)
// "0 0 * * *", @hourly "0 * * * *". (@reboot means nothing to a coordinator and is refused.)
// Vixie's day rule: when both day-of-month and day-of-week are restricted (neither field starts with `*`), a
// day matches if EITHER matches ("0 0 1 * MON": the 1st and every Monday); otherwise both must match. As in
// Vixie cron, a field starting with `*` (also `*/2`) counts as unrestricted for this rule.
// An expression that never matches a real date ("0 0 30 2 *") parses; it simply has no fire times.
//
// Time zones are IANA names ("Europe/Berlin"; "" means UTC) read from the system's /usr/share/zoneinfo
// (Howard Hinnant's date/tz.h, Debian's libhowardhinnant-date-dev built with USE_OS_TZDB).
// Daylight-saving changes (what Vixie cron does for jobs at a fixed time):
//   - spring forward: a local time that does not exist (02:30 on the day Berlin jumps 02:00 -> 03:00) fires
//     once, at the first valid instant after the gap (03:00 local); several such times fire once together.
//   - fall back: a local time that occurs twice (02:30 on the day Berlin goes 03:00 -> 02:00) fires once, at
//     its first occurrence; the repeated hour fires nothing more.
// So every fire time is a distinct instant and the list is strictly increasing.
//
// Errors name the field and the token: "cron field 3 (day-of-month) of '0 0 32 * *': 32 is out of range 1-31".
//
// Thread-safety: pure functions; the zone database is loaded once, thread-safely, on first use.
//
// Example:
//   ASSIGN_OR_RETURN(CronExpression cron, ParseCron("0 3 * * MON"));
//   ASSIGN_OR_RETURN(std::vector<int64_t> next, NextFireTimes(cron, "Europe/Berlin", clock.NowMs(), 5));
#pragma once

#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::coordinator {

struct CronExpression {
  std::string text;                // as given (trimmed)
  std::bitset<60> minutes;         // 0-59
  std::bitset<24> hours;           // 0-23
  std::bitset<32> days_of_month;   // 1-31 (bit 0 unused)
  std::bitset<13> months;          // 1-12 (bit 0 unused)
  std::bitset<7> days_of_week;     // 0-6, Sunday = 0 (7 folded onto 0)
  bool day_of_month_star = false;  // the field started with '*' (Vixie's day rule)
  bool day_of_week_star = false;
};

// Parses one expression (5 fields or a macro). INVALID_ARGUMENT naming the field and the token otherwise.
StatusOr<CronExpression> ParseCron(std::string_view text);

// OK when `tz` names a zone of the system's database ("" is UTC); INVALID_ARGUMENT naming it otherwise.
Status CheckTimeZone(const std::string& tz);

// Whether the expression matches the local calendar day (year, month 1-12, day 1-31, weekday 0-6 Sunday=0).
bool MatchesDay(const CronExpression& cron, unsigned month, unsigned day, unsigned weekday);

// The first `n` fire instants strictly after `after_ms` (Unix ms; each a whole minute), in `tz`, strictly
// increasing, with the DST rules above. Fewer than `n` when the expression matches nothing within the next
// 28 years (the Gregorian weekday cycle: "0 0 29 2 MON" still finds its leap-year Mondays). INVALID_ARGUMENT
// for an unknown zone.
StatusOr<std::vector<int64_t>> NextFireTimes(const CronExpression& cron, const std::string& tz, int64_t after_ms,
                                             size_t n);

// The fire instants in (after_ms, until_ms]: how many, the first and the last (count 0: none; then first/last
// are 0). Used for the fires a schedule missed while the coordinator was down. INVALID_ARGUMENT for an unknown
// zone.
struct FireWindow {
  uint64_t count = 0;
  int64_t first_ms = 0;
  int64_t last_ms = 0;
};
StatusOr<FireWindow> FiresBetween(const CronExpression& cron, const std::string& tz, int64_t after_ms,
                                  int64_t until_ms);

}  // namespace anneal::coordinator
