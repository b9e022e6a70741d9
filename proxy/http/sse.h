// Finds where server-sent events end in a decoded response body, so sse_cut and sse_delay act on whole events.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace faultline::proxy::http {

// An event is one or more non-empty lines (fields or comments) closed by a blank line. Lines end with CRLF,
// LF or CR (the SSE spec), and a CRLF split between two pieces is still one line end. Repeated blank lines
// do not make empty events.
class SseSplitter {
 public:
  // Feeds the next piece of decoded body; returns, in order, the offsets within `piece` just after each event
  // that completed. When a blank line ends in CR at the very end of a piece, whether an LF follows is only
  // known from the next piece: that event is reported there, at offset 1 if the piece starts with the LF, or
  // at offset 0 (it ended exactly between the pieces).
  std::vector<size_t> feed(std::string_view piece);
  // The body ended: returns true if that completes an event still waiting for the byte after its final CR.
  bool finish();
  // Events completed so far.
  size_t events() const { return events_; }

 private:
  size_t events_ = 0;
  bool line_empty_ = true;        // the current line has no characters yet
  bool block_has_lines_ = false;  // the current event has at least one non-empty line
  bool pending_cr_ = false;       // the last byte was a CR, so an LF next is part of the same line end
  bool pending_event_ = false;    // that CR ended a blank line that completes an event
};

}  // namespace faultline::proxy::http
