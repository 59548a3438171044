// The conformance app in C++: the tasks every language's app has (../README.md).
//
// Build:  g++ -std=c++17 -O2 -fPIC -shared -I "$(python -m cocaine.cpp include)" app.cpp -o app.so

#include <cocaine/app.hpp>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

static void echo(cocaine::Request& request, cocaine::Response& response) {
    response.write(request.body());
}

static void chunks(cocaine::Request&, cocaine::Response& response) {
    for (const char* chunk : {"a", "b", "c"}) response.write(chunk);
}

static void fail(cocaine::Request& request, cocaine::Response&) {
    throw std::runtime_error("bad input: " + request.body());
}

static void crash(cocaine::Request&, cocaine::Response&) {
    std::_Exit(7);  // the worker process dies in the middle of the job
}

static void slow(cocaine::Request& request, cocaine::Response& response) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(request.body())));  // the milliseconds in the body
    response.write("slept " + request.body());
}

static void hang(cocaine::Request&, cocaine::Response&) {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // the heartbeat timeout ends it
}

static void tick(cocaine::Request& request, cocaine::Response& response) {
    response.write("tick " + std::to_string(request.meta().find("tick")->as_int()));
}

static void upper(cocaine::Request& request, cocaine::Response& response) {
    std::string body = request.body();
    for (char& c : body) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    response.write(body);
}

// Each chunk of a streamed request goes back as a response chunk as soon as it arrives.
static void stream(cocaine::Request& request, cocaine::Response& response) {
    std::string chunk;
    while (request.read(chunk)) response.write(chunk);
}

// Answers with response metadata (status 201, two headers) and what the request's HTTP metadata says.
static void respond(cocaine::Request& request, cocaine::Response& response) {
    const cocaine::Value& meta = request.meta();
    response.status(201);
    response.header("content-type", "text/plain");
    response.header("x-conformance", "yes");
    response.write(meta.find("method")->as_string() + " " + meta.find("path")->as_string() + "?" +
                   meta.find("query")->as_string() + " " + meta.find("headers")->find("x-test")->as_string() + " " +
                   meta.find("peer")->as_string());
}

// Streams as many bytes as the body says (a decimal number) in chunks of 64 KiB, as fast as it can:
// faster than its client reads, so the engine's grants pace it.
static void flood(cocaine::Request& request, cocaine::Response& response) {
    unsigned long long left = std::stoull(request.body());
    const std::string chunk(65536, 'x');
    while (left > 0) {
        std::size_t size = left < chunk.size() ? static_cast<std::size_t>(left) : chunk.size();
        response.write(chunk.data(), size);
        left -= size;
    }
}

COCAINE_APP({"echo", echo}, {"chunks", chunks}, {"fail", fail}, {"crash", crash}, {"hang", hang}, {"slow", slow},
            {"tick", tick}, {"upper", upper}, {"stream", stream}, {"respond", respond}, {"flood", flood})
