// Leveled logging for the whole stack. ECA_LOG=error|warn|info|debug (default: warn).
// Every QP message carries the QP number (see ECA_QP_LOG). Data-path tracing is compiled out
// unless ECA_TRACE is defined at build time.
#pragma once
#include <cstdarg>

namespace eca {

enum class LogLevel : int { Error = 0, Warn = 1, Info = 2, Debug = 3 };

bool log_enabled(LogLevel lvl);
void log_msg(LogLevel lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(LogLevel lvl, const char *fmt, va_list ap);

}  // namespace eca

#define ECA_LOG(lvl, ...)                                              \
  do {                                                                 \
    if (::eca::log_enabled(::eca::LogLevel::lvl))                      \
      ::eca::log_msg(::eca::LogLevel::lvl, __VA_ARGS__);               \
  } while (0)
#define ECA_QP_LOG(lvl, qpn, fmt, ...) ECA_LOG(lvl, "qp %u: " fmt, (unsigned)(qpn), ##__VA_ARGS__)

#ifdef ECA_TRACE
#define ECA_TRACE_QP(qpn, fmt, ...) ECA_QP_LOG(Debug, qpn, fmt, ##__VA_ARGS__)
#else
#define ECA_TRACE_QP(qpn, fmt, ...) do { } while (0)
#endif
