// A thin RAII layer over the SQLite C API: a connection that caches its prepared statements,
// and a statement with typed bind/column helpers. SQLite errors throw SqliteError; the store
// catches them at its edge and turns them into Results.
//
// Thread-safety: none. A Db belongs to one thread (the writer's).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

namespace repeaterd::store {

class SqliteError : public std::runtime_error {
 public:
  // `system_errno`: the OS error behind an I/O failure (sqlite3_system_errno), 0 when none.
  SqliteError(int code, const std::string& what, int system_errno = 0)
      : std::runtime_error(what), code_(code), errno_(system_errno) {}
  int code() const { return code_; }
  // Busy/locked: another process holds the lock; worth retrying later.
  bool busy() const { return (code_ & 0xff) == SQLITE_BUSY || (code_ & 0xff) == SQLITE_LOCKED; }
  // The filesystem holding the database (or its WAL, or -shm) has no room: SQLITE_FULL, or an
  // I/O error whose cause was ENOSPC/EDQUOT (growing the -shm file reports SQLITE_IOERR_SHMSIZE).
  // The transaction was rolled back; it is worth retrying once space is freed.
  bool full() const;

 private:
  int code_;
  int errno_;
};

class Stmt {
 public:
  Stmt(sqlite3* db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Binds are 1-based, as in SQLite.
  Stmt& bind(int i, std::int64_t v);
  Stmt& bind(int i, std::string_view v);  // TEXT
  Stmt& bind_blob(int i, std::string_view v);
  Stmt& bind_null(int i);
  Stmt& bind(int i, const std::optional<std::int64_t>& v);

  // Steps once: true when a row is available, false when done.
  bool step();
  // Steps to the end (for statements without rows); returns the number of changed rows.
  int run();
  void reset();  // reset and clear bindings, ready for reuse

  std::int64_t int64(int col) const;
  std::optional<std::int64_t> opt_int64(int col) const;
  std::string text(int col) const;  // TEXT or BLOB as bytes; NULL as ""
  // The same without a copy: valid until the next step, reset or column call on this column.
  std::string_view bytes(int col) const;
  bool is_null(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

class Db {
 public:
  enum class Mode { read_write, read_only };
  Db(const std::string& path, Mode mode);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const char* sql);
  // A prepared statement cached by its SQL text, reset and ready to bind.
  Stmt& prepare(const char* sql);
  std::int64_t last_insert_rowid() const;
  sqlite3* handle() { return db_; }

 private:
  sqlite3* db_ = nullptr;
  std::unordered_map<const char*, std::unique_ptr<Stmt>> cache_;
};

// RAII reset: statements go back to the cache clean whatever happens.
class StmtGuard {
 public:
  explicit StmtGuard(Stmt& s) : s_(s) {}
  ~StmtGuard() { s_.reset(); }
  Stmt* operator->() { return &s_; }
  Stmt& operator*() { return s_; }
  StmtGuard(const StmtGuard&) = delete;
  StmtGuard& operator=(const StmtGuard&) = delete;

 private:
  Stmt& s_;
};

}  // namespace repeaterd::store
