// The receiver's HTTP request path: the input is a raw HTTP/1.1 request, parsed by Beast's
// request parser with the listener's default limits and handed, as ingest::Server hands it, to
// an ingest::Receiver whose store is a real SQLite database in a temporary directory. Whatever
// the request, the receiver answers it: an exception escaping handle() is a finding (the server
// would turn it into a 500 for a request that deserved a 4xx).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

#include "common/event_log.hpp"
#include "fuzz.hpp"
#include "ingest/beast_request.hpp"
#include "ingest/receiver.hpp"
#include "repeaterd/config.hpp"
#include "store/store.hpp"

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace repeaterd;

// Every repeater type and format, so a stored submission makes every kind of record.
constexpr const char* kConfig = R"(ingest_tokens:
  - domain: demo
    token_env: FUZZ_TOKEN
connections:
  - name: inbox
    url: http://127.0.0.1:9/inbox
repeaters:
  - {name: forms-xml, domain: demo, type: form, format: xml, connection: inbox}
  - {name: forms-json, domain: demo, type: form, format: json, connection: inbox}
  - {name: cases-xml, domain: demo, type: case, format: xml, connection: inbox}
  - {name: cases-json, domain: demo, type: case, format: json, connection: inbox}
  - {name: stubs, domain: demo, type: form_stub, connection: inbox}
  - {name: apps, domain: demo, type: app_structure, connection: inbox}
)";

// A fresh database in a temporary directory, removed at exit; one per process, so state (cases,
// duplicates, edits) carries from one input to the next as it does in the daemon.
struct Harness {
  std::filesystem::path dir;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<config::ConfigHolder> config;
  EventLog events;  // never opened: its lines are dropped
  asio::io_context io;
  std::unique_ptr<ingest::Receiver> receiver;
  config::Listen listen;

  Harness() {
    spdlog::set_level(spdlog::level::off);
    std::string dir_template = (std::filesystem::temp_directory_path() / "repeaterd-fuzz-XXXXXX").string();
    if (::mkdtemp(dir_template.data()) == nullptr) fail("mkdtemp failed");
    dir = dir_template;
    const std::map<std::string, std::string> env{{"FUZZ_TOKEN", "fuzz-token"}};
    auto loaded = config::load_config_text(kConfig, "fuzz_receiver.yaml", &env);
    if (!loaded.config) fail(loaded.errors.empty() ? "no config" : loaded.errors.front().message);
    loaded.config->storage.path = (dir / "repeaterd.db").string();
    listen = loaded.config->listen;
    store::Options options;
    options.path = loaded.config->storage.path;
    auto opened = store::Store::open(options);
    if (!opened) fail(opened.error().message);
    store = std::move(*opened);
    config = std::make_unique<config::ConfigHolder>(
        std::make_shared<const config::Config>(std::move(*loaded.config)));
    receiver = std::make_unique<ingest::Receiver>(*config, *store, events, [](const std::string&) {});
  }
  ~Harness() {
    receiver.reset();
    store.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }

  [[noreturn]] static void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_receiver: %s\n", what.c_str());
    std::abort();
  }
};

Harness& harness() {
  static Harness h;
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Harness& h = harness();
  // As ingest::Server reads a request: a fresh parser with the listener's limits.
  http::request_parser<http::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(h.listen.max_header));
  parser.body_limit(h.listen.max_body);
  parser.eager(true);
  boost::beast::error_code ec;
  std::size_t used = 0;
  while (!parser.is_done() && used < size) {
    const std::size_t n = parser.put(asio::buffer(data + used, size - used), ec);
    used += n;
    if (ec || n == 0) break;
  }
  if (!parser.is_done()) return 0;  // the server answers these itself (400, 413, 431)

  auto& req = parser.get();
  ingest::IncomingRequest in = ingest::incoming_request(req, "127.0.0.1:40000", "127.0.0.1");

  bool done = false;
  std::string thrown;
  ingest::Reply reply;
  asio::co_spawn(h.io, h.receiver->handle(std::move(in)), [&](std::exception_ptr e, ingest::Reply r) {
    done = true;
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        thrown = ex.what();
      } catch (...) {
        thrown = "an exception not derived from std::exception";
      }
    }
    reply = std::move(r);
  });
  // The store's completions are posted back from its writer thread: keep the loop alive until
  // the answer is there.
  {
    auto guard = asio::make_work_guard(h.io);
    while (!done) h.io.run_one();
  }
  h.io.restart();
  if (!thrown.empty()) std::fprintf(stderr, "Receiver::handle threw: %s\n", thrown.c_str());
  FUZZ_CHECK(thrown.empty());
  FUZZ_CHECK(reply.status >= 200 && reply.status <= 599);
  return 0;
}
