// repeaterd: the daemon's command line.
//
//   repeaterd --config FILE        run in the foreground (systemd supervises)
//   repeaterd --check-config FILE  print every configuration error as FILE:LINE:COL: message
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "cli/daemon.hpp"
#include "repeaterd/config.hpp"

namespace {

void print(const std::vector<repeaterd::config::Diagnostic>& diags, const char* kind) {
  for (const auto& d : diags) {
    std::string s = d.to_string();
    if (kind != nullptr) {
      // FILE:LINE:COL: warning: message
      const auto pos = s.find(": ", d.file.size());
      if (pos != std::string::npos) s.insert(pos + 2, std::string(kind) + ": ");
    }
    std::cerr << s << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"repeaterd: receives form submissions, queues them durably and forwards them over HTTP(S)"};
  std::string config_path = "/etc/repeaterd/repeaterd.yaml";
  std::string check_path;
  app.add_option("-c,--config", config_path, "configuration file")->capture_default_str();
  app.add_option("--check-config", check_path, "check a configuration file, print every error, and exit");
  app.set_version_flag("--version", "repeaterd 0.1.0");
  CLI11_PARSE(app, argc, argv);

  // stderr goes to the journal under systemd; no colours, no timestamps of our own there.
  auto logger = spdlog::stderr_logger_mt("repeaterd");
  if (std::getenv("JOURNAL_STREAM") != nullptr) logger->set_pattern("%l: %v");
  else logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l: %v");
  spdlog::set_default_logger(logger);

  if (!check_path.empty()) {
    auto loaded = repeaterd::config::load_config(check_path);
    print(loaded.warnings, "warning");
    print(loaded.errors, nullptr);
    if (!loaded.config) return 1;
    std::cerr << check_path << ": ok\n";
    return 0;
  }

  auto loaded = repeaterd::config::load_config(config_path);
  print(loaded.warnings, "warning");
  if (!loaded.config) {
    print(loaded.errors, nullptr);
    std::cerr << "repeaterd: " << loaded.errors.size() << " error(s) in " << config_path << "; not starting\n";
    return 1;
  }
  spdlog::set_level(spdlog::level::from_str(loaded.config->log.level));
  return repeaterd::run_daemon(std::move(*loaded.config));
}
