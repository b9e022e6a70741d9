#include "proxy/protocols.h"

#include "proxy/http/http_protocol.h"
#include "proxy/message_session.h"
#include "proxy/postgres/pg_protocol.h"
#include "proxy/redis/redis_protocol.h"
#include "proxy/session.h"

namespace faultline::proxy {

namespace {

template <MessageSession::Factory make>
void message_session(Worker& worker, ProxyRuntime& proxy, uv_stream_t* server) {
  MessageSession::accept(worker, proxy, server, make);
}

struct Entry {
  faults::Protocol protocol;
  AcceptFn accept;
};

// A protocol on the message session is one pure codec (proxy/<protocol>/) and one line here.
constexpr Entry kProtocols[] = {
    {faults::Protocol::tcp, &Session::accept},
    {faults::Protocol::http, &message_session<&http::HttpProtocol::make>},
    {faults::Protocol::redis, &message_session<&redis::RedisProtocol::make>},
    {faults::Protocol::postgres, &message_session<&postgres::PgProtocol::make>},
};

}  // namespace

AcceptFn acceptor(faults::Protocol protocol) {
  for (const Entry& e : kProtocols)
    if (e.protocol == protocol) return e.accept;
  return &Session::accept;
}

}  // namespace faultline::proxy
