/* The minimal child: write the reply and exit, in two system calls, with no
 * libc and no startup code, so that what a session costs is the server's and
 * the kernel's, not the program's.
 *
 * Built by bench/run.sh:
 *   gcc -Os -static -nostdlib -fno-stack-protector -fno-pie -no-pie
 */

static const char reply[] = "hello\n";

#if defined(__x86_64__)
#define SYS_WRITE 1
#define SYS_EXIT_GROUP 231
static long syscall3(long n, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define SYS_WRITE 64
#define SYS_EXIT_GROUP 94
static long syscall3(long n, long a, long b, long c)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
}
#else
#error "min.c: add this architecture's system call convention"
#endif

void _start(void)
{
    syscall3(SYS_WRITE, 1, (long)reply, sizeof reply - 1);
    syscall3(SYS_EXIT_GROUP, 0, 0, 0);
    for (;;) {
    }
}
