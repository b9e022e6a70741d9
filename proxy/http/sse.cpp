// Server-sent-events boundary finder: a small line state machine that survives any split of the body.
#include "proxy/http/sse.h"

namespace faultline::proxy::http {

std::vector<size_t> SseSplitter::feed(std::string_view piece) {
  std::vector<size_t> ends;
  for (size_t i = 0; i < piece.size(); ++i) {
    char c = piece[i];
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {
        // The LF of a CRLF: cutting before it would leave a client that waits for "\r\n\r\n" hanging.
        if (pending_event_) {
          pending_event_ = false;
          ++events_;
          ends.push_back(i + 1);
        }
        continue;
      }
      if (pending_event_) {
        pending_event_ = false;
        ++events_;
        ends.push_back(i);
      }
    }
    if (c != '\r' && c != '\n') {
      line_empty_ = false;
      continue;
    }
    if (!line_empty_) {
      block_has_lines_ = true;
    } else if (block_has_lines_) {
      block_has_lines_ = false;
      if (c == '\n') {
        ++events_;
        ends.push_back(i + 1);
      } else {
        pending_event_ = true;
      }
    }
    line_empty_ = true;
    pending_cr_ = c == '\r';
  }
  return ends;
}

bool SseSplitter::finish() {
  pending_cr_ = false;
  if (!pending_event_) return false;
  pending_event_ = false;
  ++events_;
  return true;
}

}  // namespace faultline::proxy::http
