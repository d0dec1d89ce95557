// The configuration table and docs/configuration.md list the same variables and defaults.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "provider/core/config.hpp"

#ifndef ECA_SOURCE_DIR
#error "ECA_SOURCE_DIR must be defined by the build"
#endif

TEST(Config, DocumentationListsEveryRow) {
  std::ifstream f(std::string(ECA_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_TRUE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string doc = ss.str();
  size_t rows = 0;
  for (const auto &r : eca::config_table()) {
    const std::string row = std::string("| ") + r.env + " | " + r.deflt + " | " + r.unit + " | ";
    EXPECT_NE(doc.find(row), std::string::npos) << "missing or different row for " << r.env;
    rows++;
  }
  size_t doc_rows = 0;
  for (size_t p = doc.find("\n| ECA_"); p != std::string::npos; p = doc.find("\n| ECA_", p + 1))
    doc_rows++;
  EXPECT_EQ(doc_rows, rows) << "docs/configuration.md lists variables the table does not have";
}

TEST(Config, DefaultsAreSane) {
  const eca::Config &c = eca::config();
  EXPECT_GE(c.fpdu_payload, 64u);
  EXPECT_LE(c.fpdu_payload, 65488u);
  EXPECT_TRUE(c.mpa_rev == 1 || c.mpa_rev == 2);
}
