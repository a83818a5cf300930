/* ticker COUNT INTERVAL_US: COUNT times, every INTERVAL_US microseconds, print the
 * CLOCK_REALTIME time in nanoseconds as one line, read just before the write(2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: ticker COUNT INTERVAL_US\n");
        return 2;
    }
    long count = atol(argv[1]);
    long long interval = atoll(argv[2]) * 1000LL;
    struct timespec next, now;
    clock_gettime(CLOCK_MONOTONIC, &next);
    char line[32];
    for (long i = 0; i < count; i++) {
        long long ns = next.tv_nsec + interval;
        next.tv_sec += ns / 1000000000LL;
        next.tv_nsec = ns % 1000000000LL;
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
        clock_gettime(CLOCK_REALTIME, &now);
        int len = snprintf(line, sizeof line, "%lld\n", (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
        if (write(1, line, (size_t)len) != len) return 1;
    }
    return 0;
}
