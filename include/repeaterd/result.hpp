// Result<T>: the value every fallible repeaterd operation returns.
//
// Expected failures (bad input, a busy database, a refused connection) travel as values;
// exceptions are caught at the edge of a layer and turned into an Error that names what
// failed and what to do about it.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace repeaterd {

// What kind of failure an Error is, so a caller can answer it (the admin API maps these to
// 400/404/409/503) without reading the message; leveldb's Status codes are the model.
enum class ErrorKind {
  failed,     // anything else (the default)
  invalid,    // the caller's input is wrong
  not_found,  // no such record, repeater, file
  conflict,   // it exists, but the action does not apply in its state
  busy,       // try again shortly (the store is locked, full, or stopping)
  io,         // the disk or the network failed
  refused,    // the other side refused it for good (an SMTP 5xx): trying again as is will not help
};

struct Error {
  std::string message;
  ErrorKind kind = ErrorKind::failed;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}       // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result of an operation that yields nothing but success or an error.
struct Ok {};
using Status = Result<Ok>;

inline Error make_error(std::string message, ErrorKind kind = ErrorKind::failed) {
  return Error{std::move(message), kind};
}

}  // namespace repeaterd
