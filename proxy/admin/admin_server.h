// The control API's HTTP side (SPEC §5): connections accepted on the admin listener of worker 0, requests
// parsed with the proxy's own HTTP codec (hostile bytes get a 400, never a crash), the bearer token checked
// in constant time, bodies bounded, then the endpoints of native_api.h.
#pragma once

#include <uv.h>

#include <cstddef>
#include <string>

namespace faultline::proxy {
class Worker;
}

namespace faultline::proxy::admin {

struct Options {
  std::string token;                    // non-empty: every request needs "Authorization: Bearer TOKEN"
  size_t max_body = 1024 * 1024;        // larger request bodies get 413
};

// Serves one pending connection of the admin listener `server` on `worker`'s loop.
void accept(Worker& worker, uv_stream_t* server, const Options& options);

}  // namespace faultline::proxy::admin
