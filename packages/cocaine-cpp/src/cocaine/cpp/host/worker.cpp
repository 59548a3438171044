// The C++ worker host: loads an app's shared library and serves the engine's jobs over the worker
// protocol (docs/protocol.md).
//
// All of it sits behind two C entry points in libcocaine-cpp-worker.so. The process backend runs
// cocaine_serve() through the small executable in main.cpp. The thread backend calls
// cocaine_serve_in() on a thread of the daemon through ctypes, which releases the Python GIL for the
// whole call, so C++ handlers run in parallel with the daemon and with each other. The worker
// reaches the engine over a link (link.hpp): its stream link, descriptor N, when the endpoint is
// fd:N, or a ZeroMQ socket; a thread worker on ZeroMQ is passed the daemon's ZeroMQ context and the
// functions of the daemon's own libzmq (pyzmq's), since inproc endpoints only exist within one
// context of one libzmq.

#include "link.hpp"

#include <cocaine/app.hpp>
#include <cocaine/msgpack.hpp>

#include <cxxabi.h>
#include <dlfcn.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// The libzmq this library is linked with, for workers that are processes.
const cocaine_zmq_api linked_zmq = {zmq_socket, zmq_setsockopt, zmq_connect, zmq_close, zmq_send, zmq_poll,
                                    zmq_msg_init, zmq_msg_recv, zmq_msg_data, zmq_msg_size, zmq_msg_close,
                                    zmq_strerror};

using cocaine::Value;
using cocaine::host::Link;
using Clock = std::chrono::steady_clock;
namespace msgpack = cocaine::msgpack;

// Message types and constants of protocol version 1 (docs/protocol.md).
enum Kind : uint64_t { HELLO = 1, HEARTBEAT = 2, TERMINATE = 3, INVOKE = 4, CHUNK = 5, END = 6, ERROR = 7, LOG = 8, CREDIT = 9,
                       META = 10, HANDBACK = 11, OPTIONS = 12, GRANT = 13, REPLY = 14 };
constexpr uint64_t protocol_version = 1;
constexpr uint64_t app_error_code = 502;
constexpr uint64_t timeout_code = 504;
constexpr uint64_t unavailable_code = 503;
constexpr uint64_t log_level_error = 40;
constexpr int64_t response_window = 256 * 1024;  // response bytes a job may send beyond the engine's grants
constexpr int exit_load_failed = 3;
constexpr int exit_transport_failed = 4;
constexpr int engine_silence_limit = 3;  // heartbeat intervals without a word from the engine
constexpr auto batch_delay = std::chrono::milliseconds(1);  // how long replies may wait for a batch
// Without a job for this long, the handback watchdog stops looking every handback-after and sleeps
// until a job starts: a busy worker never pays a thread wake-up per job, an idle one costs nothing.
constexpr auto watchdog_park_after = std::chrono::seconds(1);

// Messages carry text as msgpack str, which the engine decodes as UTF-8 (and drops the frame if it
// cannot): an exception's what() may hold anything, so invalid bytes become '?'.
std::string valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    auto continuation = [&](std::size_t i) { return i < s.size() && (byte(i) & 0xc0) == 0x80; };
    for (std::size_t i = 0; i < s.size();) {
        unsigned char b = byte(i);
        std::size_t n = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
        bool ok = n > 0;
        for (std::size_t k = 1; ok && k < n; ++k) ok = continuation(i + k);
        if (ok && n >= 3) {  // no overlong forms, no surrogates, nothing above U+10FFFF
            unsigned char second = byte(i + 1);
            ok = !(b == 0xe0 && second < 0xa0) && !(b == 0xed && second > 0x9f) &&
                 !(b == 0xf0 && second < 0x90) && !(b == 0xf4 && second > 0x8f);
        }
        if (ok) {
            out.append(s.substr(i, n));
            i += n;
        } else {
            out.push_back('?');
            ++i;
        }
    }
    return out;
}

// meta.deadline, a Unix time, is in the past (docs/protocol.md).
bool deadline_passed(const Value& meta) {
    const Value* deadline = meta.find("deadline");
    if (!deadline || !deadline->is_number()) return false;
    double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    return now > deadline->as_double();
}

std::string type_name(const std::type_info& type) {
    int status = 0;
    char* name = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
    std::string result = status == 0 && name ? name : type.name();
    std::free(name);
    return result;
}

