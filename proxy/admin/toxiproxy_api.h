// Toxiproxy's REST API (2.x) at the root of the control API, with its JSON shapes, defaults, status codes
// and error bodies, so Toxiproxy's client libraries drive faultline unchanged: proxies made, shown,
// updated (listen, upstream, enabled), removed and populated at run time, beside the scenario's. Runs on
// worker 0's loop; listeners are bound here and handed to every worker.
#pragma once

#include <string>

#include "proxy/admin/native_api.h"

namespace faultline::proxy::admin {

bool is_toxiproxy_path(const std::string& path);
Response toxiproxy(const Request& request, Runtime& rt);

}  // namespace faultline::proxy::admin
