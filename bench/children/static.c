/* The ordinary child: a static C program, as an administrator would write
 * one (libc's startup, stdio, exit). Same reply as min.c.
 *
 * Built by bench/run.sh: gcc -O2 -static
 */
#include <stdio.h>

int main(void)
{
    fputs("hello\n", stdout);
    return 0;
}