// -- frames -----------------------------------------------------------------------------------------

// A frame's elements: integers, and text (str) or bytes (bin) wrapped to say which.
struct Str {
    std::string_view text;
};
struct Bin {
    std::string_view bytes;
};
void put(msgpack::Writer& w, uint64_t u) { w.uinteger(u); }
void put(msgpack::Writer& w, Str s) { w.str(valid_utf8(s.text)); }
void put(msgpack::Writer& w, Bin b) { w.bin(b.bytes); }

// One protocol message: frame(CHUNK, job, Bin{data}) is [5, job, data].
template <typename... Elements>
std::string frame(Elements... elements) {
    std::string f;
    msgpack::Writer w(f);
    w.array(sizeof...(elements));
    (put(w, elements), ...);
    return f;
}

// -- jobs -------------------------------------------------------------------------------------------

struct Job {
    uint64_t id = 0;
    std::string task;
    Value meta;
    std::deque<std::string> chunks;  // arrived, not read yet
    bool streamed = false;           // invoked with closed false: reads send credit, cancels count
    bool closed = true;              // no more chunks will arrive
    bool cancelled = false;          // the engine gave up on it: reads and writes fail with the reason below
    int64_t credit = response_window;  // bytes of response it may still send (grants add to it)
    uint64_t cancel_code = 0;
    std::string cancel_message;
    uint64_t unsent_chunk_batch = ~0ull;  // the batch holding its last chunk (Worker::batch_)
    // Response metadata set by the handler, sent as [10, job, {status, headers}] before the first chunk.
    bool has_meta = false;
    bool meta_sent = false;
    uint64_t status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
};

class Worker;

// What a handler gets: the request and the response of one job.
class JobIo final : public cocaine::Request, public cocaine::Response {
public:
    JobIo(Worker& worker, Job& job) : worker_(worker), job_(job) {}

    uint64_t id() const override { return job_.id; }
    const std::string& task() const override { return job_.task; }
    const Value& meta() const override { return job_.meta; }
    bool read(std::string& chunk) override;
    const std::string& body() override;
    void write(const char* data, std::size_t size) override;
    void flush() override;
    void status(int code) override;
    void header(std::string_view name, std::string_view value) override;

private:
    Worker& worker_;
    Job& job_;
    std::string body_;
    bool body_read_ = false;
};

