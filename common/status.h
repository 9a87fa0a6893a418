// Status and StatusOr: the error convention of every Anneal component.
//
// Functions that can fail on input, disk or network return Status (or StatusOr<T>) with a message that names
// what failed and where ("job.yaml:12: key 'lora_rank': must be a positive integer"). Callers must check them
// ([[nodiscard]]). Programmer errors are not statuses: they are ANNEAL_CHECK aborts with the condition text.
// The codes are the wire codes of protocol/anneal.proto (ErrorCode), so a Status crosses the wire as
// pb::Error{code, message} unchanged (protocol/framing.h: ToProto / FromProto).
//
// Thread-safety: value types; no shared state.
//
// Example:
//   anneal::StatusOr<Config> LoadConfig(const std::string& path) {
//     if (!exists(path)) return anneal::NotFoundError("config file not found: " + path);
//     ...
//   }
//   auto cfg = LoadConfig(p);
//   if (!cfg.ok()) { spdlog::error("{}", cfg.status().ToString()); return 2; }
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace anneal {

// Same numbering as pb::ErrorCode.
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kAlreadyExists = 3,
  kFailedPrecondition = 4,
  kPermissionDenied = 5,
  kUnauthenticated = 6,
  kUnavailable = 7,
  kDeadlineExceeded = 8,
  kDataLoss = 9,
  kInternal = 10,
  kVersionMismatch = 11,
  kResourceExhausted = 12,
  kCancelled = 13,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message", or "OK".
  std::string ToString() const;
  // Prefixes context: Status("x").WithContext("loading a.json") -> "loading a.json: x".
  Status WithContext(std::string_view context) const;
  // Explicitly ignores a status (where failing is acceptable, e.g. best-effort cleanup).
  void IgnoreError() const {}

  bool operator==(const Status& other) const = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgumentError(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExistsError(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status PermissionDeniedError(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
inline Status UnauthenticatedError(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceededError(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status DataLossError(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status VersionMismatchError(std::string m) { return {StatusCode::kVersionMismatch, std::move(m)}; }
inline Status ResourceExhaustedError(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status CancelledError(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) v_ = Status(StatusCode::kInternal, "StatusOr constructed from OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  T& value() & { Check(); return std::get<T>(v_); }
  const T& value() const& { Check(); return std::get<T>(v_); }
  T&& value() && { Check(); return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void Check() const {
    if (!ok()) {
      std::fprintf(stderr, "StatusOr::value() on error: %s\n", std::get<Status>(v_).ToString().c_str());
      std::abort();
    }
  }
  std::variant<Status, T> v_;
};

}  // namespace anneal

#define ANNEAL_STATUS_CONCAT_INNER(a, b) a##b
#define ANNEAL_STATUS_CONCAT(a, b) ANNEAL_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                         \
  do {                                                \
    ::anneal::Status _anneal_st = (expr);             \
    if (!_anneal_st.ok()) return _anneal_st;          \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MaybeX()); declares x from the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ANNEAL_ASSIGN_OR_RETURN_IMPL(ANNEAL_STATUS_CONCAT(_anneal_so_, __LINE__), lhs, expr)
#define ANNEAL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// Programmer-error check: aborts with the condition text and location.
#define ANNEAL_CHECK(cond)                                                                   \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
