/* LD_PRELOAD shim: a decoder that crashes or hangs on chosen files, without a bad file.
 *
 * decord's and PyAV's FFmpeg, and Python's own open(), open files through libc's open/open64/openat/fopen; this
 * library wraps those calls. A path whose name ends with one of the ':'-separated entries of
 *   GNVIDEO_FAULT_CRASH  raises SIGSEGV in the calling process (what a segfault inside FFmpeg does),
 *   GNVIDEO_FAULT_HANG   blocks the calling thread forever (a decoder that never returns);
 * every such open, and every open of a GNVIDEO_FAULT_WATCH entry, first appends "<pid> <path>\n" to the file
 * GNVIDEO_FAULT_LOG (if set), so a test can count how often a file was opened, in every process of a run.
 * Built by tests/decoder_faults.py with gcc; test-only.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ends_with_entry(const char *path, const char *var) {
    const char *list = getenv(var);
    if (path == NULL || list == NULL || *list == '\0') return 0;
    size_t n = strlen(path);
    while (*list) {
        const char *end = strchr(list, ':');
        size_t k = end ? (size_t)(end - list) : strlen(list);
        if (k > 0 && k <= n && strncmp(path + n - k, list, k) == 0) return 1;
        if (!end) break;
        list = end + 1;
    }
    return 0;
}

static void note(const char *path) {
    const char *log = getenv("GNVIDEO_FAULT_LOG");
    if (log == NULL || *log == '\0') return;
    /* the raw system call: never re-enters the wrappers below */
    int fd = (int)syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char line[4200];
    int len = snprintf(line, sizeof line, "%d %s\n", (int)getpid(), path);
    if (len > 0) {
        ssize_t ignored = write(fd, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
        (void)ignored;
    }
    close(fd);
}

static void fault(const char *path) {
    int crash = ends_with_entry(path, "GNVIDEO_FAULT_CRASH");
    int hang = ends_with_entry(path, "GNVIDEO_FAULT_HANG");
    if (crash || hang || ends_with_entry(path, "GNVIDEO_FAULT_WATCH")) note(path);
    if (crash) {
        signal(SIGSEGV, SIG_DFL); /* no handler may turn it into something milder */
        raise(SIGSEGV);
    }
    if (hang) {
        for (;;) pause();
    }
}

#define MODE_ARG(flags, mode)                        \
    mode_t mode = 0;                                 \
    if ((flags) & (O_CREAT | O_TMPFILE)) {           \
        va_list ap;                                  \
        va_start(ap, flags);                         \
        mode = (mode_t)va_arg(ap, int);              \
        va_end(ap);                                  \
    }

#define NEXT(name, type) static type real_##name; if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef FILE *(*fopen_fn)(const char *, const char *);

int open(const char *path, int flags, ...) {
    MODE_ARG(flags, mode);
    fault(path);
    NEXT(open, open_fn);
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    MODE_ARG(flags, mode);
    fault(path);
    NEXT(open64, open_fn);
    return real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags, mode);
    fault(path);
    NEXT(openat, openat_fn);
    return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags, mode);
    fault(path);
    NEXT(openat64, openat_fn);
    return real_openat64(dirfd, path, flags, mode);
}

FILE *fopen(const char *path, const char *how) {
    fault(path);
    NEXT(fopen, fopen_fn);
    return real_fopen(path, how);
}

FILE *fopen64(const char *path, const char *how) {
    fault(path);
    NEXT(fopen64, fopen_fn);
    return real_fopen64(path, how);
}
