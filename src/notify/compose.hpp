// notify/compose: what a notification email says (spec §6).
//
// compose() turns a connection's pending notifications into one RFC 5322 message: a single
// notification gets a detailed email, several get a summary (circuit changes first, one line
// each; then how many records failed, how many were cancelled, up to 20 records with their
// payload ids and latest errors, and how many more). A record email names the project space,
// the URL (without credentials), the form or case id, the record id, the attempt number and
// the next retry time or "cancelled", and quotes the error as the remote gave it. A circuit
// email names the URL, the consecutive failures and last error (opened) or the outage's length
// (closed), and the backlog. Every email says how to stop these emails.
// Pure: no I/O, no clock (the Message-ID's uniqueness comes from a random UUID).
// Sending is notify/smtp's job.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "repeaterd/time.hpp"
#include "store/notification.hpp"

namespace repeaterd::notify {

struct Message {
  std::string from;
  std::vector<std::string> to;
  std::string connection;  // name
  std::string url;         // the connection's URL; shown without any userinfo
  std::string config_file; // where `notify` is set, for the "how to stop" section
  std::vector<store::Notification> events;  // oldest first; REQUIRES: not empty
  Micros now = 0;
  std::string message_id_domain = "repeaterd.local";  // right-hand side of Message-ID
};

// The whole RFC 5322 message (CRLF line endings, UTF-8 body, MIME-Version, Content-Type
// text/plain; charset=UTF-8, Content-Transfer-Encoding quoted-printable, Date, Message-ID,
// From, To, Subject (RFC 2047 encoded when not ASCII)).
std::string compose(const Message& m);

// An outage's length as a reader says it: "12 min 5 s", "2 h", "1 d 3 h 20 min", "850 ms".
std::string human_duration(std::int64_t ms);

}  // namespace repeaterd::notify
