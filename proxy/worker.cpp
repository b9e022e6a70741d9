// A worker's loop: listeners accept into sessions; a stop closes listeners, waits out the grace
// period, closes what is left, and returns once every handle is closed.
#include "proxy/worker.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "proxy/conn.h"
#include "proxy/protocols.h"
#include "proxy/toxic_decision.h"

namespace faultline::proxy {

namespace {
uv_handle_t* as_handle(auto* h) { return reinterpret_cast<uv_handle_t*>(h); }
}  // namespace

// Idle upstream connections: any byte or close from an idle upstream ends it (a response nobody asked for).
class Worker::IdlePool final : public ConnHandler {
 public:
  static constexpr size_t kMaxPerProxy = 64;
  std::unordered_map<ProxyRuntime*, std::vector<Conn*>> idle;

  void on_data(Conn& c, std::string_view) override { c.close(); }
  void on_eof(Conn& c) override { c.close(); }
  void on_error(Conn&, const std::string&, bool) override {}
  void on_closed(Conn& c) override {
    for (auto& [proxy, list] : idle) std::erase(list, &c);
  }
  void close_all() {
    std::vector<Conn*> all;
    for (auto& [proxy, list] : idle) all.insert(all.end(), list.begin(), list.end());
    for (Conn* c : all) c->close();
  }
  void close_of(const ProxyRuntime* proxy) {
    auto it = idle.find(const_cast<ProxyRuntime*>(proxy));
    if (it == idle.end()) return;
    const std::vector<Conn*> list = std::move(it->second);
    idle.erase(it);
    for (Conn* c : list) c->close();
  }
};

Conn* Worker::take_idle(ProxyRuntime* proxy) {
  auto it = idle_->idle.find(proxy);
  if (it == idle_->idle.end() || it->second.empty()) return nullptr;
  Conn* c = it->second.back();
  it->second.pop_back();
  return c;
}

void Worker::park_idle(ProxyRuntime* proxy, Conn* conn) {
  auto& list = idle_->idle[proxy];
  conn->set_handler(idle_.get());
  if (stopping_ || list.size() >= IdlePool::kMaxPerProxy || conn->closing() || retired_.contains(proxy)) {
    conn->close();
    return;
  }
  list.push_back(conn);
  conn->read_start();
}

namespace {
// Taken before the threads start: the control API may add to runtime.proxies while a worker starts up.
std::vector<ProxyRuntime*> proxies_of(Runtime& rt) {
  std::vector<ProxyRuntime*> out;
  for (auto& p : rt.proxies) out.push_back(p.get());
  return out;
}
}  // namespace

Worker::Worker(Runtime& runtime, int index, std::vector<int> listen_fds)
    : runtime_(runtime),
      index_(index),
      listen_fds_(std::move(listen_fds)),
      initial_proxies_(proxies_of(runtime)),
      env_(&loop_),
      idle_(std::make_unique<IdlePool>()) {
  uv_loop_init(&loop_);
  // Made here, not in run(): another thread may request_stop() before this worker's thread starts.
  uv_async_init(&loop_, &stop_async_, [](uv_async_t* a) { static_cast<Worker*>(a->data)->begin_stop(); });
  stop_async_.data = this;
  uv_async_init(&loop_, &task_async_, [](uv_async_t* a) { static_cast<Worker*>(a->data)->run_tasks(); });
  task_async_.data = this;
}

bool Worker::post(std::function<void(Worker&)> task) {
  std::lock_guard lock(tasks_mu_);
  if (tasks_closed_) return false;
  tasks_.push_back(std::move(task));
  uv_async_send(&task_async_);
  return true;
}

void Worker::run_tasks() {
  std::vector<std::function<void(Worker&)>> tasks;
  {
    std::lock_guard lock(tasks_mu_);
    tasks.swap(tasks_);
  }
  for (auto& t : tasks) {
    try {
      t(*this);
    } catch (const std::exception& e) {
      spdlog::error("worker {}: task failed: {}", index_, e.what());
    }
  }
}

void Worker::listen_proxy(ProxyRuntime* proxy, int fd) {
  if (stopping_) {
    ::close(fd);
    return;
  }
  open_listener(proxy, fd);
}

void Worker::unlisten_proxy(const ProxyRuntime* proxy, bool close_connections) {
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if ((*it)->proxy != proxy) {
      ++it;
      continue;
    }
    // Freed in its close callback: the handle memory must outlive uv_close.
    Listener* l = it->release();
    it = listeners_.erase(it);
    uv_close(as_handle(&l->handle), [](uv_handle_t* h) { delete static_cast<Listener*>(h->data); });
  }
  if (!close_connections) return;
  retire(proxy);
  std::vector<WorkerSession*> open;
  for (WorkerSession* s : sessions_)
    if (s->proxy_runtime() == proxy) open.push_back(s);
  for (WorkerSession* s : open) s->force_close();
}

void Worker::retarget_listener(const ProxyRuntime* old, ProxyRuntime* now) {
  for (auto& l : listeners_)
    if (l->proxy == old) {
      l->proxy = now;
      l->accept = acceptor(now->spec->protocol);
    }
  retire(old);
}

