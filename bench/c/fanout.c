/* fanout HOST PORT PATH COUNT MESSAGES OUTFILE [SOURCE]: COUNT idle SSE subscribers on one epoll.
 *
 * SOURCE: the local IPv4 address to connect from (127.0.0.2 and up), so that several
 * of these processes together hold more connections than one address has ports.
 * Opens COUNT subscriptions (GET PATH, HTTP/1.1), at most 256 being set up at once,
 * and prints "connected C failed F" once each is open (its ": connected" comment
 * arrived) or failed. Then it follows commands on stdin, one per line:
 *
 *   wait K TIMEOUT_MS QUIET_MS  prints "got K N" once every open subscriber has message K,
 *                               or TIMEOUT_MS passed, or N > 0 and none arrived for QUIET_MS.
 *   quit                        writes OUTFILE and prints "closed X" (subscriptions the server ended).
 *
 * A message is an SSE event whose data holds "seq":K (1..MESSAGES) and "t":NS, its
 * publish time (CLOCK_REALTIME ns). Its latency at a subscriber is the time read(2)
 * returned the bytes that completed the event, minus NS. OUTFILE holds COUNT x MESSAGES
 * int64 latencies in ns, subscriber-major, native byte order; -1 where it never came.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 4096
#define INFLIGHT 256
#define STDIN_KEY UINT32_MAX

enum { IDLE, CONNECTING, SENT, OPEN, DONE };

struct conn {
    int fd;
    int state;
    int tries;
    int len;
    char buf[BUF];
};

static struct conn *conns;
static int64_t *latency;
static int count, messages, epfd;
static struct sockaddr_in server, source;
static int bind_source;
static char request[1024];
static size_t request_len;
static int opened, failed, inflight, closed_by_server;
static int *received;          /* per message: how many subscribers have it */
static long long *last_arrival; /* per message: CLOCK_MONOTONIC ns of its latest arrival */

static long long clock_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void start(int index) {
    struct conn *c = &conns[index];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    c->len = 0;
    c->tries++;
    if (c->fd < 0) {
        perror("fanout: socket");
        exit(1);
    }
    if (bind_source) {
        int one = 1;
        /* The port is chosen at connect(), per destination: no port is held per address. */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&source, sizeof source) < 0) {
            perror("fanout: bind");
            exit(1);
        }
    }
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->state = DONE;
        failed++;
        return;
    }
    c->state = CONNECTING;
    inflight++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)index};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void give_up_or_retry(int index) {
    struct conn *c = &conns[index];
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    inflight--;
    if (c->tries < 5) {
        start(index);
    } else {
        c->state = DONE;
        failed++;
    }
}

static long long parse_number(const char *from, const char *end) {
    long long value = 0;
    while (from < end && *from >= '0' && *from <= '9') value = value * 10 + (*from++ - '0');
    return value;
}

/* Record every complete event in the connection's buffer; keep the incomplete rest. */
static void scan(int index, long long now_real, long long now_mono) {
    struct conn *c = &conns[index];
    char *begin = c->buf, *end = c->buf + c->len;
    for (;;) {
        char *stop = memmem(begin, (size_t)(end - begin), "\n\n", 2);
        if (!stop) break;
        char *seq = memmem(begin, (size_t)(stop - begin), "\"seq\":", 6);
        char *sent = memmem(begin, (size_t)(stop - begin), "\"t\":", 4);
        if (seq && sent) {
            long long k = parse_number(seq + 6, stop), t = parse_number(sent + 4, stop);
            if (k >= 1 && k <= messages && latency[(size_t)index * messages + k - 1] < 0) {
                latency[(size_t)index * messages + k - 1] = now_real - t;
                received[k - 1]++;
                last_arrival[k - 1] = now_mono;
            }
        }
        begin = stop + 2;
    }
    c->len = (int)(end - begin);
    if (c->len == BUF) c->len = 0; /* no event is this large: drop it */
    memmove(c->buf, begin, (size_t)c->len);
}

