/* sink HOST PORT OUTFILE REQUEST [FLAGS]: the benchmarks' client, at C speed.
 *
 * Connects, sends REQUEST (may be empty), and reads until the server closes,
 * writing what it reads to OUTFILE. FLAGS may hold:
 *   t  store every read as a record: 8 bytes CLOCK_REALTIME nanoseconds when
 *      read(2) returned, 4 bytes length, the bytes (native byte order);
 *   c  stop at the end of a chunked HTTP body (the "0\r\n\r\n" chunk) and close,
 *      as curl and browsers do, instead of waiting for the server to close.
 * Prints "CONNECT_NS FIRST_BYTE_NS BODY_END_NS END_NS BYTES" (CLOCK_REALTIME);
 * BODY_END_NS is when the last chunk arrived (END_NS if none was seen).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int write_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size) {
        ssize_t n = write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

#define BUFFER (1 << 20)
static char buffer[BUFFER];

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: sink HOST PORT OUTFILE REQUEST [FLAGS]\n");
        return 2;
    }
    int stamped = argc > 5 && strchr(argv[5], 't');
    int stop_at_body_end = argc > 5 && strchr(argv[5], 'c');
    int out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        perror("sink: open");
        return 1;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "sink: bad address %s\n", argv[1]);
        return 2;
    }
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    long long connect_ns = now_ns(), first_ns = 0;
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("sink: connect");
        return 1;
    }
    size_t request = strlen(argv[4]);
    if (request && write_all(sock, argv[4], request) < 0) {
        perror("sink: send");
        return 1;
    }
    static const char last_chunk[] = "\r\n0\r\n\r\n";
    char tail[sizeof last_chunk - 1];
    size_t tail_len = 0;
    long long total = 0, body_end_ns = 0;
    for (;;) {
        ssize_t n = read(sock, buffer, BUFFER);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("sink: read");
            return 1;
        }
        if (n == 0) break;
        if (stamped) {
            int64_t at = now_ns();
            uint32_t size = (uint32_t)n;
            if (write_all(out, &at, sizeof at) < 0 || write_all(out, &size, sizeof size) < 0) return 1;
        }
        if (!first_ns) first_ns = now_ns();
        if (write_all(out, buffer, (size_t)n) < 0) {
            perror("sink: write");
            return 1;
        }
        total += n;
        /* Keep the stream's last 7 bytes: is this the terminating chunk? */
        size_t keep = sizeof tail;
        if ((size_t)n >= keep) {
            memcpy(tail, buffer + n - keep, keep);
            tail_len = keep;
        } else {
            size_t shift = tail_len + (size_t)n > keep ? tail_len + (size_t)n - keep : 0;
            memmove(tail, tail + shift, tail_len - shift);
            memcpy(tail + tail_len - shift, buffer, (size_t)n);
            tail_len = tail_len - shift + (size_t)n;
        }
        if (!body_end_ns && tail_len == keep && memcmp(tail, last_chunk, keep) == 0) {
            body_end_ns = now_ns();
            if (stop_at_body_end) break;
        }
    }
    long long end_ns = now_ns();
    if (!body_end_ns) body_end_ns = end_ns;
    close(sock);
    close(out);
    printf("%lld %lld %lld %lld %lld\n", connect_ns, first_ns, body_end_ns, end_ns, total);
    return 0;
}
