// Reading a form's attachments back, for the receiver's download endpoint.
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::store {

AttachmentLookup Store::load_attachment(Db& db, const std::string& domain, const std::string& form_id,
                                        const std::string& name) {
  AttachmentLookup out;
  std::int64_t payload_row = 0;
  {
    // payloads_by_id covers (domain, payload_type, payload_id); the highest id is the newest.
    StmtGuard q(db.prepare(
        "SELECT id FROM payloads WHERE domain = ?1 AND payload_type = 'form' AND payload_id = ?2 ORDER BY id DESC "
        "LIMIT 1"));
    q->bind(1, domain).bind(2, form_id);
    if (!q->step()) return out;
    payload_row = q->int64(0);
  }
  out.form_found = true;
  {
    StmtGuard q(db.prepare("SELECT filename, content_type, body FROM attachments WHERE payload = ?1 AND name = ?2"));
    q->bind(1, payload_row).bind(2, name);
    if (q->step()) {
      out.attachment = NewAttachment{name, q->text(0), q->text(1), q->text(2)};
      return out;
    }
  }
  // Enough names to point the caller at the right one, without echoing an unbounded list.
  StmtGuard q(db.prepare("SELECT name FROM attachments WHERE payload = ?1 ORDER BY name LIMIT 21"));
  q->bind(1, payload_row);
  while (q->step()) out.names.push_back(q->text(0));
  return out;
}

}  // namespace repeaterd::store