// Handback (docs/pools.md): once the engine offers it, a watchdog thread hands back the whole
// requests queued behind a job that has run past handback-after. The main loop holds mutex_ all the
// time except while a handler's own code runs (JobIo takes it back for each call), so the watchdog
// reads the socket and the queue only then: a job is either taken from the queue and started, or
// handed back, never both.
class Worker {
public:
    Worker(Link& link, double heartbeat_seconds)
        : link_(link),
          heartbeat_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(heartbeat_seconds))),
          last_sent_(Clock::now()),
          last_heard_(last_sent_) {}

    void add_tasks(const cocaine::AppTable& app) {
        for (std::size_t i = 0; i < app.count; ++i) handlers_[app.tasks[i].name] = app.tasks[i].handler;
    }

    // Tell the engine why the app cannot run, then give up (the engine fails waiting jobs with 503).
    void report_load_failure(const std::string& reason) {
        out_.push_back(frame(LOG, log_level_error, Str{reason}));
        flush();
    }

    int serve() {
        std::unique_lock<std::mutex> lock(mutex_);
        held_ = &lock;
        out_.push_back(frame(HELLO, protocol_version, static_cast<uint64_t>(getpid())));
        flush();
        while (!stopping_) {
            if (queue_.empty()) {
                pump();
                continue;
            }
            std::shared_ptr<Job> job = std::move(queue_.front());
            queue_.pop_front();
            running_since_ = Clock::now();
            running_ = true;
            if (parked_) {
                parked_ = false;
                wake_.notify_one();
            }
            run(*job);
            running_ = false;
            jobs_.erase(job->id);
        }
        flush();
        if (watchdog_.joinable()) {
            closing_ = true;
            wake_.notify_one();
            lock.unlock();
            watchdog_.join();
        }
        return 0;
    }

    std::mutex& mutex() { return mutex_; }

    // The next chunk of `job`'s request, pumping the socket while the engine still streams it;
    // each chunk taken of a streamed request is credited to the engine (flow control). The socket is
    // the main loop's here: it hands back what waits behind a long request itself.
    bool next_chunk(Job& job, std::string& chunk) {
        while (job.chunks.empty() && !job.closed && !stopping_) {
            pump();
            if (handback_due()) hand_back();
        }
        if (!job.closed && job.chunks.empty()) cancel(job, unavailable_code, "the worker is stopping");
        if (job.cancelled) throw cocaine::Aborted();
        if (job.chunks.empty()) return false;
        chunk = std::move(job.chunks.front());
        job.chunks.pop_front();
        if (job.streamed) out_.push_back(frame(CREDIT, job.id, static_cast<uint64_t>(chunk.size())));
        return true;
    }

    // A chunk is held back until the job writes the next one, waits for input or flushes, so the
    // replies to a batch of quick jobs leave together in one message (docs/cpp.md). A job whose
    // response has no credit left waits for the engine's grant, pumping the socket (its client is
    // behind); a chunk may overdraw the credit. The socket is the main loop's while it waits, so it
    // hands back what waits behind the job itself, as next_chunk does.
    void write_chunk(Job& job, std::string_view data) {
        while (job.credit <= 0 && !job.cancelled && !stopping_) {
            pump();
            if (handback_due()) hand_back();
        }
        if (job.credit <= 0 && !job.cancelled) cancel(job, unavailable_code, "the worker is stopping");
        if (job.cancelled) throw cocaine::Aborted();
        job.credit -= static_cast<int64_t>(data.size());
        if (job.unsent_chunk_batch == batch_) flush();
        send_meta(job);
        out_.push_back(frame(CHUNK, job.id, Bin{data}));
        job.unsent_chunk_batch = batch_;
    }

    // A job's last chunk, still unsent at the back of the batch, and its end leave as one reply
    // [14, job, data] once the engine offered it: the chunk's bytes with another message type.
    bool end_as_reply(const Job& job) {
        if (!replies_ || job.unsent_chunk_batch != batch_ || out_.empty()) return false;
        std::string prefix;
        msgpack::Writer w(prefix);
        w.array(3);
        w.uinteger(CHUNK);
        w.uinteger(job.id);
        std::string& last = out_.back();
        if (last.compare(0, prefix.size(), prefix) != 0) return false;  // a log line came after it
        last[1] = static_cast<char>(REPLY);  // a positive fixint, as CHUNK is
        return true;
    }

    void flush() {
        if (out_.empty()) return;
        bool sent = link_.send(out_);
        out_.clear();
        if (!sent) return end_link();
        ++batch_;
        last_sent_ = batch_started_ = Clock::now();
    }

    // The job's response metadata, once, before its first chunk or its end: [10, job, {"status": S,
    // "headers": [[name, value], ...]}], keys in that order (docs/protocol.md).
    void send_meta(Job& job) {
        if (!job.has_meta || job.meta_sent) return;
        job.meta_sent = true;
        std::string f;
        msgpack::Writer w(f);
        w.array(3);
        w.uinteger(META);
        w.uinteger(job.id);
        w.map(2);
        w.str("status");
        w.uinteger(job.status);
        w.str("headers");
        w.array(job.headers.size());
        for (const auto& [name, value] : job.headers) {
            w.array(2);
            w.str(valid_utf8(name));
            w.str(valid_utf8(value));
        }
        out_.push_back(std::move(f));
    }

