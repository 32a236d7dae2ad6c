#include "config/reload.hpp"

#include <map>

namespace repeaterd::config {

namespace {

// Adds "KIND NAME added/changed/removed" for items compared by name.
template <class T>
void diff_named(const std::vector<T>& before, const std::vector<T>& after, const char* kind,
                std::vector<std::string>& changed, std::vector<std::string>* replaced) {
  std::map<std::string, const T*> old_by_name;
  for (const auto& x : before) old_by_name[x.name] = &x;
  for (const auto& x : after) {
    auto it = old_by_name.find(x.name);
    if (it == old_by_name.end()) {
      changed.push_back(std::string(kind) + " " + x.name + " added");
      continue;
    }
    if (!(*it->second == x)) {
      changed.push_back(std::string(kind) + " " + x.name + " changed");
      if (replaced != nullptr) replaced->push_back(x.name);
    }
    old_by_name.erase(it);
  }
  for (const auto& [name, x] : old_by_name) {
    changed.push_back(std::string(kind) + " " + name + " removed");
    if (replaced != nullptr) replaced->push_back(name);
  }
}

}  // namespace

ReloadPlan plan_reload(const Config& current, const Config& next) {
  ReloadPlan plan;
  plan.applied = next;
  Config& a = plan.applied;
  // Bound sockets and the open database cannot move while running: keep them, say so.
  if (!(current.listen == next.listen)) plan.restart_needed.push_back("listen");
  a.listen = current.listen;
  if (current.storage.path != next.storage.path) plan.restart_needed.push_back("storage.path");
  a.storage.path = current.storage.path;
  if (current.log.events_file != next.log.events_file) plan.restart_needed.push_back("log.events_file");
  a.log.events_file = current.log.events_file;
  const bool admin_moved = current.admin.unix_path != next.admin.unix_path ||
                           current.admin.address != next.admin.address || current.admin.port != next.admin.port;
  if (admin_moved) plan.restart_needed.push_back("admin.listen");
  a.admin.unix_path = current.admin.unix_path;
  a.admin.address = current.admin.address;
  a.admin.port = current.admin.port;

  if (!(current.ingest_tokens == next.ingest_tokens)) plan.changed.push_back("ingest_tokens");
  if (current.admin.token != next.admin.token) plan.changed.push_back("admin token");
  if (current.storage.retention != next.storage.retention) plan.changed.push_back("storage.retention");
  if (current.log.level != next.log.level) {
    plan.changed.push_back("log.level " + current.log.level + " -> " + next.log.level);
  }
  if (current.log.queue_summary_every != next.log.queue_summary_every) plan.changed.push_back("log.queue_summary_every");
  if (current.smtp != next.smtp) plan.changed.push_back("smtp");
  diff_named(current.connections, next.connections, "connection", plan.changed, &plan.connections_replaced);
  diff_named(current.repeaters, next.repeaters, "repeater", plan.changed, nullptr);
  return plan;
}

}  // namespace repeaterd::config