static void on_event(int index, uint32_t events) {
    struct conn *c = &conns[index];
    if (c->state == CONNECTING) {
        int error = 0;
        socklen_t size = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
        if (error || (events & (EPOLLERR | EPOLLHUP))) {
            give_up_or_retry(index);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        if (send(c->fd, request, request_len, MSG_NOSIGNAL) != (ssize_t)request_len) {
            give_up_or_retry(index);
            return;
        }
        c->state = SENT;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)index};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    ssize_t n = read(c->fd, c->buf + c->len, (size_t)(BUF - c->len));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        if (c->state == SENT) {
            give_up_or_retry(index);
        } else {
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->state = DONE;
            closed_by_server++;
        }
        return;
    }
    long long now_real = clock_ns(CLOCK_REALTIME), now_mono = clock_ns(CLOCK_MONOTONIC);
    c->len += (int)n;
    if (c->state == SENT) {
        if (memmem(c->buf, (size_t)c->len, ": connected", 11)) {
            if (!memmem(c->buf, (size_t)c->len, " 200 ", 5)) {
                give_up_or_retry(index);
                return;
            }
            c->state = OPEN;
            c->len = 0;
            opened++;
            inflight--;
        } else if (c->len == BUF) {
            give_up_or_retry(index);
        }
        return;
    }
    scan(index, now_real, now_mono);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: fanout HOST PORT PATH COUNT MESSAGES OUTFILE [SOURCE]\n");
        return 2;
    }
    if (argc == 8) {
        source.sin_family = AF_INET;
        if (inet_pton(AF_INET, argv[7], &source.sin_addr) != 1) {
            fprintf(stderr, "fanout: bad source address %s\n", argv[7]);
            return 2;
        }
        bind_source = 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &server.sin_addr);
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n\r\n",
                                   argv[3], argv[1], argv[2]);
    count = atoi(argv[4]);
    messages = atoi(argv[5]);
    conns = calloc((size_t)count, sizeof *conns);
    latency = malloc((size_t)count * messages * sizeof *latency);
    received = calloc((size_t)messages, sizeof *received);
    last_arrival = calloc((size_t)messages, sizeof *last_arrival);
    if (!conns || !latency || !received || !last_arrival) return 1;
    memset(latency, 0xff, (size_t)count * messages * sizeof *latency); /* -1 */
    epfd = epoll_create1(0);
    struct epoll_event events[1024];

    int next = 0;
    long long setup_deadline = clock_ns(CLOCK_MONOTONIC) + 300LL * 1000000000LL;
    while (opened + failed < count && clock_ns(CLOCK_MONOTONIC) < setup_deadline) {
        while (inflight < INFLIGHT && next < count) start(next++);
        int n = epoll_wait(epfd, events, 1024, 100);
        for (int i = 0; i < n; i++) on_event((int)events[i].data.u32, events[i].events);
    }
    printf("connected %d failed %d\n", opened, count - opened);

    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_KEY};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
    char command[4096];
    size_t command_len = 0;
    int waiting = 0, wait_k = 0;
    long long wait_deadline = 0, wait_quiet = 0;
    for (;;) {
        int n = epoll_wait(epfd, events, 1024, waiting ? 2 : 1000);
        for (int i = 0; i < n; i++) {
            if (events[i].data.u32 != STDIN_KEY) {
                on_event((int)events[i].data.u32, events[i].events);
                continue;
            }
            ssize_t got = read(0, command + command_len, sizeof command - command_len - 1);
            if (got == 0) goto quit;
            if (got < 0) continue;
            command_len += (size_t)got;
            char *line_end;
            while ((line_end = memchr(command, '\n', command_len))) {
                *line_end = 0;
                int k, timeout_ms, quiet_ms;
                if (strcmp(command, "quit") == 0) goto quit;
                if (sscanf(command, "wait %d %d %d", &k, &timeout_ms, &quiet_ms) == 3 && k >= 1 && k <= messages) {
                    waiting = 1;
                    wait_k = k;
                    wait_deadline = clock_ns(CLOCK_MONOTONIC) + timeout_ms * 1000000LL;
                    wait_quiet = quiet_ms * 1000000LL;
                }
                size_t used = (size_t)(line_end - command) + 1;
                memmove(command, line_end + 1, command_len - used);
                command_len -= used;
            }
        }
        if (waiting) {
            long long now = clock_ns(CLOCK_MONOTONIC);
            int got = received[wait_k - 1];
            int open_now = opened - closed_by_server;
            if (got >= open_now || now > wait_deadline ||
                (got > 0 && now - last_arrival[wait_k - 1] > wait_quiet)) {
                printf("got %d %d\n", wait_k, got);
                waiting = 0;
            }
        }
    }
quit:;
    FILE *out = fopen(argv[6], "wb");
    if (!out || fwrite(latency, sizeof *latency, (size_t)count * messages, out) != (size_t)count * messages) {
        perror("fanout: write");
        return 1;
    }
    fclose(out);
    printf("closed %d\n", closed_by_server);
    return 0;
}