private:
    // Every job gets exactly one end or error, even a cancelled one: the engine frees the job's
    // credit on it.
    void run(Job& job) {
        if (job.cancelled) {  // a streamed request given up before it started
            out_.push_back(frame(ERROR, job.id, job.cancel_code, Str{job.cancel_message}));
            return;
        }
        if (deadline_passed(job.meta)) {
            out_.push_back(frame(ERROR, job.id, timeout_code, Str{"deadline exceeded before the job started"}));
            return;
        }
        auto found = handlers_.find(job.task);
        if (found == handlers_.end()) {
            out_.push_back(frame(ERROR, job.id, app_error_code, Str{"the app has no callable '" + job.task + "'"}));
            flush();
            return;
        }
        // Replies wait for the rest of the batch only while it is quick: after a slow handler they
        // leave before the next one starts.
        if (Clock::now() - batch_started_ > batch_delay) flush();
        JobIo io(*this, job);
        try {
            {
                Unlocked unlocked(*held_);  // the handler's own code runs without the lock
                found->second(io, io);
            }
            send_meta(job);
            if (!end_as_reply(job)) out_.push_back(frame(END, job.id));
        } catch (const cocaine::Aborted& e) {
            if (job.cancelled) out_.push_back(frame(ERROR, job.id, job.cancel_code, Str{job.cancel_message}));
            else fail(job, std::string("cocaine::Aborted: ") + e.what());
        } catch (const std::exception& e) {
            fail(job, type_name(typeid(e)) + ": " + e.what());
        } catch (...) {
            fail(job, "unknown exception");
        }
    }

    // Releases the main loop's lock for a scope, and takes it back even when the scope throws.
    struct Unlocked {
        explicit Unlocked(std::unique_lock<std::mutex>& lock) : lock_(lock) { lock_.unlock(); }
        ~Unlocked() { lock_.lock(); }
        std::unique_lock<std::mutex>& lock_;
    };

    bool handback_due() const {
        return running_ && handback_after_ > Clock::duration::zero() && Clock::now() - running_since_ >= handback_after_;
    }

    void watch() {
        std::unique_lock<std::mutex> lock(mutex_);
        auto idle_since = Clock::now();
        while (!closing_) {
            if (running_) {
                idle_since = Clock::now();
            } else if (Clock::now() - idle_since < watchdog_park_after) {
                wake_.wait_for(lock, handback_after_);
                continue;
            } else {
                parked_ = true;
                wake_.wait(lock);
                idle_since = Clock::now();
                continue;
            }
            if (!handback_due()) {
                wake_.wait_until(lock, running_since_ + handback_after_);
            } else {
                hand_back();
                // Later invokes (sent before the engine saw the job stall) go back too.
                wake_.wait_for(lock, handback_after_);
            }
        }
    }

    // Drop the whole requests not started yet and tell the engine, in a message of its own; then
    // send what the jobs before the long one left for the rest of their batch. Hold mutex_. A
    // streamed request stays: its chunks came here and cannot be sent again.
    void hand_back() {
        drain();
        std::vector<uint64_t> ids;
        for (auto it = queue_.begin(); it != queue_.end();) {
            Job& job = **it;
            if (job.streamed || job.cancelled) {
                ++it;
                continue;
            }
            ids.push_back(job.id);
            jobs_.erase(job.id);
            it = queue_.erase(it);
        }
        if (!ids.empty()) {
            std::string f;
            msgpack::Writer w(f);
            w.array(2);
            w.uinteger(HANDBACK);
            w.array(ids.size());
            for (uint64_t id : ids) w.uinteger(id);
            if (!link_.send({std::move(f)})) return end_link();
        }
        flush();
    }

    void on_options(const Value& options) {
        const Value* reply = options.find("reply");
        replies_ = reply && reply->type() == Value::Type::boolean && reply->as_bool();
        const Value* after = options.find("handback-after");
        if (!after || !after->is_number() || after->as_double() <= 0 || watchdog_.joinable()) return;
        handback_after_ = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(after->as_double()));
        watchdog_ = std::thread([this] { watch(); });
    }

    void fail(Job& job, const std::string& message) {
        std::fprintf(stderr, "app error in task '%s' (job %llu): %s\n", job.task.c_str(),
                     static_cast<unsigned long long>(job.id), message.c_str());
        out_.push_back(frame(ERROR, job.id, app_error_code, Str{message}));
    }

    // Send what is pending, then read what the engine sent, waiting until a message arrives or the
    // next heartbeat is due. Called when no job is runnable: the queue is empty, or a handler
    // waits for request chunks.
    void pump() {
        flush();
        auto due = last_sent_ + heartbeat_ - Clock::now();
        long timeout_ms = std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(due).count() + 1);
        int ready = link_.wait(timeout_ms);
        if (ready < 0) return end_link();
        if (ready > 0) drain();
        auto now = batch_started_ = Clock::now();
        if (now - last_heard_ > engine_silence_limit * heartbeat_) {
            stopping_ = true;  // the engine is gone
        } else if (now - last_sent_ >= heartbeat_) {
            out_.push_back(frame(HEARTBEAT));
            flush();
        }
    }

    // Apply what the engine sent. A stream link's end is the engine's word that it is gone or has
    // given up on this worker: the worker stops at once.
    void drain() {
        bool heard = false;
        bool open = link_.receive([&](std::string_view message) {
            heard = true;
            apply(message);
        });
        if (heard) last_heard_ = Clock::now();
        if (!open) end_link();
    }

    // The link is over or failed: say why (unless the engine merely closed it) and stop.
    void end_link() {
        if (!link_.error().empty()) std::fprintf(stderr, "cocaine-cpp-worker: %s\n", link_.error().c_str());
        stopping_ = true;
    }

    // Apply one protocol message. Malformed ones are reported and dropped; unknown types and
    // extra trailing elements are ignored, as the protocol asks, so that it can grow.
    void apply(std::string_view frame) {
        Value message;
        try {
            message = msgpack::decode(frame);
            const auto& fields = message.as_array();
            uint64_t kind = fields.at(0).as_uint();
            switch (kind) {
            case INVOKE: return on_invoke(fields);
            case CHUNK: return on_chunk(fields.at(1).as_uint(), fields.at(2).as_string());
            case END: return on_end(fields.at(1).as_uint());
            case ERROR: return on_cancel(fields.at(1).as_uint(), fields.at(2).as_uint(), fields.at(3).as_string());
            case GRANT: return on_grant(fields.at(1).as_uint(), fields.at(2).as_uint());
            case TERMINATE: stopping_ = true; return;
            case OPTIONS: return on_options(fields.at(1));
            default: return;  // heartbeat, or a type from a later version
            }
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cocaine-cpp-worker: dropped a bad message from the engine: %s\n", e.what());
        }
    }

    void on_invoke(const Value::Array& fields) {
        auto job = std::make_shared<Job>();
        job->id = fields.at(1).as_uint();
        job->task = fields.at(2).as_string();
        job->meta = fields.at(3).is_nil() ? Value::map({}) : fields.at(3);
        const Value& body = fields.at(4);
        if (!body.is_nil() && !body.as_string().empty()) job->chunks.push_back(body.as_string());
        job->closed = fields.at(5).as_bool();
        job->streamed = !job->closed;
        jobs_[job->id] = job;
        queue_.push_back(std::move(job));
    }

    void on_chunk(uint64_t id, const std::string& data) {
        auto found = jobs_.find(id);
        if (found != jobs_.end() && !found->second->closed) found->second->chunks.push_back(data);
    }

    void on_end(uint64_t id) {
        auto found = jobs_.find(id);
        if (found != jobs_.end()) found->second->closed = true;
    }

    // A cancel concerns streamed requests, and a response waiting for credit (its client is gone);
    // a whole request otherwise runs and is answered as usual.
    void on_cancel(uint64_t id, uint64_t code, const std::string& message) {
        auto found = jobs_.find(id);
        if (found != jobs_.end() && (found->second->streamed || found->second->credit <= 0))
            cancel(*found->second, code, message);
    }

    void on_grant(uint64_t id, uint64_t nbytes) {
        auto found = jobs_.find(id);
        if (found != jobs_.end()) found->second->credit += static_cast<int64_t>(nbytes);
    }

    static void cancel(Job& job, uint64_t code, std::string message) {
        job.closed = job.cancelled = true;
        job.cancel_code = code;
        job.cancel_message = std::move(message);
        job.chunks.clear();
    }

    Link& link_;
    Clock::duration heartbeat_;
    Clock::time_point last_sent_;
    Clock::time_point last_heard_;
    Clock::time_point batch_started_;  // when the jobs whose replies are pending began to run
    bool stopping_ = false;
    uint64_t batch_ = 0;  // counts flushes: which frames are still unsent
    std::unordered_map<std::string, cocaine::Handler> handlers_;
    std::unordered_map<uint64_t, std::shared_ptr<Job>> jobs_;  // queued or running
    std::deque<std::shared_ptr<Job>> queue_;                    // not started yet, in arrival order
    std::vector<std::string> out_;                              // frames of the next message
    // Handback (see the class comment).
    std::mutex mutex_;
    std::unique_lock<std::mutex>* held_ = nullptr;  // the main loop's hold on mutex_
    std::condition_variable wake_;
    std::thread watchdog_;
    Clock::duration handback_after_{};  // zero until the engine offers handback
    bool replies_ = false;  // the engine takes a last chunk and its end as one reply (offered)
    Clock::time_point running_since_;
    bool running_ = false;
    bool parked_ = false;  // the watchdog waits for a job to start
    bool closing_ = false;
};

