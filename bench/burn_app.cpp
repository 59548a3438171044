// A CPU-bound echo for bench_threads.py: burns 2 ms of this thread's CPU time, then answers.
#include <cocaine/app.hpp>

#include <ctime>

static double thread_seconds() {
    timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

static void echo(cocaine::Request& request, cocaine::Response& response) {
    double end = thread_seconds() + 0.002;
    while (thread_seconds() < end) {
    }
    response.write(request.body());
}

COCAINE_APP({"echo", echo})
