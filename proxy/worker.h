// One event loop (one thread) serving every proxy of the scenario through its own listeners.
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "faults/chunk.h"
#include "proxy/runtime.h"
#include "proxy/uv_timer.h"

namespace faultline::proxy {

class Conn;
struct ToxicChange;

// What a worker closes when its grace period ends: a TCP Session or a protocol-aware one.
class WorkerSession {
 public:
  virtual ~WorkerSession() = default;
  virtual void force_close() = 0;
  // The proxy whose client connection this is (null: not a proxy's, e.g. the control API's).
  virtual const ProxyRuntime* proxy_runtime() const { return nullptr; }
  // A toxic of its proxy was added, removed or changed while it runs (toxic_decision.h).
  virtual void apply_toxic_change(const ToxicChange&) {}
};

class Worker {
 public:
  // `listen_fds[i]` is the bound, listening socket for runtime.proxies[i] (owned by this worker).
  Worker(Runtime& runtime, int index, std::vector<int> listen_fds);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs the loop until stopped and every handle is closed. Returns false on a setup failure.
  bool run();
  // Thread-safe: stop accepting, give sessions the grace period, then close them. With force, or
  // when asked a second time, close them at once.
  void request_stop(bool force = false);
  // Extra work on this loop (worker 0 takes signals and journal flushing).
  void on_loop_start(std::function<void(uv_loop_t*)> hook) { loop_start_hook_ = std::move(hook); }
  // Runs when the worker closes its own handles, the last step before its loop ends.
  void on_loop_stop(std::function<void()> hook) { loop_stop_hook_ = std::move(hook); }
  // Another bound, listening socket served on this loop (worker 0: the control API), closed with the
  // proxies' listeners when the worker stops. Call from on_loop_start. False (and *why) when libuv refuses it.
  bool add_listener(int fd, std::function<void(uv_stream_t*)> on_connection, std::string* why);
  // Thread-safe: runs `task` on this worker's loop soon (the control API changing proxies at run time).
  // False, and the task dropped, once the worker has closed its handles (it is stopping).
  bool post(std::function<void(Worker&)> task);
  // On this worker's loop: serve `proxy` on the bound, listening `fd` (taken over), or stop serving it,
  // closing its listener and, with close_connections, its open client connections.
  void listen_proxy(ProxyRuntime* proxy, int fd);
  void unlisten_proxy(const ProxyRuntime* proxy, bool close_connections);
  // On this worker's loop: `old`'s listener accepts for `now` from here on (a reload that kept the address);
  // connections already open keep `old`.
  void retarget_listener(const ProxyRuntime* old, ProxyRuntime* now);
  // On this worker's loop: the open connections of the changed toxic's proxy apply the change.
  void apply_toxic_change(const ToxicChange& change);

  uv_loop_t* loop() noexcept { return &loop_; }
  faults::BufferPool& pool() noexcept { return pool_; }
  LoopEnv& env() noexcept { return env_; }
  Runtime& runtime() noexcept { return runtime_; }
  int index() const noexcept { return index_; }
  void add(WorkerSession* s) { sessions_.insert(s); }
  void remove(WorkerSession* s);
  // One read buffer for every Conn of this loop: a read is consumed before the next one starts.
  faults::Buffer& read_buffer() {
    if (!read_buffer_) read_buffer_ = pool_.take();
    return read_buffer_;
  }
  // Keep-alive upstream connections between requests, per proxy (http). take_idle returns nullptr when
  // there is none; park takes ownership (closes it when the pool is full or the worker is stopping).
  Conn* take_idle(ProxyRuntime* proxy);
  void park_idle(ProxyRuntime* proxy, Conn* conn);

  static constexpr uint64_t kGraceMs = 2000;

 private:
  struct Listener {
    uv_tcp_t handle;
    Worker* worker;
    ProxyRuntime* proxy;
    void (*accept)(Worker&, ProxyRuntime&, uv_stream_t*);  // the protocol's session (protocols.h)
  };
  void begin_stop();
  void run_tasks();
  void open_listener(ProxyRuntime* proxy, int fd);
  void close_sessions();
  void retire(const ProxyRuntime* proxy);
  void close_own_handles();

  Runtime& runtime_;
  int index_;
  std::vector<int> listen_fds_;
  std::vector<ProxyRuntime*> initial_proxies_;  // listen_fds_[i] is initial_proxies_[i]'s
  uv_loop_t loop_;
  uv_async_t stop_async_;
  uv_async_t task_async_;
  std::mutex tasks_mu_;
  std::vector<std::function<void(Worker&)>> tasks_;
  bool tasks_closed_ = false;  // under tasks_mu_
  uv_timer_t grace_timer_;
  faults::BufferPool pool_;
  LoopEnv env_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  struct ExtraListener {
    uv_tcp_t handle;
    Worker* worker;
    std::function<void(uv_stream_t*)> on_connection;
  };
  std::vector<std::unique_ptr<ExtraListener>> extra_listeners_;
  class IdlePool;
  std::unordered_set<WorkerSession*> sessions_;
  std::unordered_set<const ProxyRuntime*> retired_;  // replaced or removed: parks nothing more
  faults::Buffer read_buffer_;
  std::unique_ptr<IdlePool> idle_;
  std::function<void(uv_loop_t*)> loop_start_hook_;
  std::function<void()> loop_stop_hook_;
  bool stopping_ = false;
  std::atomic<bool> force_{false};
  bool handles_closed_ = false;
};

}  // namespace faultline::proxy
