/* Stand-in for Windows' bcryptprimitives.dll, for running tests under Wine 8 only.
 *
 * Rust's standard library (since 1.78) takes its random bytes from ProcessPrng in
 * bcryptprimitives.dll. Wine 8 has no such DLL, so every Rust program fails to
 * start there. This DLL exports ProcessPrng and fills the buffer with
 * RtlGenRandom (advapi32's SystemFunction036), which Wine implements.
 * scripts/windows-check.sh builds it with MinGW and copies it into its private Wine
 * prefix; it is never part of a release, and real Windows has the genuine DLL. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
