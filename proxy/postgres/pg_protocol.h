// protocol = "postgres": the PostgreSQL wire protocol on the message session (proxy/protocol.h).
//
// - Startup is its own phase (as pgbouncer keeps it): SSLRequest and GSSENCRequest are answered 'N', the
//   startup packet's user and database become context of every later message, authentication (trust, md5,
//   SCRAM) passes through untouched, a CancelRequest goes to the upstream as it came.
// - A reply slot is everything up to a ReadyForQuery: one per simple Query, one per extended-protocol group
//   (the messages from the first after a Sync up to and including the next Sync); the replies inside stream
//   through as they come.
// - postgres.error never reaches the server: the client gets ErrorResponse then ReadyForQuery with the true
//   transaction status. To learn that status the proxy sends a Sync of its own (simple Query) or the group's
//   Sync (extended, after skipping to it as a server would) and puts the error in front of the server's
//   ReadyForQuery. Inside a transaction it then answers as a server in a failed transaction would (25P02),
//   and the COMMIT or ROLLBACK that ends it goes upstream as ROLLBACK.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "proxy/postgres/query_message.h"
#include "proxy/postgres/statements.h"
#include "proxy/postgres/wire.h"
#include "proxy/protocol.h"

namespace faultline::proxy {
struct ProxyRuntime;
}

namespace faultline::proxy::postgres {

class PgProtocol final : public Protocol {
 public:
  PgProtocol(uint64_t connection, bool with_messages) : connection_(connection), with_messages_(with_messages) {}
  static std::unique_ptr<Protocol> make(const ProxyRuntime& proxy, uint64_t connection, const std::string& peer);

  ClientUnit client(std::string_view in) override;
  Forward forward() override;
  Injected inject(const faults::ActionSpec& action) override;
  bool wait_for_replies() const override { return barrier_; }
  ReplyUnit reply(std::string_view in, uint32_t head_tag) override;
  FailureReply upstream_failure(Failure failure, const std::string& why) override;
  std::string goodbye() const override;
  // With upstream_tls: an SSLRequest, answered 'S', before the handshake (as libpq does).
  Traits traits() const override;

  // What a statement does to a transaction, from its first words.
  enum class Ending { none, ends, rollback_to };
  static Ending ending_of(std::string_view sql);

 private:
  enum class Phase { startup, ready, raw };
  // A failed transaction's extended-protocol group, answered here.
  enum class LocalGroup { none, failing, ending };

  ClientUnit fatal_unit(const std::string& why, size_t size);
  uint32_t open_group();
  Forward failed_forward();
  std::string local_group_reply();

  uint64_t connection_;
  bool with_messages_;
  Phase phase_ = Phase::startup;
  std::string user_, database_;
  Statements statements_;
  std::optional<QueryMessage> msg_;

  // The message just parsed.
  char type_ = 0;
  std::string_view body_;
  bool decoded_ = false;
  std::string_view sql_;         // Query, Parse
  std::string_view name_a_;      // Parse: statement; Bind: portal; Execute: portal; Describe/Close: name
  std::string_view name_b_;      // Bind: statement
  char kind_ = 0;                // Describe/Close: 'S' or 'P'
  std::string current_sql_;      // Execute / Bind: the SQL behind it, when known

  uint32_t next_id_ = 0;
  bool group_open_ = false;      // a group's first message went upstream and its Sync has not
  uint32_t group_id_ = 0;
  bool skip_to_sync_ = false;    // an injected error in a group: the rest of it up to Sync is skipped
  uint32_t skip_id_ = 0;         // ... and its Sync's ReadyForQuery gets the error
  bool barrier_ = false;         // an error waits to learn the transaction status: hold what follows
  std::unordered_map<uint32_t, std::string> insertions_;  // group id -> ErrorResponse before its ReadyForQuery
  bool server_errored_ = false;  // the server sent an ErrorResponse in the group being answered
  bool failed_ = false;          // emulating a failed transaction the server does not know about
  LocalGroup local_ = LocalGroup::none;
};

}  // namespace faultline::proxy::postgres
