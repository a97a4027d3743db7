/* Test-only stand-in for Windows' bcryptprimitives.dll under Wine 8.
 *
 * Rust's standard library (1.78 and later) draws its randomness from ProcessPrng in
 * bcryptprimitives.dll, which every supported Windows has and Wine 8 does not. Under Wine the
 * agent then fails to start. This DLL, placed beside agent.exe in the Wine tests only, provides
 * ProcessPrng on top of RtlGenRandom (advapi32's SystemFunction036). It is never shipped: the
 * MSI and the zip do not contain it (scripts/windows-package checks that).
 */
#include <windows.h>

BOOLEAN NTAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
