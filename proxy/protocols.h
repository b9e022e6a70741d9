// Which session serves an accepted connection of each protocol: one line per protocol (protocols.cpp).
#pragma once

#include <uv.h>

#include "faults/scenario.h"

namespace faultline::proxy {

class Worker;
struct ProxyRuntime;

using AcceptFn = void (*)(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server);

AcceptFn acceptor(faults::Protocol protocol);

}  // namespace faultline::proxy
