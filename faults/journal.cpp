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
  const uint64_t seq = ++recorded_;
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
  while (lines_.size() > capacity_) lines_.pop_front();
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
  const uint64_t first = recorded_ + 1 - lines_.size();
  const uint64_t skip = seq >= first ? seq - first + 1 : 0;
  if (skip >= lines_.size()) return {};
  return {lines_.begin() + static_cast<std::ptrdiff_t>(skip), lines_.end()};
}

uint64_t Journal::size() const {
  std::lock_guard lock(mu_);
  return recorded_;
}

void Journal::set_capacity(size_t lines) {
  std::lock_guard lock(mu_);
  capacity_ = lines == 0 ? 1 : lines;
  while (lines_.size() > capacity_) lines_.pop_front();
}

uint64_t Journal::first_kept() const {
  std::lock_guard lock(mu_);
  return recorded_ + 1 - lines_.size();
}

}  // namespace faultline::faults
