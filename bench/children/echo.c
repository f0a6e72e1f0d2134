/* The echo child of the long-lived and bulk measurements: copies stdin to
 * stdout through one 64 KiB buffer until EOF, then exits 0.
 *
 * Built by bench/run.sh: gcc -O2 -static
 */
#include <errno.h>
#include <unistd.h>

static char buf[64 * 1024];

int main(void)
{
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(1, buf + done, (size_t)(n - done));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return 1;
            }
            done += w;
        }
    }
}
