// The cocaine C++ SDK: what an app's code sees. Documented in docs/cpp.md.
//
//     #include <cocaine/app.hpp>
//
//     static void echo(cocaine::Request& request, cocaine::Response& response) {
//         response.write(request.body());
//     }
//
//     COCAINE_APP({"echo", echo})
//
// Build the app as a shared library (docs/cpp.md has the one g++ line) and point the manifest's
// `args` at it. Task T calls the handler registered under "T". A handler writes zero or more chunks;
// returning ends the response, throwing fails it with error 502 "<exception type>: <what()>".
#pragma once

#include <cocaine/value.hpp>

#include <cstddef>
#include <exception>
#include <string>
#include <string_view>

namespace cocaine {

// Bumped whenever a type below (or Value) changes layout: the host refuses apps built against another.
// Version 2 appended Response::status and Response::header; the host still runs version 1 apps.
constexpr int abi_version = 2;

// One job's input. Valid only during the handler call.
class Request {
public:
    virtual uint64_t id() const = 0;
    virtual const std::string& task() const = 0;
    // The driver's metadata: a map, empty when there is none (a timer's "tick" and "scheduled").
    virtual const Value& meta() const = 0;
    // The next chunk of the request, or false when none is left. A whole request is one chunk (none
    // when the body is empty); a streamed one arrives chunk by chunk, and this waits for the next.
    virtual bool read(std::string& chunk) = 0;
    // Everything read() has not returned yet, as one string (waits for the end of a streamed request).
    virtual const std::string& body() = 0;

protected:
    ~Request() = default;
};

// One job's output. Chunks leave in order: each is sent at the latest when the handler writes the
// next one, waits for request input or calls flush(). Call flush() before a long computation to let
// the client have what is written so far. When the handler returns, its last chunk and end go out
// with the replies of the jobs after it while those are quick (about a millisecond in all), so a
// burst of small jobs is answered in one message. write() waits while the job's client is more
// than the engine's response window (256 KiB) behind, so a handler streams at its client's pace.
class Response {
public:
    virtual void write(const char* data, std::size_t size) = 0;
    void write(std::string_view chunk) { write(chunk.data(), chunk.size()); }
    virtual void flush() = 0;
    // Response metadata: the status and headers the http-server driver answers with (default 200,
    // no headers); other drivers ignore them. They leave with the first chunk (or the end), so set
    // them before writing; once a chunk is written they can no longer change.
    virtual void status(int code) = 0;
    virtual void header(std::string_view name, std::string_view value) = 0;

protected:
    ~Response() = default;
};

// Thrown by Request::read() and body() of a streamed request that the engine cancelled (its client
// gave up) or that the worker is stopping, and by Response::write() waiting for a client that left. Let it propagate: the host answers the job with the
// cancel's code and message, which the engine expects and drops.
class Aborted : public std::exception {
public:
    const char* what() const noexcept override { return "the job was cancelled"; }
};

using Handler = void (*)(Request&, Response&);

struct Task {
    const char* name;
    Handler handler;
};

struct AppTable {
    int abi;
    const Task* tasks;
    std::size_t count;
};

}  // namespace cocaine

// Declares the app's tasks: COCAINE_APP({"echo", echo}, {"tick", tick}). Use it once per app, in one
// source file. It defines the entry point the worker host looks up in the shared library.
#define COCAINE_APP(...)                                                                       \
    extern "C" __attribute__((visibility("default"))) const ::cocaine::AppTable* cocaine_app_v1() { \
        static const ::cocaine::Task tasks[] = {__VA_ARGS__};                                  \
        static const ::cocaine::AppTable table{::cocaine::abi_version, tasks,                  \
                                               sizeof(tasks) / sizeof(tasks[0])};              \
        return &table;                                                                         \
    }
