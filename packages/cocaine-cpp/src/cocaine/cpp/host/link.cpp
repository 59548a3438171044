// The two links of link.hpp.

#include "link.hpp"

#include <cocaine/msgpack.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace cocaine::host {
namespace {

std::string failure(const std::string& what, int code = errno) { return what + ": " + std::strerror(code); }

// A DEALER whose identity is the worker id; each protocol message is one frame.
class ZeroMQLink final : public Link {
public:
    ZeroMQLink(const cocaine_zmq_api& zmq, void* sock) : zmq_(zmq), sock_(sock) {}
    ~ZeroMQLink() override { zmq_.close(sock_); }  // lingers until the last replies left

    bool send(const std::vector<std::string>& messages) override {
        for (std::size_t i = 0; i < messages.size(); ++i) {
            int flags = i + 1 < messages.size() ? ZMQ_SNDMORE : 0;
            while (zmq_.send(sock_, messages[i].data(), messages[i].size(), flags) < 0) {
                if (errno == EINTR) continue;
                error_ = std::string("cannot send: ") + zmq_.strerror(errno);
                return false;
            }
        }
        return true;
    }

    int wait(long timeout_ms) override {
        zmq_pollitem_t item{sock_, 0, ZMQ_POLLIN, 0};
        int ready = zmq_.poll(&item, 1, timeout_ms);
        if (ready >= 0 || errno == EINTR) return ready > 0 ? ready : 0;
        error_ = std::string("poll failed: ") + zmq_.strerror(errno);
        return -1;
    }

    // Over ZeroMQ the engine's absence shows only as silence (the worker's heartbeat rule).
    bool receive(const Sink& sink) override {
        zmq_msg_t part;
        zmq_.msg_init(&part);
        while (zmq_.msg_recv(&part, sock_, ZMQ_DONTWAIT) >= 0)
            sink(std::string_view(static_cast<const char*>(zmq_.msg_data(&part)), zmq_.msg_size(&part)));
        zmq_.msg_close(&part);
        return true;
    }

private:
    const cocaine_zmq_api& zmq_;
    void* sock_;
};

// A Unix stream socket carrying the messages back to back (msgpack is self-delimiting). Writes
// block (the engine always reads); reads never wait, and keep a message cut between two reads
// until its end arrives.
class StreamLink final : public Link {
public:
    explicit StreamLink(int fd) : fd_(fd), buffer_(new char[read_size]), capacity_(read_size) {}
    ~StreamLink() override { ::close(fd_); }

    bool send(const std::vector<std::string>& messages) override {
        std::string_view bytes;
        if (messages.size() == 1) {
            bytes = messages[0];
        } else {  // one write for the whole batch
            joined_.clear();
            for (const auto& message : messages) joined_ += message;
            bytes = joined_;
        }
        bool sent = write_all(bytes);
        if (joined_.capacity() > read_size) std::string().swap(joined_);  // a large batch is rare: give it back
        return sent;
    }

    int wait(long timeout_ms) override {
        pollfd item{fd_, POLLIN, 0};
        int ready = ::poll(&item, 1, timeout_ms > INT_MAX ? INT_MAX : static_cast<int>(timeout_ms));
        if (ready >= 0 || errno == EINTR) return ready > 0 ? ready : 0;
        error_ = failure("poll failed");
        return -1;
    }

    bool receive(const Sink& sink) override {
        for (;;) {
            if (size_ == capacity_) grow();
            std::size_t room = capacity_ - size_;
            ssize_t n = ::recv(fd_, buffer_.get() + size_, room, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
                error_ = failure("cannot receive");
                return false;
            }
            if (n == 0) {  // the engine retired this worker, or the daemon is gone
                error_.clear();
                return false;
            }
            size_ += static_cast<std::size_t>(n);
            if (!split(sink)) return false;
            if (static_cast<std::size_t>(n) < room) return true;  // all there was: spare the read that says so
        }
    }

private:
    static constexpr std::size_t read_size = 256 * 1024;

