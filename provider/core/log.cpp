#include "provider/core/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace eca {
namespace {

int level_from_env() {
  const char *v = std::getenv("ECA_LOG");
  if (!v) return static_cast<int>(LogLevel::Warn);
  static const struct { const char *name; LogLevel lvl; } names[] = {
      {"error", LogLevel::Error}, {"warn", LogLevel::Warn},
      {"info", LogLevel::Info},   {"debug", LogLevel::Debug}};
  for (const auto &n : names)
    if (!strcasecmp(v, n.name)) return static_cast<int>(n.lvl);
  return std::atoi(v);
}

const int g_level = level_from_env();
const char *const kNames[] = {"error", "warn", "info", "debug"};

}  // namespace

bool log_enabled(LogLevel lvl) { return static_cast<int>(lvl) <= g_level; }

void log_vmsg(LogLevel lvl, const char *fmt, va_list ap) {
  char buf[1024];
  int n = std::snprintf(buf, sizeof(buf), "eca[%d] %s: ", (int)getpid(),
                        kNames[static_cast<int>(lvl)]);
  if (n < 0) return;
  int m = std::vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
  if (m < 0) return;
  size_t len = std::strlen(buf);
  if (len == 0 || buf[len - 1] != '\n') { buf[len++] = '\n'; buf[len] = 0; }
  ssize_t r = ::write(STDERR_FILENO, buf, len);
  (void)r;
}

void log_msg(LogLevel lvl, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(lvl, fmt, ap);
  va_end(ap);
}

}  // namespace eca
