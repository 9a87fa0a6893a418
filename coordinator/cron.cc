// The cron parser and the fire-time walk over local calendar days (coordinator/cron.h).
#include "coordinator/cron.h"

#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>

namespace anneal::coordinator {
namespace {

struct FieldSpec {
  const char* name;
  int min;
  int max;
  const std::vector<std::string>* names;  // names[i] stands for min + i (nullptr: numbers only)
};

const std::vector<std::string> kMonthNames = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                              "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
const std::vector<std::string> kDayNames = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

const std::array<FieldSpec, 5> kFields = {{
    {"minute", 0, 59, nullptr},
    {"hour", 0, 23, nullptr},
    {"day-of-month", 1, 31, nullptr},
    {"month", 1, 12, &kMonthNames},
    {"day-of-week", 0, 7, &kDayNames},
}};

std::vector<std::string_view> SplitOn(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == sep) {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

std::vector<std::string_view> SplitWhitespace(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t start = i;
    while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i > start) parts.push_back(text.substr(start, i - start));
  }
  return parts;
}

class FieldParser {
 public:
  FieldParser(int index, std::string_view expression) : spec_(kFields[index]), index_(index), expr_(expression) {}

  // Sets bit v for every value the field names.
  Status Parse(std::string_view field, std::vector<bool>& bits) const {
    for (std::string_view item : SplitOn(field, ',')) RETURN_IF_ERROR(ParseItem(item, bits));
    return Status::Ok();
  }

 private:
  Status Error(std::string_view token, const std::string& why) const {
    return InvalidArgumentError(
        fmt::format("cron field {} ({}) of '{}': '{}' {}", index_ + 1, spec_.name, expr_, token, why));
  }

  StatusOr<int> Value(std::string_view token, std::string_view item) const {
    if (token.empty()) return Error(item, "has an empty value");
    if (spec_.names != nullptr && std::isalpha(static_cast<unsigned char>(token[0]))) {
      std::string upper(token);
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      for (size_t i = 0; i < spec_.names->size(); ++i) {
        if ((*spec_.names)[i] == upper) return spec_.min + static_cast<int>(i);
      }
      return Error(token, fmt::format("is not a name of this field (names: {})", fmt::join(*spec_.names, " ")));
    }
    int value = 0;
    auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
    if (ec != std::errc() || end != token.data() + token.size()) return Error(token, "is not a number");
    if (value < spec_.min || value > spec_.max) {
      return Error(token, fmt::format("is out of range {}-{}", spec_.min, spec_.max));
    }
    return value;
  }

  Status ParseItem(std::string_view item, std::vector<bool>& bits) const {
    if (item.empty()) return Error(item, "is an empty list item");
    std::string_view range = item;
    int step = 1;
    bool has_step = false;
    if (size_t slash = item.find('/'); slash != std::string_view::npos) {
      range = item.substr(0, slash);
      std::string_view step_text = item.substr(slash + 1);
      auto [end, ec] = std::from_chars(step_text.data(), step_text.data() + step_text.size(), step);
      if (ec != std::errc() || end != step_text.data() + step_text.size() || step_text.empty()) {
        return Error(item, "has a step that is not a number");
      }
      if (step < 1 || step > spec_.max) return Error(item, fmt::format("has a step outside 1-{}", spec_.max));
      has_step = true;
    }
    int first = spec_.min;
    int last = spec_.max;
    if (range != "*") {
      size_t dash = range.find('-');
      ASSIGN_OR_RETURN(first, Value(range.substr(0, dash), item));
      if (dash != std::string_view::npos) {
        ASSIGN_OR_RETURN(last, Value(range.substr(dash + 1), item));
        if (last < first) return Error(item, "is a range whose end comes before its start");
      } else {
        last = has_step ? spec_.max : first;  // "5/20": from 5 to the maximum
      }
    }
    for (int v = first; v <= last; v += step) bits[static_cast<size_t>(v)] = true;
    return Status::Ok();
  }

