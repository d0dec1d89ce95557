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

// The table documents the defaults; Config's member initialisers set them (config.cpp reads
// the environment over them). The two must agree.
TEST(Config, TableDefaultsAreTheConfigDefaults) {
  const eca::Config d;
  auto deflt = [](const char *env) {
    for (const eca::ConfigRow &r : eca::config_table())
      if (std::string(r.env) == env) return std::string(r.deflt);
    return std::string("(no row)");
  };
  auto b = [](bool v) { return std::string(v ? "1" : "0"); };
  EXPECT_EQ(deflt("ECA_BACKEND"), d.backend == eca::BackendKind::Software ? "software" : "hwmodel");
  EXPECT_EQ(deflt("ECA_MPA_CRC"), b(d.mpa_crc));
  EXPECT_EQ(deflt("ECA_MPA_CRC_REQUIRED"), b(d.mpa_crc_required));
  EXPECT_EQ(deflt("ECA_MPA_REV"), std::to_string(d.mpa_rev));
  EXPECT_EQ(deflt("ECA_MPA_MARKERS"), b(d.mpa_markers));
  EXPECT_EQ(deflt("ECA_FPDU_SIZE"), std::to_string(d.fpdu_payload));
  EXPECT_EQ(deflt("ECA_RX_BATCH"), std::to_string(d.rx_batch));
  EXPECT_EQ(deflt("ECA_TX_INLINE"), b(d.tx_inline));
  EXPECT_EQ(deflt("ECA_KEEPALIVE"), std::to_string(d.keepalive_s));
  EXPECT_EQ(deflt("ECA_RECV_WAIT_MS"), std::to_string(d.recv_wait_ms));
  EXPECT_EQ(deflt("ECA_MPA_TIMEOUT_MS"), std::to_string(d.mpa_timeout_ms));
  EXPECT_EQ(deflt("ECA_HWMODEL_MODE"), d.hwmodel_paced ? "paced" : "fast");
  EXPECT_EQ(deflt("ECA_CQ_MODERATION"),
            std::to_string(d.cq_mod_count) + "," + std::to_string(d.cq_mod_period_us));
}
