// PostgreSQL on the message session: startup, reply slots up to ReadyForQuery, injected errors with the true
// transaction status, and a failed transaction the server never had.
#include "proxy/postgres/pg_protocol.h"

#include <cctype>

#include "proxy/runtime.h"

namespace faultline::proxy::postgres {

namespace {

constexpr uint32_t kSwallowBit = 0x80000000u;  // a slot of faultline's own (ROLLBACK): the client sees none of it
constexpr std::string_view kAborted =
    "current transaction is aborted, commands ignored until end of transaction block";

std::string bare(char type) { return std::string{type, '\0', '\0', '\0', '\4'}; }

// The next word of SQL after whitespace and comments, upper-case.
std::string next_word(std::string_view sql, size_t& i) {
  for (;;) {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
    if (sql.substr(i, 2) == "--") {
      const size_t eol = sql.find('\n', i);
      i = eol == std::string_view::npos ? sql.size() : eol + 1;
    } else if (sql.substr(i, 2) == "/*") {
      const size_t end = sql.find("*/", i + 2);
      i = end == std::string_view::npos ? sql.size() : end + 2;
    } else {
      break;
    }
  }
  std::string word;
  while (i < sql.size() && word.size() < 16 && std::isalpha(static_cast<unsigned char>(sql[i])))
    word += static_cast<char>(std::toupper(static_cast<unsigned char>(sql[i++])));
  return word;
}

}  // namespace

std::unique_ptr<Protocol> PgProtocol::make(const ProxyRuntime& proxy, uint64_t connection, const std::string&) {
  return std::make_unique<PgProtocol>(connection, proxy.rules != nullptr);
}

Traits PgProtocol::traits() const {
  Traits t;
  for (uint32_t v : {8u, kSslRequestCode})
    for (int shift = 24; shift >= 0; shift -= 8) t.tls_request.push_back(static_cast<char>((v >> shift) & 0xff));
  t.tls_ok = 'S';
  return t;
}

PgProtocol::Ending PgProtocol::ending_of(std::string_view sql) {
  size_t i = 0;
  const std::string first = next_word(sql, i);
  std::string second = next_word(sql, i);
  if (second == "WORK" || second == "TRANSACTION") second = next_word(sql, i);
  if (first == "ROLLBACK" || first == "ABORT") {
    if (second == "TO") return Ending::rollback_to;
    if (second == "PREPARED") return Ending::none;
    return Ending::ends;
  }
  if (first == "COMMIT" || first == "END") return second == "PREPARED" ? Ending::none : Ending::ends;
  return Ending::none;
}

ClientUnit PgProtocol::fatal_unit(const std::string& why, size_t size) {
  ClientUnit unit;
  unit.kind = ClientUnit::Kind::error;
  unit.size = size;
  unit.why = why;
  encode_error(unit.reply, "FATAL", "08P01", "faultline: " + why);
  return unit;
}

ClientUnit PgProtocol::client(std::string_view in) {
  ClientUnit unit;
  if (phase_ == Phase::raw) {  // after a CancelRequest: nothing more is expected; the server decides
    unit.kind = ClientUnit::Kind::pass;
    unit.size = in.size();
    return unit;
  }
  std::string error;
  if (phase_ == Phase::startup) {
    Startup startup;
    switch (parse_startup(in, startup, error)) {
      case Status::incomplete:
        return unit;
      case Status::error:
        return fatal_unit("invalid startup packet: " + error, in.size());
      case Status::complete:
        break;
    }
    unit.size = startup.size;
    switch (startup.kind) {
      case StartupKind::ssl_request:
      case StartupKind::gssenc_request:
        unit.kind = ClientUnit::Kind::answer;  // no encryption here: the client goes on in the clear (or gives up)
        unit.reply.push_back('N');
        return unit;
      case StartupKind::cancel_request:
        phase_ = Phase::raw;
        unit.kind = ClientUnit::Kind::pass;
        return unit;
      case StartupKind::startup:
        user_ = startup.user();
        database_ = startup.database();
        phase_ = Phase::ready;
        unit.kind = ClientUnit::Kind::pass;  // authentication passes through; its slot ends at the first ReadyForQuery
        unit.slots = 1;
        unit.tag = ++next_id_;
        return unit;
    }
  }
  Frame frame;
  switch (next_frame(in, frame, error)) {
    case Status::incomplete:
      return unit;
    case Status::error:
      return fatal_unit("invalid message: " + error, in.size());
    case Status::complete:
      break;
  }
  unit.size = frame.size;
  type_ = frame.type;
  body_ = frame.body;
  if (local_ == LocalGroup::failing) {  // the rest of a group a failed transaction refused, up to its Sync
    if (type_ == 'S') {
      local_ = LocalGroup::none;
      unit.kind = ClientUnit::Kind::answer;
      encode_ready(unit.reply, 'E');
    } else {
      unit.kind = ClientUnit::Kind::skip;
    }
    return unit;
  }
  if (local_ == LocalGroup::ending) {  // a COMMIT or ROLLBACK of a failed transaction, answered as the server would
    unit.kind = ClientUnit::Kind::answer;
    unit.reply = local_group_reply();
    if (type_ == 'S') local_ = LocalGroup::none;
    return unit;
  }
  if (skip_to_sync_) {
    if (type_ != 'S') {
      unit.kind = ClientUnit::Kind::skip;
      return unit;
    }
    // The group's Sync goes upstream; the injected error goes in front of its ReadyForQuery.
    skip_to_sync_ = false;
    barrier_ = true;
    unit.kind = ClientUnit::Kind::pass;
    if (group_open_) {
      group_open_ = false;
    } else {
      unit.slots = 1;
      unit.tag = skip_id_;
    }
    return unit;
  }
  switch (type_) {
    case 'Q': case 'P': case 'B': case 'E': case 'D': case 'C': case 'S': case 'H': case 'F':
      break;
    default:  // authentication responses, COPY data, Terminate, and what only the server can judge
      unit.kind = ClientUnit::Kind::pass;
      return unit;
  }
  decoded_ = false;
  current_sql_.clear();
  const std::string* execute_sql = nullptr;
  switch (type_) {
    case 'Q': {
      Query q;
      if ((decoded_ = decode(body_, q, error))) sql_ = q.sql;
      break;
    }
    case 'P': {
      Parse p;
      if ((decoded_ = decode(body_, p, error))) {
        name_a_ = p.statement;
        sql_ = p.sql;
      }
      break;
    }
    case 'B': {
      Bind b;
      if ((decoded_ = decode(body_, b, error))) {
        name_a_ = b.portal;
        name_b_ = b.statement;
        if (const std::string* sql = statements_.statement_sql(b.statement)) current_sql_ = *sql;
      }
      break;
    }
    case 'E': {
      Execute e;
      if ((decoded_ = decode(body_, e, error))) {
        name_a_ = e.portal;
        execute_sql = statements_.portal_sql(e.portal);
        if (execute_sql) current_sql_ = *execute_sql;
      }
      break;
    }
    case 'D':
    case 'C': {
      DescribeOrClose d;
      if ((decoded_ = decode(body_, d, error, type_))) {
        kind_ = d.kind;
        name_a_ = d.name;
      }
      break;
    }
    default:
      break;
  }
  unit.kind = ClientUnit::Kind::message;
  if (with_messages_) {
    if (type_ == 'Q' && decoded_)
      msg_.emplace(sql_, user_, database_, connection_);
    else
      msg_.emplace(frontend_name(type_), execute_sql, user_, database_, connection_);
    unit.msg = &*msg_;
  }
  return unit;
}

uint32_t PgProtocol::open_group() {
  group_open_ = true;
  group_id_ = ++next_id_;
  return group_id_;
}

Forward PgProtocol::forward() {
  if (failed_) return failed_forward();
  Forward f;
  switch (type_) {
    case 'Q':
      if (decoded_) statements_.simple_query();
      f.tag = ++next_id_;
      return f;
    case 'F':
      f.tag = ++next_id_;
      return f;
    case 'S':
      if (group_open_) {
        group_open_ = false;  // the group's slot is open already; this Sync ends it
        f.slots = 0;
      } else {
        f.tag = ++next_id_;
      }
      return f;
    case 'P':
      if (decoded_) statements_.parse(name_a_, sql_);
      break;
    case 'B':
      if (decoded_) statements_.bind(name_a_, name_b_);
      break;
    case 'C':
      if (decoded_) statements_.close(kind_, name_a_);
      break;
    default:
      break;
  }
  if (group_open_)
    f.slots = 0;
  else
    f.tag = open_group();
  return f;
}

// In a failed transaction only the end of it reaches the server (as ROLLBACK); everything else gets 25P02.
Forward PgProtocol::failed_forward() {
  Forward f;
  f.raw = false;
  f.slots = 0;
  if (type_ == 'Q') {
    switch (ending_of(sql_)) {
      case Ending::ends:
        failed_ = false;
        encode_query(f.bytes, "ROLLBACK");  // answered "ROLLBACK", as a server answers COMMIT in a failed transaction
        f.slots = 1;
        f.tag = ++next_id_;
        return f;
      case Ending::rollback_to:
        failed_ = false;  // the server's transaction never failed: back to the savepoint, it goes on
        f.raw = true;
        f.slots = 1;
        f.tag = ++next_id_;
        return f;
      case Ending::none:
        encode_error(f.local, "ERROR", "25P02", kAborted);
        encode_ready(f.local, 'E');
        return f;
    }
  }
  if (type_ == 'S') {
    encode_ready(f.local, 'E');
    return f;
  }
  if (type_ == 'H') return f;
  const std::string_view sql = type_ == 'P' ? sql_ : std::string_view(current_sql_);
  if (ending_of(sql) == Ending::ends) {
    failed_ = false;
    local_ = LocalGroup::ending;
    encode_query(f.bytes, "ROLLBACK");
    f.slots = 1;
    f.tag = ++next_id_ | kSwallowBit;
    f.local = local_group_reply();
    return f;
  }
  local_ = LocalGroup::failing;
  encode_error(f.local, "ERROR", "25P02", kAborted);
  return f;
}

// What a server answers to each message of an extended-protocol COMMIT in a failed transaction.
std::string PgProtocol::local_group_reply() {
  std::string out;
  switch (type_) {
    case 'P': return bare('1');  // ParseComplete
    case 'B': return bare('2');  // BindComplete
    case 'D': return bare('n');  // NoData
    case 'C': return bare('3');  // CloseComplete
    case 'E':
      encode_command_complete(out, "ROLLBACK");
      return out;
    case 'S':
      encode_ready(out, 'I');
      return out;
    default:
      return out;
  }
}

Injected PgProtocol::inject(const faults::ActionSpec& action) {
  Injected out;
  if (action.type == faults::ActionSpec::Type::postgres_fatal) {
    encode_error(out.bytes, "FATAL", action.sqlstate, action.message);
    out.close_after = true;
    return out;
  }
  std::string error;
  encode_error(error, action.severity.empty() ? "ERROR" : action.severity, action.sqlstate, action.message);
  if (type_ == 'Q' || type_ == 'F' || (type_ == 'S' && !group_open_)) {
    // Not sent; a Sync of our own learns the transaction status, and the error goes in front of its answer.
    const uint32_t id = ++next_id_;
    insertions_[id] = std::move(error);
    out.upstream = bare('S');
    out.upstream_slots = 1;
    out.upstream_tag = id;
    barrier_ = true;
    return out;
  }
  if (type_ == 'S') {  // the Sync of an open group: it goes as it is, the error in front of its answer
    insertions_[group_id_] = std::move(error);
    group_open_ = false;
    out.upstream = bare('S');
    barrier_ = true;
    return out;
  }
  // Inside a group: as a server after an error, skip to the Sync.
  if (group_open_) {
    insertions_[group_id_] = std::move(error);
  } else {
    skip_id_ = ++next_id_;
    insertions_[skip_id_] = std::move(error);
  }
  skip_to_sync_ = true;
  return out;
}

ReplyUnit PgProtocol::reply(std::string_view in, uint32_t head_tag) {
  ReplyUnit unit;
  Frame frame;
  std::string error;
  switch (next_frame(in, frame, error)) {
    case Status::incomplete:
      return unit;
    case Status::error:
      unit.kind = ReplyUnit::Kind::error;
      unit.why = error;
      return unit;
    case Status::complete:
      break;
  }
  unit.size = frame.size;
  if (backend_async(frame.type)) {
    unit.kind = ReplyUnit::Kind::async;
    return unit;
  }
  unit.kind = ReplyUnit::Kind::frame;
  unit.ends = frame.type == 'Z';
  if (head_tag != kNoSlot && (head_tag & kSwallowBit) != 0) {
    unit.replaced = true;  // faultline's own ROLLBACK: the client has its answer already
    return unit;
  }
  if (frame.type == 'E') server_errored_ = true;
  if (frame.type != 'Z') return unit;
  char status = 'I';
  if (!ready_status(frame.body, status, error)) {
    unit.kind = ReplyUnit::Kind::error;
    unit.why = error;
    return unit;
  }
  if (auto it = insertions_.find(head_tag); it != insertions_.end()) {
    if (!server_errored_) {  // the server's own error came first and stands, as it would have stopped there
      unit.replaced = true;
      unit.bytes = std::move(it->second);
      if (status == 'T') {
        status = 'E';
        failed_ = true;
      }
      encode_ready(unit.bytes, status);
    }
    insertions_.erase(it);
    barrier_ = false;
  }
  server_errored_ = false;
  return unit;
}

FailureReply PgProtocol::upstream_failure(Failure failure, const std::string& why) {
  FailureReply out;
  if (failure == Failure::bad_reply) return out;  // nothing can be said in the middle of a broken reply
  encode_error(out.bytes, "FATAL", "08006", why);
  return out;
}

std::string PgProtocol::goodbye() const { return phase_ == Phase::ready ? bare('X') : ""; }

}  // namespace faultline::proxy::postgres
