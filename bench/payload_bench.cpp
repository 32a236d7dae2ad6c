// payload_bench: what checking a submission as untrusted (payload/untrusted.hpp: nesting, UTF-8,
// DOCTYPE) adds to reading it. Parses the seed form N times three ways in one process:
//   pugixml alone   [baseline]: doc.load_buffer, what parse_xform did before the checks;
//   load_untrusted_xml:         the same load plus the checks;
//   parse_xform:                the whole XForm read (checks, meta, instanceID).
// Prints each per form and the checks' share. Run: build/payload_bench [N] (default 200000).
#include <pugixml.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "payload/untrusted.hpp"
#include "payload/xform.hpp"

namespace {

template <class F>
double ns_per_call(int n, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) f();
  const auto dt = std::chrono::steady_clock::now() - t0;
  return std::chrono::duration<double, std::nano>(dt).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 200000;
  std::ifstream in(REPEATERD_SEED_FORM, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string form = ss.str();
  if (form.empty()) {
    std::fprintf(stderr, "payload_bench: cannot read %s\n", REPEATERD_SEED_FORM);
    return 1;
  }
  int sink = 0;
  const unsigned flags = pugi::parse_default | pugi::parse_ws_pcdata_single;
  // Alternate the rounds so a VM's speed changes hit all three alike.
  double bare = 0, checked = 0, xform = 0;
  for (int round = 0; round < 3; ++round) {
    bare += ns_per_call(n / 3, [&] {
      pugi::xml_document doc;
      sink += doc.load_buffer(form.data(), form.size(), flags, pugi::encoding_auto) ? 1 : 0;
    });
    checked += ns_per_call(n / 3, [&] {
      pugi::xml_document doc;
      sink += repeaterd::payload::load_untrusted_xml(doc, form, pugi::parse_ws_pcdata_single).ok() ? 1 : 0;
    });
    xform += ns_per_call(n / 3, [&] { sink += repeaterd::payload::parse_xform(form).ok() ? 1 : 0; });
  }
  bare /= 3, checked /= 3, xform /= 3;
  std::printf("payload_bench: the seed form (%zu bytes), %d parses each, %d ok\n", form.size(), n / 3 * 3, sink);
  std::printf("%-44s %10.0f\n", "pugixml load_buffer alone (ns)  [baseline]", bare);
  std::printf("%-44s %10.0f\n", "load_untrusted_xml (ns)", checked);
  std::printf("%-44s %10.0f\n", "parse_xform (ns)", xform);
  std::printf("%-44s %9.2fx\n", "checks' cost: untrusted / baseline", checked / bare);
  return 0;
}
