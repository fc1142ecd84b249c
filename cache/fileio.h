/*
** fileio.h -- internal: the one way the library and its tools read a file
** that someone else may have put there: cache entries, AOT cubins,
** manifest.tsv, tuning dbs (opened, merged, imported).
**
** sfa__file_read opens with O_RDONLY | O_NONBLOCK | O_CLOEXEC, so that a FIFO
** or a device never blocks the open, adds O_NOFOLLOW when asked (for names the
** cache made itself, where a symbolic link is never followed), accepts a
** regular file only (fstat: "is a FIFO, not a regular file"), refuses one
** larger than the caller's limit before allocating anything ("is 15.0 GiB,
** more than the 64 MiB allowed") and reads it whole. Every message names the
** file (as the caller shows it) and the reason.
**
** Limits (the callers pass one of these):
**   SFA__FILE_MAX_BINARY  64 MiB: a cache entry (header, key material, cubin)
**                         or an AOT cubin; real cubins are at most a few MB.
**   SFA__FILE_MAX_TEXT    16 MiB: manifest.tsv or a tuning db; real ones are a
**                         few hundred bytes per kernel or row.
**   SFA__FILE_MAX_LINE    4096 bytes: one line of a text file (without its
**                         line end); a longer line is an error of that line.
*/
#ifndef SFA_CACHE_FILEIO_H
#define SFA_CACHE_FILEIO_H

#include <fcntl.h> /* AT_FDCWD */
#include <stddef.h>

#include "sfa.h"

#define SFA__FILE_MAX_BINARY ((size_t)64 << 20)
#define SFA__FILE_MAX_TEXT ((size_t)16 << 20)
#define SFA__FILE_MAX_LINE 4096

enum {
  SFA__READ_NOFOLLOW = 1 /* refuse a symbolic link as the last component */
};

/* Reads the file path (relative to dirfd when it is not AT_FDCWD and path is
** relative) whole into *data (malloc'ed, size + 1 bytes, NUL-terminated; the
** NUL is not counted in *len). shown is the name used in messages (NULL:
** path). Returns:
**   SFA_OK;
**   SFA_ERR_NOT_FOUND   it does not exist (ENOENT, ENOTDIR): "<shown>: cannot
**                       open: No such file or directory";
**   SFA_ERR_IO          it cannot be opened or read, is a symbolic link under
**                       SFA__READ_NOFOLLOW, is not a regular file, or changed
**                       size while being read;
**   SFA_ERR_CORRUPT     it is larger than max bytes (nothing is read);
**   SFA_ERR_OUT_OF_MEMORY.
** On failure *data is NULL and *len 0. */
sfa_status sfa__file_read(int dirfd, const char *path, const char *shown, unsigned flags,
                          size_t max, char **data, size_t *len, char *err, size_t errlen);

/* What a stat mode is, for messages: "a FIFO", "a character device", "a
** directory", "a symbolic link", "a socket", "a block device", "a regular
** file", or "a special file". */
const char *sfa__file_kind(unsigned mode);

/* The next line of text[0..end): *line points at it and *len is its length
** without the '\n' (a trailing '\r' is kept); *pos moves past it. The '\n' is
** replaced by NUL, so the line is a C string unless it holds a NUL byte
** itself (check strlen(*line) != *len). Returns 0 when there is no line left.
** Callers compare *len against SFA__FILE_MAX_LINE. */
int sfa__file_next_line(char **pos, char *end, char **line, size_t *len);

#endif
