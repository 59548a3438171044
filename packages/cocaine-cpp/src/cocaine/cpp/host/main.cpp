// cocaine-cpp-worker: the process the engine starts for each worker of a C++ app (process backend).
// A thin shell over cocaine_serve() in libcocaine-cpp-worker.so: it only does what belongs to a
// process (arguments, dying with the daemon, ignoring the terminal's Ctrl-C).
//
//     cocaine-cpp-worker --endpoint fd:N --id W --app A --path /srv/app.so --heartbeat 5
//                        (or --endpoint ipc:///...: over ZeroMQ instead of the inherited descriptor N)
//     cocaine-cpp-worker --check      exits 0: the host and libzmq are usable

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" int cocaine_serve(const char* endpoint, const char* worker_id, const char* app_path,
                             double heartbeat_seconds);

int main(int argc, char** argv) {
    std::string endpoint, id, path;
    double heartbeat = 5.0;
    for (int i = 1; i < argc; ++i) {
        std::string option = argv[i];
        if (option == "--check") {
            std::puts("ok");
            return 0;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "cocaine-cpp-worker: %s needs a value\n", option.c_str());
            return 2;
        }
        const char* value = argv[++i];
        if (option == "--endpoint") endpoint = value;
        else if (option == "--id") id = value;
        else if (option == "--path") path = value;
        else if (option == "--heartbeat") heartbeat = std::atof(value);
        else if (option != "--app") {
            std::fprintf(stderr, "cocaine-cpp-worker: unknown option %s\n", option.c_str());
            return 2;
        }
    }
    if (endpoint.empty() || id.empty() || path.empty() || heartbeat <= 0) {
        std::fprintf(stderr, "usage: cocaine-cpp-worker --endpoint E --id ID --app NAME --path APP.so --heartbeat S\n");
        return 2;
    }
    // Die with the daemon, even when it is SIGKILLed; and if it died before this was armed, now.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (const char* parent = std::getenv("COCAINE_PARENT_PID"); parent && getppid() != std::atoi(parent)) return 1;
    std::signal(SIGINT, SIG_IGN);  // the daemon decides when its workers stop
    return cocaine_serve(endpoint.c_str(), id.c_str(), path.c_str(), heartbeat);
}
