// A piece of a byte stream with its position in the stream and its arrival time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace faultline::faults {

// Owning byte buffer. Buffers of the standard size are recycled through a BufferPool.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t capacity) : data_(new char[capacity]), capacity_(capacity) {}
  static Buffer copy_of(std::string_view bytes) {
    Buffer b(bytes.size() ? bytes.size() : 1);
    std::memcpy(b.data(), bytes.data(), bytes.size());
    return b;
  }
  char* data() noexcept { return data_.get(); }
  const char* data() const noexcept { return data_.get(); }
  size_t capacity() const noexcept { return capacity_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
};

// Per-loop free list of equally sized buffers: no allocation per read on the hot path.
class BufferPool {
 public:
  static constexpr size_t kDefaultSize = 256 * 1024;
  explicit BufferPool(size_t buffer_size = kDefaultSize, size_t max_free = 32)
      : buffer_size_(buffer_size), max_free_(max_free) {}
  Buffer take() {
    if (free_.empty()) return Buffer(buffer_size_);
    Buffer b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void give(Buffer b) {
    if (b.capacity() == buffer_size_ && free_.size() < max_free_) free_.push_back(std::move(b));
  }
  size_t buffer_size() const noexcept { return buffer_size_; }

 private:
  size_t buffer_size_;
  size_t max_free_;
  std::vector<Buffer> free_;
};

struct Chunk {
  Buffer buf;
  size_t begin = 0;         // first valid byte in buf
  size_t len = 0;           // valid bytes from begin
  uint64_t offset = 0;      // stream offset of the first valid byte
  uint64_t arrived_us = 0;  // monotonic time the bytes were read

  const char* data() const noexcept { return buf.data() + begin; }
  std::string_view view() const noexcept { return {data(), len}; }
  // Splits off the first n bytes into a new chunk (copied), leaving the rest in *this.
  Chunk split_front(size_t n) {
    Chunk head;
    head.buf = Buffer::copy_of({data(), n});
    head.len = n;
    head.offset = offset;
    head.arrived_us = arrived_us;
    begin += n;
    len -= n;
    offset += n;
    return head;
  }
};

}  // namespace faultline::faults