  const FieldSpec& spec_;
  int index_;
  std::string_view expr_;
};

std::string_view Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

std::optional<std::string_view> ExpandMacro(std::string_view text) {
  static const std::array<std::pair<std::string_view, std::string_view>, 7> kMacros = {{
      {"@yearly", "0 0 1 1 *"},
      {"@annually", "0 0 1 1 *"},
      {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},
      {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"},
  }};
  for (const auto& [name, expansion] : kMacros) {
    if (text == name) return expansion;
  }
  return std::nullopt;
}

StatusOr<const date::time_zone*> LocateZone(const std::string& tz) {
  try {
    return date::locate_zone(tz.empty() ? std::string("UTC") : tz);
  } catch (const std::exception& e) {
    return InvalidArgumentError(
        fmt::format("unknown time zone '{}' (an IANA name such as Europe/Berlin or "
                    "America/New_York, from /usr/share/zoneinfo)",
                    tz));
  }
}

// The instant local time `local` names in `zone`: a time in a spring-forward gap maps to the end of the gap;
// a time that occurs twice maps to its first occurrence.
date::sys_seconds ToInstant(const date::time_zone* zone, date::local_seconds local) {
  const date::local_info info = zone->get_info(local);
  if (info.result == date::local_info::nonexistent) return info.second.begin;
  return date::sys_seconds{local.time_since_epoch() - info.first.offset};
}

// Calls `visit(instant_ms)` for each fire instant > after_ms in increasing order until it returns false or the
// 28-year horizon (or until_ms, when set) is passed.
Status WalkFires(const CronExpression& cron, const std::string& tz, int64_t after_ms, std::optional<int64_t> until_ms,
                 const std::function<bool(int64_t)>& visit) {
  ASSIGN_OR_RETURN(const date::time_zone* zone, LocateZone(tz));
  using std::chrono::floor;
  const date::sys_seconds after{floor<std::chrono::seconds>(std::chrono::milliseconds(after_ms))};
  const date::local_days first_day = floor<date::days>(zone->to_local(after));
  const date::local_days horizon = first_day + date::days(28 * 366);
  int64_t previous = after_ms;
  for (date::local_days day = first_day; day <= horizon; day += date::days(1)) {
    const date::year_month_day ymd(day);
    const unsigned weekday = date::weekday(day).c_encoding();
    if (!MatchesDay(cron, static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), weekday)) continue;
    for (int h = 0; h < 24; ++h) {
      if (!cron.hours[static_cast<size_t>(h)]) continue;
      for (int m = 0; m < 60; ++m) {
        if (!cron.minutes[static_cast<size_t>(m)]) continue;
        const date::local_seconds local = day + std::chrono::hours(h) + std::chrono::minutes(m);
        const int64_t ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(ToInstant(zone, local).time_since_epoch()).count();
        if (until_ms && ms > *until_ms) return Status::Ok();
        if (ms <= previous) continue;  // before `after`, or a gap time already fired at the same instant
        previous = ms;
        if (!visit(ms)) return Status::Ok();
      }
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<CronExpression> ParseCron(std::string_view text) {
  CronExpression cron;
  cron.text = std::string(Trim(text));
  std::string_view body = cron.text;
  if (!body.empty() && body.front() == '@') {
    auto expansion = ExpandMacro(body);
    if (!expansion) {
      return InvalidArgumentError(
          fmt::format("cron expression '{}': unknown macro (use @yearly, @annually, "
                      "@monthly, @weekly, @daily, @midnight or @hourly)",
                      cron.text));
    }
    body = *expansion;
  }
  const std::vector<std::string_view> fields = SplitWhitespace(body);
  if (fields.size() != 5) {
    return InvalidArgumentError(
        fmt::format("cron expression '{}' has {} field(s); expected 5: minute hour "
                    "day-of-month month day-of-week (e.g. \"0 3 * * 1\")",
                    cron.text, fields.size()));
  }
  std::array<std::vector<bool>, 5> bits;
  for (int i = 0; i < 5; ++i) {
    bits[static_cast<size_t>(i)].assign(static_cast<size_t>(kFields[static_cast<size_t>(i)].max) + 1, false);
    RETURN_IF_ERROR(FieldParser(i, cron.text).Parse(fields[static_cast<size_t>(i)], bits[static_cast<size_t>(i)]));
  }
  for (size_t v = 0; v < 60; ++v) cron.minutes[v] = bits[0][v];
  for (size_t v = 0; v < 24; ++v) cron.hours[v] = bits[1][v];
  for (size_t v = 1; v <= 31; ++v) cron.days_of_month[v] = bits[2][v];
  for (size_t v = 1; v <= 12; ++v) cron.months[v] = bits[3][v];
  for (size_t v = 0; v <= 7; ++v) {
    if (bits[4][v]) cron.days_of_week[v % 7] = true;
  }
  cron.day_of_month_star = fields[2].front() == '*';
  cron.day_of_week_star = fields[4].front() == '*';
  return cron;
}

Status CheckTimeZone(const std::string& tz) {
  return LocateZone(tz).status();
}

bool MatchesDay(const CronExpression& cron, unsigned month, unsigned day, unsigned weekday) {
  if (!cron.months[month]) return false;
  const bool dom = cron.days_of_month[day];
  const bool dow = cron.days_of_week[weekday % 7];
  if (cron.day_of_month_star || cron.day_of_week_star) return dom && dow;
  return dom || dow;
}

StatusOr<std::vector<int64_t>> NextFireTimes(const CronExpression& cron, const std::string& tz, int64_t after_ms,
                                             size_t n) {
  std::vector<int64_t> out;
  if (n == 0) return out;
  RETURN_IF_ERROR(WalkFires(cron, tz, after_ms, std::nullopt, [&](int64_t ms) {
    out.push_back(ms);
    return out.size() < n;
  }));
  return out;
}

StatusOr<FireWindow> FiresBetween(const CronExpression& cron, const std::string& tz, int64_t after_ms,
                                  int64_t until_ms) {
  FireWindow window;
  if (until_ms <= after_ms) return window;
  RETURN_IF_ERROR(WalkFires(cron, tz, after_ms, until_ms, [&](int64_t ms) {
    if (window.count++ == 0) window.first_ms = ms;
    window.last_ms = ms;
    return true;
  }));
  return window;
}

}  // namespace anneal::coordinator
