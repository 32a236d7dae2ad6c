// Store::load_attachment: a form's attachments read back by domain, form id and name, from the
// newest payload of that form id.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "common/ids.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::store {
namespace {

class AttachmentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("repeaterd-attachments-" + uuid_v4());
    std::filesystem::create_directories(dir_);
    auto s = Store::open(Options{(dir_ / "q.db").string()});
    ASSERT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  template <class T>
  T run(std::function<T(Db&)> fn) {
    std::promise<Result<T>> p;
    store_->run<T>(std::move(fn), [&](Result<T> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return std::move(r).value();
  }

  void add(const std::string& domain, const std::string& form_id, const std::string& body,
           const std::vector<NewAttachment>& attachments, const std::string& type = "form") {
    run<int>([=](Db& db) {
      NewPayload p;
      p.domain = domain;
      p.payload_type = type;
      p.payload_id = form_id;
      p.content_type = "text/xml";
      p.body = body;
      p.received_on = 1;
      const auto out = Store::insert(db, p, body, {}, 1);
      Store::add_attachments(db, out.payload_row, attachments);
      return 0;
    });
  }

  AttachmentLookup load(const std::string& domain, const std::string& form_id, const std::string& name) {
    return run<AttachmentLookup>([=](Db& db) { return Store::load_attachment(db, domain, form_id, name); });
  }

  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(AttachmentsTest, ReturnsTheExactBytesAndMetadata) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  add("demo", "f1", "<f/>", {{"photo 1.jpg", "photo.jpg", "image/jpeg", bytes}, {"n", "", "", "x"}});
  const auto got = load("demo", "f1", "photo 1.jpg");
  EXPECT_TRUE(got.form_found);
  ASSERT_TRUE(got.attachment);
  EXPECT_EQ(got.attachment->name, "photo 1.jpg");
  EXPECT_EQ(got.attachment->filename, "photo.jpg");
  EXPECT_EQ(got.attachment->content_type, "image/jpeg");
  EXPECT_EQ(got.attachment->body, bytes);
  EXPECT_EQ(got.attachment->body.size(), 256u);
}

TEST_F(AttachmentsTest, UnknownFormAndUnknownNameAreTold) {
  add("demo", "f1", "<f/>", {{"b.jpg", "", "", "1"}, {"a.txt", "", "", "2"}});
  const auto no_form = load("demo", "f2", "a.txt");
  EXPECT_FALSE(no_form.form_found);
  EXPECT_FALSE(no_form.attachment);
  const auto no_name = load("demo", "f1", "c.png");
  EXPECT_TRUE(no_name.form_found);
  EXPECT_FALSE(no_name.attachment);
  EXPECT_EQ(no_name.names, (std::vector<std::string>{"a.txt", "b.jpg"}));
}

TEST_F(AttachmentsTest, ScopedToTheDomainAndToForms) {
  add("demo", "f1", "<f/>", {{"a", "", "", "demo's"}});
  add("demo", "c1", "{}", {{"a", "", "", "not a form"}}, "case");
  EXPECT_FALSE(load("other", "f1", "a").form_found);
  EXPECT_FALSE(load("demo", "c1", "a").form_found);
}

TEST_F(AttachmentsTest, TheNewestPayloadOfAnEditedFormWins) {
  add("demo", "f1", "<f>1</f>", {{"photo", "", "image/jpeg", "first"}, {"gone", "", "", "old"}});
  add("other", "f1", "<f>x</f>", {{"photo", "", "", "another domain's, stored later"}});
  add("demo", "f1", "<f>2</f>", {{"photo", "", "image/png", "second"}});
  const auto got = load("demo", "f1", "photo");
  ASSERT_TRUE(got.attachment);
  EXPECT_EQ(got.attachment->body, "second");
  EXPECT_EQ(got.attachment->content_type, "image/png");
  // Only the newest payload's attachments are current.
  const auto gone = load("demo", "f1", "gone");
  EXPECT_TRUE(gone.form_found);
  EXPECT_FALSE(gone.attachment);
}

}  // namespace
}  // namespace repeaterd::store
