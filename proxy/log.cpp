// Logs go to stderr so stdout stays free for `check` output and reports.
#include "proxy/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace faultline::proxy {

bool setup_logging(const std::string& level, const std::string& format, std::string* why) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    *why = "unknown log level '" + level + "' (expected trace, debug, info, warn, error)";
    return false;
  }
  auto logger = spdlog::stderr_logger_mt("faultline");
  if (format == "text") {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %v");
  } else if (format == "json") {
    // Messages are escaped by the caller through json_escape() where they may hold quotes.
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","msg":"%v"})", spdlog::pattern_time_type::utc);
  } else {
    *why = "unknown log format '" + format + "' (expected text or json)";
    return false;
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return true;
}

}  // namespace faultline::proxy
