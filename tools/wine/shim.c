/*
 * bcryptprimitives.dll for Wine 8 — test scaffolding only, it ships nowhere.
 *
 * Rust's std (1.78+) imports ProcessPrng from bcryptprimitives.dll, which
 * Wine 8 does not provide: every Rust exe then fails to load (exit 53, or
 * 0xC0000135 when started from inside Wine). This DLL provides the one
 * export, backed by RtlGenRandom (advapi32's SystemFunction036), and is
 * copied into the prefix's system32 by tools/wine/setup.sh.
 *
 * ProcessPrng: https://learn.microsoft.com/windows/win32/seccng/processprng
 */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a ULONG: fill in chunks so a huge request is not
       silently truncated. */
    while (len > 0) {
        ULONG chunk = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
