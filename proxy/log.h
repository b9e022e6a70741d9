// Logging set-up: spdlog with text or JSON lines, and the level from --log-level.
#pragma once

#include <string>

namespace faultline::proxy {

// Configures the default logger; false with *why if level or format is unknown.
bool setup_logging(const std::string& level, const std::string& format, std::string* why);

}  // namespace faultline::proxy