    bool write_all(std::string_view bytes) {
        while (!bytes.empty()) {
            // MSG_NOSIGNAL: a closed link is an error to handle, not a SIGPIPE (which would kill the
            // daemon itself under the thread backend).
            ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n >= 0) {
                bytes.remove_prefix(static_cast<std::size_t>(n));
            } else if (errno != EINTR) {
                if (errno == EPIPE || errno == ECONNRESET) error_.clear();  // the engine closed it: just end
                else error_ = failure("cannot send");
                return false;
            }
        }
        return true;
    }

    // Give the sink every whole message in the buffer and keep the tail.
    bool split(const Sink& sink) {
        std::size_t at = 0;
        try {
            while (at < size_) {
                std::size_t n = msgpack::value_size(std::string_view(buffer_.get() + at, size_ - at));
                if (n == 0) break;
                sink(std::string_view(buffer_.get() + at, n));
                at += n;
            }
        } catch (const msgpack::DecodeError& e) {
            error_ = std::string("the stream link carries bytes that are not msgpack (") + e.what() + ")";
            return false;
        }
        size_ -= at;
        std::memmove(buffer_.get(), buffer_.get() + at, size_);
        if (size_ == 0 && capacity_ > read_size) {  // a large message went through: give its room back
            buffer_.reset(new char[read_size]);
            capacity_ = read_size;
        }
        return true;
    }

    // The buffer is full of one message cut short: make room for the rest.
    void grow() {
        std::unique_ptr<char[]> larger(new char[2 * capacity_]);
        std::memcpy(larger.get(), buffer_.get(), size_);
        buffer_ = std::move(larger);
        capacity_ *= 2;
    }

    int fd_;
    std::unique_ptr<char[]> buffer_;  // received, not split yet: the start of a message cut short
    std::size_t capacity_;
    std::size_t size_ = 0;
    std::string joined_;  // a batch being sent
};

std::unique_ptr<Link> open_stream(std::string_view number, std::string& error) {
    std::string digits(number);
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) {
        error = "the endpoint fd:" + digits + " does not name a descriptor";
        return nullptr;
    }
    int fd = std::atoi(digits.c_str());
    struct stat about;
    if (fstat(fd, &about) != 0) {
        int code = errno;
        error = failure("descriptor " + digits, code);
        return nullptr;
    }
    if (!S_ISSOCK(about.st_mode)) {
        ::close(fd);  // it was given to this worker all the same
        error = "descriptor " + digits + " is not a socket";
        return nullptr;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return std::make_unique<StreamLink>(fd);
}

std::unique_ptr<Link> open_zeromq(void* context, const cocaine_zmq_api* zmq, const char* endpoint,
                                  const char* worker_id, std::string& error) {
    if (!zmq || !context) {
        error = std::string("no ZeroMQ context to connect to ") + endpoint;
        return nullptr;
    }
    void* sock = zmq->socket(context, ZMQ_DEALER);
    if (!sock) {
        error = std::string("cannot make a socket: ") + zmq->strerror(errno);
        return nullptr;
    }
    int linger_ms = 1000;  // time for the last replies (or the load failure) to reach the engine
    zmq->setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    zmq->setsockopt(sock, ZMQ_ROUTING_ID, worker_id, std::strlen(worker_id));
    if (zmq->connect(sock, endpoint) != 0) {
        error = std::string("cannot connect to ") + endpoint + ": " + zmq->strerror(errno);
        zmq->close(sock);
        return nullptr;
    }
    return std::make_unique<ZeroMQLink>(*zmq, sock);
}

}  // namespace

std::unique_ptr<Link> open_link(void* context, const cocaine_zmq_api* zmq, const char* endpoint,
                                const char* worker_id, std::string& error) {
    std::string_view name(endpoint);
    if (name.substr(0, 3) == "fd:") return open_stream(name.substr(3), error);
    return open_zeromq(context, zmq, endpoint, worker_id, error);
}

}  // namespace cocaine::host
