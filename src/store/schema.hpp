// Schema migrations for the queue database.
#pragma once

namespace repeaterd::store {

class Db;

// The schema version this build writes.
int schema_version();

// Brings `db` up to schema_version(); refuses a database from a newer repeaterd.
void migrate(Db& db);

}  // namespace repeaterd::store