// A handler calls these without the worker's lock (Worker::run): each takes it.
bool JobIo::read(std::string& chunk) {
    std::lock_guard<std::mutex> lock(worker_.mutex());
    return worker_.next_chunk(job_, chunk);
}

const std::string& JobIo::body() {
    if (!body_read_) {
        std::string chunk;
        while (read(chunk)) body_ += chunk;
        body_read_ = true;
    }
    return body_;
}

void JobIo::write(const char* data, std::size_t size) {
    std::lock_guard<std::mutex> lock(worker_.mutex());
    worker_.write_chunk(job_, std::string_view(data, size));
}

void JobIo::flush() {
    std::lock_guard<std::mutex> lock(worker_.mutex());
    worker_.flush();
}

void JobIo::status(int code) {
    std::lock_guard<std::mutex> lock(worker_.mutex());
    if (job_.meta_sent) return;  // the head is out: too late
    if (code < 100 || code > 999) throw std::invalid_argument("status " + std::to_string(code) + " is not an HTTP status");
    job_.has_meta = true;
    job_.status = static_cast<uint64_t>(code);
}

void JobIo::header(std::string_view name, std::string_view value) {
    std::lock_guard<std::mutex> lock(worker_.mutex());
    if (job_.meta_sent) return;
    job_.has_meta = true;
    job_.headers.emplace_back(name, value);
}

