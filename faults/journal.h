// Journal of fired faults: one JSON object per line (SPEC §4), in memory and optionally to a file.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace faultline::faults {

class Journal {
 public:
  using Entry = nlohmann::ordered_json;

  Journal();
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Appends to `path` from now on; false with *why on failure.
  bool open(const std::string& path, std::string* why);
  // Records a fired fault. `fields` holds everything after "seq" and "t_ms", in order.
  // Thread-safe; returns the entry's seq.
  uint64_t record(const Entry& fields);
  // Writes what is buffered to the file. Thread-safe.
  void flush();
  // Lines with seq > since that are still kept in memory (the last `capacity` ones).
  std::vector<std::string> since(uint64_t seq) const;
  uint64_t size() const;  // lines recorded, kept or not (the last seq)
  // The in-memory ring keeps this many lines (the file, when there is one, has every line).
  void set_capacity(size_t lines);
  uint64_t first_kept() const;  // seq of the oldest line still kept (size() + 1 when none)
  static constexpr size_t kDefaultCapacity = 10000;

 private:
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point start_;
  std::deque<std::string> lines_;
  uint64_t recorded_ = 0;
  size_t capacity_ = kDefaultCapacity;
  std::string pending_;
  std::FILE* file_ = nullptr;
};

}  // namespace faultline::faults
