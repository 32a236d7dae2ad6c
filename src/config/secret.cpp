#include "config/secret.hpp"

#include <cstdlib>
#include <vector>

#include "config/read_file.hpp"

namespace repeaterd::config::detail {
namespace {

bool is_env_name(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

// Every secret's value comes from a scalar; a list or mapping there is reported by shape
// only, since it may hold the secret.
bool scalar_or_report(const Field& f, const MapReader& map, std::string_view what) {
  if (f.value.IsScalar() && !f.value.Scalar().empty()) return true;
  map.reporter().error(f.mark(), f.path + ": expected " + std::string(what) + ", got " +
                                     (f.value.IsScalar() ? "\"\"" : describe_shape(f.value)));
  return false;
}

std::optional<Secret> from_env(const Field& f, const MapReader& map, const Environment& env) {
  if (!scalar_or_report(f, map, "an environment variable name")) return std::nullopt;
  const std::string& name = f.value.Scalar();
  if (!is_env_name(name)) {
    map.reporter().error(f.mark(), f.path +
                                       ": expected an environment variable name like "
                                       "REPEATERD_TOKEN_DEMO, got " +
                                       quote(name));
    return std::nullopt;
  }
  const auto value = env.get(name);
  if (!value) {
    map.reporter().error(f.mark(), f.path + ": environment variable " + name + " is not set");
    return std::nullopt;
  }
  if (value->empty()) {
    map.reporter().error(f.mark(), f.path + ": environment variable " + name + " is empty");
    return std::nullopt;
  }
  return Secret{*value, "env " + name};
}

std::optional<Secret> from_file(const Field& f, const MapReader& map) {
  if (!scalar_or_report(f, map, "a file path")) return std::nullopt;
  const std::string& path = f.value.Scalar();
  auto content = read_small_file(path, kMaxSecretFile);
  if (!content.ok()) {
    map.reporter().error(f.mark(),
                         f.path + ": cannot read " + quote(path) + ": " + content.error().message);
    return std::nullopt;
  }
  std::string value = std::move(content.value());
  // Editors and `echo` end files with a newline that is not part of the secret.
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  if (value.empty()) {
    map.reporter().error(f.mark(), f.path + ": file " + quote(path) + " is empty");
    return std::nullopt;
  }
  return Secret{std::move(value), "file " + path};
}

}  // namespace

std::optional<std::string> Environment::get(const std::string& name) const {
  if (vars_ != nullptr) {
    const auto it = vars_->find(name);
    if (it == vars_->end()) return std::nullopt;
    return it->second;
  }
  // getenv is safe here: repeaterd never modifies its environment after start.
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

SecretRead read_secret(const MapReader& map, std::string_view name, const Environment& env) {
  const std::string base(name);
  const std::string env_key = base + "_env";
  const std::string file_key = base + "_file";
  const Field* inline_field = map.find(base);
  const Field* env_field = map.find(env_key);
  const Field* file_field = map.find(file_key);

  std::vector<const Field*> given;
  for (const Field* f : {inline_field, env_field, file_field}) {
    if (f != nullptr) given.push_back(f);
  }
  SecretRead result;
  result.given = !given.empty();
  if (given.size() > 1) {
    // Reported at the later key: the earlier one reads as the intended source.
    const Field* later = given[0];
    for (const Field* f : given) {
      const YAML::Mark a = f->key.Mark();
      const YAML::Mark b = later->key.Mark();
      if (a.line > b.line || (a.line == b.line && a.column > b.column)) later = f;
    }
    map.reporter().error(later->key.Mark(), map.path() + ": give only one of " + base + "_env, " +
                                                base + "_file or " + base);
    return result;
  }
  if (env_field != nullptr) {
    result.source = env_field;
    result.secret = from_env(*env_field, map, env);
  } else if (file_field != nullptr) {
    result.source = file_field;
    result.secret = from_file(*file_field, map);
  } else if (inline_field != nullptr) {
    result.source = inline_field;
    if (scalar_or_report(*inline_field, map, "a secret")) {
      map.reporter().warning(
          inline_field->mark(),
          inline_field->path + ": the secret is written in the config file; use " + env_key +
              " (an environment variable) or " + file_key + " (a file) to keep it out of the file");
      result.secret = Secret{inline_field->value.Scalar(), "inline"};
    }
  }
  return result;
}

}  // namespace repeaterd::config::detail