// dlopen the app and find its task table; nullptr and `reason` when it is not a usable app.
const cocaine::AppTable* load_app(const char* path, std::string& reason) {
    void* library = dlopen(path, RTLD_NOW | RTLD_LOCAL);  // never closed: handlers live as long as the worker
    if (!library) {
        reason = dlerror();
        return nullptr;
    }
    using Entry = const cocaine::AppTable* (*)();
    auto entry = reinterpret_cast<Entry>(dlsym(library, "cocaine_app_v1"));
    if (!entry) {
        reason = "no cocaine_app_v1 entry point (declare the tasks with COCAINE_APP)";
        return nullptr;
    }
    const cocaine::AppTable* app = entry();
    if (!app || app->abi < 1 || app->abi > cocaine::abi_version) {
        reason = "built against another version of the cocaine C++ SDK (abi " +
                 std::to_string(app ? app->abi : -1) + ", this host speaks " + std::to_string(cocaine::abi_version) + ")";
        return nullptr;
    }
    return app;
}

}  // namespace

// Serve one worker until the engine says terminate, goes silent or closes the worker's stream
// link. The endpoint fd:N is that link, descriptor N, which the worker owns and closes when it
// ends (`context` and `zmq` are not used then and may be null); any other endpoint is connected to
// with a socket of `context`, made and used through `zmq`. Returns the exit status a worker process
// would have: 0 when told to stop, 3 when the app cannot load, 4 when its link cannot be opened.
extern "C" __attribute__((visibility("default"))) int cocaine_serve_in(void* context, const cocaine_zmq_api* zmq,
                                                                        const char* endpoint, const char* worker_id,
                                                                        const char* app_path, double heartbeat_seconds) {
    std::string error;
    std::unique_ptr<Link> link = cocaine::host::open_link(context, zmq, endpoint, worker_id, error);
    if (!link) {
        std::fprintf(stderr, "cocaine-cpp-worker: %s\n", error.c_str());
        return exit_transport_failed;
    }
    Worker worker(*link, heartbeat_seconds);
    std::string reason;
    const cocaine::AppTable* app = load_app(app_path, reason);
    if (!app) {
        std::fprintf(stderr, "cocaine-cpp-worker: cannot load %s: %s\n", app_path, reason.c_str());
        worker.report_load_failure(std::string("cannot load ") + app_path + ": " + reason);
        return exit_load_failed;
    }
    worker.add_tasks(*app);
    return worker.serve();
}

// The same for a worker process: a stream link needs no ZeroMQ at all; otherwise a context of its
// own, with the libzmq this library is linked with.
extern "C" __attribute__((visibility("default"))) int cocaine_serve(const char* endpoint, const char* worker_id,
                                                                     const char* app_path, double heartbeat_seconds) {
    if (std::strncmp(endpoint, "fd:", 3) == 0)
        return cocaine_serve_in(nullptr, nullptr, endpoint, worker_id, app_path, heartbeat_seconds);
    void* context = zmq_ctx_new();
    int status = cocaine_serve_in(context, &linked_zmq, endpoint, worker_id, app_path, heartbeat_seconds);
    zmq_ctx_term(context);
    return status;
}
