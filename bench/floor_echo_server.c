/* The transport's floor: a ROUTER that answers each client request [id, "", body] at once with
 * [id, "", "ok", body], the reply cocaine's zeromq-server sends. No broker, no worker: what ZeroMQ
 * over TCP costs per request on the server's side (bench_floor.py). */
#include <stdio.h>
#include <zmq.h>

#define MAX_FRAMES 8

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s ENDPOINT\n", argv[0]);
        return 2;
    }
    void *context = zmq_ctx_new();
    void *socket = zmq_socket(context, ZMQ_ROUTER);
    if (zmq_bind(socket, argv[1]) != 0) {
        fprintf(stderr, "bind %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 1;
    }
    zmq_msg_t frames[MAX_FRAMES];
    for (;;) {
        int count = 0, more = 1, malformed = 0;
        while (more) {
            zmq_msg_t scratch, *frame = count < MAX_FRAMES ? &frames[count] : &scratch;
            zmq_msg_init(frame);
            if (zmq_msg_recv(frame, socket, 0) < 0) return 1;
            more = zmq_msg_more(frame);
            if (frame == &scratch) {
                zmq_msg_close(frame);
                malformed = 1;
            } else {
                count++;
            }
        }
        if (malformed || count < 3) { /* not [id, "", body]: dropped */
            for (int i = 0; i < count; i++) zmq_msg_close(&frames[i]);
            continue;
        }
        zmq_msg_send(&frames[0], socket, ZMQ_SNDMORE);
        zmq_msg_send(&frames[1], socket, ZMQ_SNDMORE);
        zmq_send(socket, "ok", 2, ZMQ_SNDMORE);
        zmq_msg_send(&frames[count - 1], socket, 0);
        for (int i = 2; i < count - 1; i++) zmq_msg_close(&frames[i]);
    }
}
