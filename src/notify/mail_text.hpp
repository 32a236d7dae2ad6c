// notify/mail_text: making untrusted text fit to go into an email or an SMTP error message.
//
// Everything in an email comes from the config, the remote server or the payload, so none of it
// can be trusted to be valid UTF-8, free of line breaks or free of credentials. compose() and
// send_mail() both pass what they show through here. Pure: no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace repeaterd::notify {

// Valid UTF-8 with "\n" line breaks: the body claims charset=UTF-8, and a remote that answers
// in Latin-1 or with stray control bytes must not make the email unreadable. Invalid bytes
// and control characters become U+FFFD. With `single_line`, line breaks and tabs become spaces
// (names, ids, subjects).
std::string clean_text(std::string_view s, bool single_line);

// clean_text(s, true).
std::string one_line(std::string_view s);

// Collapses runs of whitespace and trims, for one-line summaries and header words.
std::string squeeze_spaces(std::string_view s);

// `url` without the userinfo of its authority ("https://u:p@host/x" -> "https://host/x").
std::string without_userinfo(std::string_view url);

}  // namespace repeaterd::notify
