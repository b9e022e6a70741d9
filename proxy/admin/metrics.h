// GET /metrics: the runtime's counters in the Prometheus text exposition format (version 0.0.4).
#pragma once

#include <string>

namespace faultline::proxy {
struct Runtime;
}

namespace faultline::proxy::admin {

std::string metrics_text(const Runtime& rt, double uptime_s);

}  // namespace faultline::proxy::admin