// A proxy replaced or removed: its idle upstream connections close, and no more are parked for it.
void Worker::retire(const ProxyRuntime* proxy) {
  retired_.insert(proxy);
  idle_->close_of(proxy);
}

void Worker::apply_toxic_change(const ToxicChange& change) {
  std::vector<WorkerSession*> open;
  for (WorkerSession* s : sessions_)
    if (s->proxy_runtime() == change.proxy) open.push_back(s);
  // A change may end a connection (a toxic letting go of an end): each is looked up again before its turn.
  for (WorkerSession* s : open)
    if (sessions_.contains(s)) s->apply_toxic_change(change);
}

Worker::~Worker() {
  for (int fd : listen_fds_)
    if (fd >= 0) ::close(fd);
}

void Worker::remove(WorkerSession* s) {
  sessions_.erase(s);
  if (stopping_ && sessions_.empty()) close_own_handles();
}

bool Worker::run() {
  uv_timer_init(&loop_, &grace_timer_);
  grace_timer_.data = this;

  for (size_t i = 0; i < listen_fds_.size(); ++i) {
    open_listener(initial_proxies_[i], listen_fds_[i]);
    listen_fds_[i] = -1;  // the listener owns it now (or closed it)
  }
  if (loop_start_hook_) loop_start_hook_(&loop_);
  uv_run(&loop_, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) spdlog::error("worker {}: loop closed with handles still open", index_);
  return rc == 0;
}

void Worker::open_listener(ProxyRuntime* proxy, int fd) {
  auto l = std::make_unique<Listener>();
  l->worker = this;
  l->proxy = proxy;
  l->accept = acceptor(proxy->spec->protocol);
  uv_tcp_init(&loop_, &l->handle);
  l->handle.data = l.get();
  int rc = uv_tcp_open(&l->handle, fd);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->handle), 511, [](uv_stream_t* server, int status) {
      auto* lst = static_cast<Listener*>(server->data);
      if (status < 0) {
        spdlog::warn("[{}] accept: {}", lst->proxy->spec->name, uv_strerror(status));
        return;
      }
      if (lst->worker->stopping_) return;
      try {
        lst->accept(*lst->worker, *lst->proxy, server);
      } catch (const std::exception& e) {  // e.g. out of memory: refuse this one, keep serving
        spdlog::error("[{}] accept: internal error: {}", lst->proxy->spec->name, e.what());
      }
    });
  } else {
    ::close(fd);
  }
  if (rc != 0) spdlog::error("[{}] listen: {}", proxy->spec->name, uv_strerror(rc));
  listeners_.push_back(std::move(l));
}

bool Worker::add_listener(int fd, std::function<void(uv_stream_t*)> on_connection, std::string* why) {
  auto l = std::make_unique<ExtraListener>();
  l->worker = this;
  l->on_connection = std::move(on_connection);
  uv_tcp_init(&loop_, &l->handle);
  l->handle.data = l.get();
  int rc = uv_tcp_open(&l->handle, fd);
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->handle), 128, [](uv_stream_t* server, int status) {
      auto* lst = static_cast<ExtraListener*>(server->data);
      if (status < 0 || lst->worker->stopping_) return;
      try {
        lst->on_connection(server);
      } catch (const std::exception& e) {
        spdlog::error("accept: internal error: {}", e.what());
      }
    });
  if (rc != 0) {
    *why = uv_strerror(rc);
    uv_close(as_handle(&l->handle), nullptr);
    extra_listeners_.push_back(std::move(l));  // freed with the worker, after its close callback
    return false;
  }
  extra_listeners_.push_back(std::move(l));
  return true;
}

void Worker::request_stop(bool force) {
  if (force) force_.store(true);
  uv_async_send(&stop_async_);
}

void Worker::begin_stop() {
  if (stopping_) {
    if (force_.load() && !handles_closed_) close_sessions();
    return;
  }
  stopping_ = true;
  for (auto& l : listeners_) uv_close(as_handle(&l->handle), nullptr);
  for (auto& l : extra_listeners_)
    if (!uv_is_closing(as_handle(&l->handle))) uv_close(as_handle(&l->handle), nullptr);
  idle_->close_all();
  if (sessions_.empty()) {
    close_own_handles();
    return;
  }
  if (force_.load()) {
    close_sessions();
    return;
  }
  spdlog::info("waiting up to {} ms for {} open connection(s)", kGraceMs, sessions_.size());
  uv_timer_start(
      &grace_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->close_sessions(); }, kGraceMs, 0);
}

void Worker::close_sessions() {
  // Copy: force_close removes sessions from the set (in close callbacks, but be safe).
  std::vector<WorkerSession*> open(sessions_.begin(), sessions_.end());
  for (WorkerSession* s : open) s->force_close();
}

void Worker::close_own_handles() {
  if (handles_closed_) return;
  handles_closed_ = true;
  idle_->close_all();
  if (read_buffer_) pool_.give(std::move(read_buffer_));
  uv_close(as_handle(&grace_timer_), nullptr);
  uv_close(as_handle(&stop_async_), nullptr);
  {
    std::lock_guard lock(tasks_mu_);
    tasks_closed_ = true;  // nothing posted from here on would run
  }
  uv_close(as_handle(&task_async_), nullptr);
  if (loop_stop_hook_) loop_stop_hook_();
}

}  // namespace faultline::proxy
