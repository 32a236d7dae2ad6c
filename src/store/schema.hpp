// Schema migrations for the queue database.
#pragma once

namespace repeaterd::store {

class Db;

// The schema version this build writes.
int schema_version();

// Brings `db` up to schema_version(); refuses a database from a newer repeaterd.
// Applies the migrations the database lacks, up to `target` (tests build older schemas with it).
void migrate(Db& db, int target);
inline void migrate(Db& db) { migrate(db, schema_version()); }

}  // namespace repeaterd::store
