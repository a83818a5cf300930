/* writer BYTES: write BYTES of numbered 100-byte lines to stdout, as fast as write(2) allows.
 *
 * Line i (from 0) is: i as 10 decimal digits, a space, 88 letters starting at
 * letter i % 26 of the alphabet (wrapping), and a newline. The last line is cut
 * so that exactly BYTES are written. bench/tools.py:expected_output() makes the same bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINE 100
#define LINES_PER_WRITE 10000 /* one write(2) of 1,000,000 bytes */

static char buffer[LINE * LINES_PER_WRITE];

int main(int argc, char **argv) {
    if (argc != 2) {
        static const char usage[] = "usage: writer BYTES\n";
        (void)!write(2, usage, sizeof usage - 1);
        return 2;
    }
    long long total = atoll(argv[1]);
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz";
    char fill[26][88];
    for (int r = 0; r < 26; r++)
        for (int j = 0; j < 88; j++) fill[r][j] = alphabet[(r + j) % 26];
    char digits[10];
    memset(digits, '0', sizeof digits);
    int rotation = 0;
    long long written = 0;
    while (written < total) {
        size_t filled = 0;
        for (int i = 0; i < LINES_PER_WRITE && written + (long long)filled < total; i++) {
            char *p = buffer + filled;
            memcpy(p, digits, 10);
            p[10] = ' ';
            memcpy(p + 11, fill[rotation], 88);
            p[99] = '\n';
            filled += LINE;
            rotation = rotation == 25 ? 0 : rotation + 1;
            for (int d = 9; d >= 0; d--) {
                if (digits[d] == '9') {
                    digits[d] = '0';
                } else {
                    digits[d]++;
                    break;
                }
            }
        }
        size_t want = total - written < (long long)filled ? (size_t)(total - written) : filled;
        size_t done = 0;
        while (done < want) {
            ssize_t n = write(1, buffer + done, want - done);
            if (n < 0) {
                if (errno == EINTR) continue;
                return 1;
            }
            done += (size_t)n;
        }
        written += (long long)want;
    }
    return 0;
}
