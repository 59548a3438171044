// The worker's link to the engine (docs/protocol.md, "Transport"): a ZeroMQ DEALER connected to
// the pool's ROUTER (an ipc:// or inproc:// endpoint), or a stream link, a Unix stream socket the
// worker was given as descriptor N (the endpoint fd:N), on which no ZeroMQ runs at all.
//
// Either way the worker sends whole batches (one ZeroMQ message of one frame each, or one write of
// the messages back to back) and receives without waiting: whatever has arrived, split into whole
// protocol messages.
#pragma once

#include <zmq.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// The libzmq functions the host calls: those of the libzmq it is linked with in a worker process,
// those of the daemon's own libzmq (pyzmq's) on a thread of the daemon (see cocaine_serve_in).
struct cocaine_zmq_api {
    void* (*socket)(void*, int);
    int (*setsockopt)(void*, int, const void*, size_t);
    int (*connect)(void*, const char*);
    int (*close)(void*);
    int (*send)(void*, const void*, size_t, int);
    int (*poll)(zmq_pollitem_t*, int, long);
    int (*msg_init)(zmq_msg_t*);
    int (*msg_recv)(zmq_msg_t*, void*, int);
    void* (*msg_data)(zmq_msg_t*);
    size_t (*msg_size)(const zmq_msg_t*);
    int (*msg_close)(zmq_msg_t*);
    const char* (*strerror)(int);
};

namespace cocaine::host {

class Link {
public:
    using Sink = std::function<void(std::string_view message)>;

    virtual ~Link() = default;

    // Send one batch of protocol messages together. False when the link failed: error() says why,
    // or is empty when the engine closed a stream link (the worker just ends).
    virtual bool send(const std::vector<std::string>& messages) = 0;

    // Wait up to timeout_ms for something to receive: > 0 when there is, 0 when not (or a signal
    // came), < 0 when the link failed (error()).
    virtual int wait(long timeout_ms) = 0;

    // Give `sink` each whole message that has arrived, in order, without waiting. False when the
    // link is over: the engine closed it (error() empty), or it failed or carried bytes that are
    // not msgpack (error() says which); the messages before that were given.
    virtual bool receive(const Sink& sink) = 0;

    const std::string& error() const { return error_; }

protected:
    std::string error_;
};

// The link `endpoint` names: fd:N (takes descriptor N over; `zmq` may be null), or a ZeroMQ
// endpoint, connected in `context` with `worker_id` as identity. Null and `error` when it cannot be
// opened.
std::unique_ptr<Link> open_link(void* context, const cocaine_zmq_api* zmq, const char* endpoint,
                                const char* worker_id, std::string& error);

}  // namespace cocaine::host
