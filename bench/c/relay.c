/* relay CMD [ARGS...]: the raw loopback relay, a floor for the server's throughput.
 *
 * Listens on 127.0.0.1 (a free port, printed on stdout), accepts one connection,
 * then runs CMD with its stdout on a pipe and copies the pipe to the socket with
 * read(2)/write(2) until end of file: what the server does, minus HTTP, SSE and Python.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUFFER (256 * 1024)
static char buffer[BUFFER];

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: relay CMD [ARGS...]\n");
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 1) < 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) < 0) {
        perror("relay: listen");
        return 1;
    }
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int sock = accept(listener, NULL, NULL);
    if (sock < 0) {
        perror("relay: accept");
        return 1;
    }
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int pipefd[2];
    if (pipe(pipefd) < 0) {
        perror("relay: pipe");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        close(sock);
        close(listener);
        execv(argv[1], argv + 1);
        _exit(127);
    }
    close(pipefd[1]);
    for (;;) {
        ssize_t n = read(pipefd[0], buffer, BUFFER);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("relay: read");
            return 1;
        }
        if (n == 0) break;
        char *p = buffer;
        while (n > 0) {
            ssize_t w = write(sock, p, (size_t)n);
            if (w < 0) {
                if (errno == EINTR) continue;
                perror("relay: write");
                return 1;
            }
            p += w;
            n -= w;
        }
    }
    int status;
    waitpid(child, &status, 0);
    close(sock);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
