/* The client's floor: loadgen.py's load (64 requests of 16 bytes in flight on one DEALER) written
 * in C, for REQUESTS requests. Every reply must be ["", "ok", body]; exits 1 on any other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define IN_FLIGHT 64

static const char BODY[16] = "xxxxxxxxxxxxxxxx";

static void send_request(void *socket) {
    zmq_send(socket, "", 0, ZMQ_SNDMORE);
    zmq_send(socket, BODY, sizeof BODY, 0);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ENDPOINT REQUESTS\n", argv[0]);
        return 2;
    }
    long total = atol(argv[2]), sent = 0, answered = 0;
    void *context = zmq_ctx_new();
    void *socket = zmq_socket(context, ZMQ_DEALER);
    int timeout_ms = 5000;
    zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_connect(socket, argv[1]);
    for (; sent < IN_FLIGHT && sent < total; sent++) send_request(socket);
    char frame[64];
    while (answered < total) {
        int sizes[4], count = 0, more = 1;
        while (more) {
            int size = zmq_recv(socket, frame, sizeof frame, 0);
            if (size < 0) {
                fprintf(stderr, "no reply within %d ms\n", timeout_ms);
                return 1;
            }
            if (count < 4) sizes[count] = size;
            count++;
            size_t option_size = sizeof more;
            zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &option_size);
        }
        /* frame holds the last one: the body */
        if (count != 3 || sizes[0] != 0 || sizes[1] != 2 || sizes[2] != sizeof BODY
                || memcmp(frame, BODY, sizeof BODY) != 0) {
            fprintf(stderr, "unexpected reply of %d frames\n", count);
            return 1;
        }
        answered++;
        if (sent < total) {
            send_request(socket);
            sent++;
        }
    }
    return 0;
}
