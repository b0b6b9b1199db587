/* SPDX-License-Identifier: MIT */
/* stdio_echo.c built with _FORTIFY_SOURCE=2, as distributions build
 * packages: dprintf becomes __dprintf_chk, fprintf __fprintf_chk. */
#include "stdio_echo.c"
