// Journal of fired faults: one JSON object per line (SPEC §4), in memory and optionally to a file.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
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
  // Lines with seq > since.
  std::vector<std::string> since(uint64_t seq) const;
  uint64_t size() const;

 private:
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point start_;
  std::vector<std::string> lines_;
  std::string pending_;
  std::FILE* file_ = nullptr;
};

}  // namespace faultline::faults
