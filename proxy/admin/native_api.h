// The control API's endpoints (SPEC §5), as a function of a parsed request: no sockets, so each one is
// tested with plain calls. The server (admin_server.h) does the HTTP.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace faultline::proxy {

struct Runtime;

namespace admin {

struct Request {
  std::string method;
  std::string path;  // without the query
  std::vector<std::pair<std::string, std::string>> query;
  std::string body;
};

struct Response {
  int status = 200;
  std::string body;  // JSON, or text for /metrics
  std::string content_type = "application/json";
};

// {"error": MESSAGE, "status": STATUS}: the shape Toxiproxy's API uses, for every error of the API.
Response error(int status, const std::string& message);

// /faultline/v1/...: proxies, rules (enable, disable), journal, reset, expectations, report.
Response native(const Request& request, Runtime& rt);

}  // namespace admin
}  // namespace faultline::proxy
