// Journal lines are kept in memory and written to the file in batches, so the loop never waits on disk
// for more than one buffered write.
#include "faults/journal.h"

#include <cerrno>
#include <cmath>
#include <cstring>

namespace faultline::faults {

Journal::Journal() : start_(std::chrono::steady_clock::now()) {}

Journal::~Journal() {
  flush();
  if (file_) std::fclose(file_);
}

bool Journal::open(const std::string& path, std::string* why) {
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) {
    if (why) *why = "cannot open journal '" + path + "': " + std::strerror(errno);
    return false;
  }
  std::lock_guard lock(mu_);
  if (file_) std::fclose(file_);
  file_ = f;
  return true;
}

uint64_t Journal::record(const Entry& fields) {
  std::lock_guard lock(mu_);
  const uint64_t seq = lines_.size() + 1;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  Entry line;
  line["seq"] = seq;
  line["t_ms"] = std::round(ms * 10.0) / 10.0;
  for (const auto& [k, v] : fields.items()) line[k] = v;
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (file_) {
    pending_ += text;
    pending_ += '\n';
  }
  lines_.push_back(std::move(text));
  return seq;
}

void Journal::flush() {
  std::lock_guard lock(mu_);
  if (!file_ || pending_.empty()) return;
  std::fwrite(pending_.data(), 1, pending_.size(), file_);
  std::fflush(file_);
  pending_.clear();
}

std::vector<std::string> Journal::since(uint64_t seq) const {
  std::lock_guard lock(mu_);
  if (seq >= lines_.size()) return {};
  return {lines_.begin() + static_cast<std::ptrdiff_t>(seq), lines_.end()};
}

uint64_t Journal::size() const {
  std::lock_guard lock(mu_);
  return lines_.size();
}

}  // namespace faultline::faults
