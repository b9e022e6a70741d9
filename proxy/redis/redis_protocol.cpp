// Redis on the message session: which reply answers which command, whatever the connection's mode.
#include "proxy/redis/redis_protocol.h"

#include <charconv>

#include "proxy/runtime.h"

namespace faultline::proxy::redis {

namespace {

constexpr std::string_view kExecAbortReply = "-EXECABORT Transaction discarded because of previous errors.\r\n";

char upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

// `text` equals `upper_word` ignoring case (command names come in any case).
bool is(std::string_view text, std::string_view upper_word) {
  if (text.size() != upper_word.size()) return false;
  for (size_t i = 0; i < text.size(); ++i)
    if (upper(text[i]) != upper_word[i]) return false;
  return true;
}

std::string upper_copy(std::string_view text) {
  std::string out(text.substr(0, 32));
  for (char& c : out) c = upper(c);
  return out;
}

bool pubsub_head(std::string_view head) {
  return head == "message" || head == "pmessage" || head == "smessage" || head == "subscribe" ||
         head == "psubscribe" || head == "ssubscribe" || head == "unsubscribe" || head == "punsubscribe" ||
         head == "sunsubscribe";
}

}  // namespace

std::unique_ptr<Protocol> RedisProtocol::make(const ProxyRuntime& proxy, uint64_t connection, const std::string&) {
  return std::make_unique<RedisProtocol>(connection, proxy.rules != nullptr);
}

ClientUnit RedisProtocol::client(std::string_view in) {
  ClientUnit unit;
  switch (commands_.parse(in)) {
    case Status::incomplete:
      return unit;
    case Status::error:
      // As Redis does: the error, then the connection is closed.
      unit.kind = ClientUnit::Kind::error;
      unit.size = in.size();
      unit.why = commands_.error();
      encode_error(unit.reply, "ERR " + commands_.error());
      return unit;
    case Status::complete:
      break;
  }
  unit.size = commands_.size();
  const size_t n = commands_.arg_count();
  if (n == 0) {  // a blank line, *0 or *-1: Redis ignores it and answers nothing
    unit.kind = ClientUnit::Kind::pass;
    return unit;
  }
  const std::string_view name = commands_.arg(in, 0);
  cmd_ = Cmd::other;
  if (is(name, "HELLO")) {
    cmd_ = Cmd::hello;
    hello_version_ = n > 1 ? std::string(commands_.arg(in, 1).substr(0, 8)) : "";
  } else if (is(name, "CLIENT")) {
    cmd_ = Cmd::client;
    client_sub_ = n > 2 ? upper_copy(commands_.arg(in, 1)) + " " + upper_copy(commands_.arg(in, 2)) : "";
  } else if (is(name, "SUBSCRIBE") || is(name, "PSUBSCRIBE") || is(name, "SSUBSCRIBE")) {
    cmd_ = Cmd::subscribe;
  } else if (is(name, "UNSUBSCRIBE") || is(name, "PUNSUBSCRIBE") || is(name, "SUNSUBSCRIBE")) {
    cmd_ = Cmd::unsubscribe;
  } else if (is(name, "MONITOR")) {
    cmd_ = Cmd::monitor;
  } else if (is(name, "MULTI")) {
    cmd_ = Cmd::multi;
  } else if (is(name, "EXEC")) {
    cmd_ = Cmd::exec;
  } else if (is(name, "DISCARD")) {
    cmd_ = Cmd::discard;
  } else if (is(name, "RESET")) {
    cmd_ = Cmd::reset;
  } else if (is(name, "QUIT")) {
    cmd_ = Cmd::quit;
  }
  unit.kind = ClientUnit::Kind::message;
  if (with_messages_) {
    args_.clear();
    for (size_t i = 0; i < n; ++i) args_.push_back(commands_.arg(in, i));
    msg_.emplace(args_, connection_);
    unit.msg = &*msg_;
  }
  return unit;
}

Forward RedisProtocol::forward() {
  Forward f;
  if (cmd_ == Cmd::client && client_sub_.rfind("REPLY ", 0) == 0) {
    if (client_sub_ == "REPLY OFF") {
      reply_off_ = true;
      skip_next_ = false;
      f.slots = 0;
    } else if (client_sub_ == "REPLY SKIP") {
      if (!reply_off_) skip_next_ = true;  // this command and the next go unanswered
      f.slots = 0;
    } else if (client_sub_ == "REPLY ON") {
      reply_off_ = skip_next_ = false;
    }
    return f;
  }
  switch (cmd_) {
    case Cmd::hello:
      if (hello_version_ == "3") resp_ = 3;
      if (hello_version_ == "2") resp_ = 2;
      break;
    case Cmd::subscribe:
    case Cmd::unsubscribe:
      // Confirmations come as pub/sub frames (RESP3: pushes), out of band like the messages.
      pubsub_ = true;
      f.slots = 0;
      break;
    case Cmd::monitor:
      f.tag = kMonitor;
      break;
    case Cmd::multi:
      in_multi_ = true;
      multi_failed_ = false;
      queued_ = 0;
      multi_replies_.clear();
      break;
    case Cmd::exec:
      if (in_multi_ && multi_failed_) {
        // The server still holds the queued commands: it discards them, the client hears what Redis says
        // when a command failed to queue.
        f.raw = false;
        encode_command(f.bytes, {"DISCARD"});
        f.tag = kExecAbort;
      } else if (in_multi_ && !multi_replies_.empty()) {
        f.tag = kExecMerge;
        exec_merges_.push_back(std::move(multi_replies_));
      }
      in_multi_ = multi_failed_ = false;
      multi_replies_.clear();
      break;
    case Cmd::discard:
      in_multi_ = multi_failed_ = false;
      multi_replies_.clear();
      break;
    case Cmd::reset:
      f.tag = kReset;
      resp_ = 2;
      reply_off_ = skip_next_ = in_multi_ = multi_failed_ = false;
      multi_replies_.clear();
      break;
    case Cmd::quit:
    case Cmd::client:
    case Cmd::other:
      if (in_multi_) ++queued_;
      break;
  }
  if (reply_off_ || skip_next_) {
    if (f.slots > 0) skip_next_ = false;
    f.slots = 0;
  }
  return f;
}

Injected RedisProtocol::inject(const faults::ActionSpec& action) {
  Injected out;
  const bool queued = in_multi_ && cmd_ != Cmd::exec && cmd_ != Cmd::discard && cmd_ != Cmd::multi;
  if (action.type == faults::ActionSpec::Type::redis_reply) {
    std::string value;
    encode_value(value, action.value, resp_);
    if (queued) {  // Redis answers QUEUED now and the value in EXEC's array, in the command's place
      multi_replies_.emplace_back(queued_++, std::move(value));
      out.bytes = "+QUEUED\r\n";
    } else {
      out.bytes = std::move(value);
    }
  } else {
    encode_error(out.bytes, action.type == faults::ActionSpec::Type::redis_error ? action.message
                                                                               : std::string("ERR faultline: ") + action.name() + " does not apply to redis");
    if (queued) multi_failed_ = true;  // as a command that failed to queue: EXEC will abort
  }
  if (in_multi_ && (cmd_ == Cmd::exec || cmd_ == Cmd::discard)) {
    // Answered here, the transaction must still end on the server.
    encode_command(out.upstream, {"DISCARD"});
    out.upstream_slots = 1;
    out.upstream_tag = kSwallow;
    in_multi_ = multi_failed_ = false;
    multi_replies_.clear();
  }
  if (reply_off_ || skip_next_) {
    skip_next_ = false;
    out.bytes.clear();  // the client asked not to be answered
  }
  return out;
}

ReplyUnit RedisProtocol::reply(std::string_view in, uint32_t head_tag) {
  ReplyUnit unit;
  switch (replies_.parse(in)) {
    case Status::incomplete:
      return unit;
    case Status::error:
      unit.kind = ReplyUnit::Kind::error;
      unit.why = replies_.error();
      return unit;
    case Status::complete:
      break;
  }
  unit.size = replies_.size();
  const std::string_view frame = in.substr(0, unit.size);
  if (monitor_) {
    if (head_tag == kReset && frame == "+RESET\r\n") {
      monitor_ = false;  // RESET's answer ends MONITOR; everything before it was a monitor line
    } else {
      unit.kind = ReplyUnit::Kind::async;
      return unit;
    }
  }
  if (replies_.is_push()) {
    unit.kind = ReplyUnit::Kind::async;
    return unit;
  }
  if (pubsub_ && resp_ == 2 && replies_.type() == '*' && pubsub_head(replies_.head())) {
    const std::string_view head = replies_.head();
    if (head.find("unsubscribe") != std::string_view::npos && replies_.third_integer() == 0) pubsub_ = false;
    unit.kind = ReplyUnit::Kind::async;
    return unit;
  }
  unit.kind = ReplyUnit::Kind::frame;
  unit.ends = true;
  switch (head_tag) {
    case kMonitor:
      if (!replies_.is_error()) monitor_ = true;
      break;
    case kExecAbort:
      unit.replaced = true;
      unit.bytes = kExecAbortReply;
      break;
    case kExecMerge:
      unit.replaced = true;
      unit.bytes = rewrite_exec(frame);
      break;
    case kReset:
      pubsub_ = monitor_ = false;
      break;
    case kSwallow:
      unit.replaced = true;  // the client has its answer already
      break;
    default:
      break;
  }
  return unit;
}

// EXEC's array with the replies rules gave queued commands put back in their places. A nil or an error
// (WATCH failed, EXECABORT) stays as it is.
std::string RedisProtocol::rewrite_exec(std::string_view frame) {
  std::vector<std::pair<size_t, std::string>> merges;
  if (!exec_merges_.empty()) {
    merges = std::move(exec_merges_.front());
    exec_merges_.pop_front();
  }
  const size_t eol = frame.find("\r\n");
  int64_t count = -1;
  if (!frame.empty() && frame[0] == '*' && eol != std::string_view::npos)
    std::from_chars(frame.data() + 1, frame.data() + eol, count);
  if (count < 0 || merges.empty()) return std::string(frame);
  std::vector<std::string_view> elements;
  size_t pos = eol + 2;
  ReplyParser element;
  for (int64_t i = 0; i < count; ++i) {
    if (element.parse(frame.substr(pos)) != Status::complete) return std::string(frame);
    elements.push_back(frame.substr(pos, element.size()));
    pos += element.size();
  }
  std::string out = "*" + std::to_string(elements.size() + merges.size()) + "\r\n";
  size_t next_element = 0, next_merge = 0;
  for (size_t at = 0; at < elements.size() + merges.size(); ++at) {
    if (next_merge < merges.size() && merges[next_merge].first == at)
      out += merges[next_merge++].second;
    else if (next_element < elements.size())
      out += elements[next_element++];
    else
      out += merges[next_merge++].second;
  }
  return out;
}

FailureReply RedisProtocol::upstream_failure(Failure failure, const std::string& why) {
  FailureReply out;
  if (failure == Failure::bad_reply) return out;  // nothing can be said in the middle of a broken reply
  encode_error(out.bytes, "ERR " + why);
  return out;
}

}  // namespace faultline::proxy::redis
