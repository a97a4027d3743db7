/* Test-only: holds a file open without sharing it, as exam-device software does while it
 * writes an export, so that every other open fails with ERROR_SHARING_VIOLATION.
 *
 *   locker.exe <file> <seconds>
 *
 * Opens the existing <file> with share mode 0, prints "locked", sleeps <seconds>, closes it
 * and prints "released". Built by scripts/windows-build for the Wine tests; never shipped.
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

int wmain(int argc, wchar_t **argv)
{
    if (argc != 3) {
        fwprintf(stderr, L"usage: locker.exe <file> <seconds>\n");
        return 2;
    }
    HANDLE h = CreateFileW(argv[1], GENERIC_READ | GENERIC_WRITE, 0 /* no sharing */, NULL,
                           OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        fwprintf(stderr, L"locker: cannot open %ls: error %lu\n", argv[1], GetLastError());
        return 1;
    }
    printf("locked\n");
    fflush(stdout);
    Sleep((DWORD)(_wtoi(argv[2]) * 1000));
    CloseHandle(h);
    printf("released\n");
    fflush(stdout);
    return 0;
}
