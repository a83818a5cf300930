/* Launching contained commands with vfork semantics, from dedicated threads.
 *
 * The child is made as glibc's posix_spawn makes it: clone(CLONE_VM | CLONE_VFORK) on a stack of
 * its own, with every signal blocked across the clone (by the raw system call: glibc's
 * pthread_sigmask leaves its internal signals 32 and 33 open). The child shares the memory of the
 * worker, but the thread that cloned it sleeps until the child has exec'd or exited, so the child
 * runs only on that thread's behalf: it may write that thread's errno, and its stack and arguments
 * are the thread's, released only after the clone has returned. The worker's event loop runs on in
 * its own thread meanwhile, so a child stuck before its exec (a hung NFS chdir, say) stops nothing
 * but one spawner thread, and can be killed through its pidfd (CLONE_PIDFD), which the kernel writes
 * before the child first runs.
 *
 * The child reports to nobody by signal (exit signal 0) until it execs, when the kernel makes it an
 * ordinary SIGCHLD child: one that never gets there is not reaped by libev's SIGCHLD handler (it
 * waits without __WALL) and the caller reaps it through its pidfd; one that does may be reaped by
 * libev before the clone has even returned, so the child first writes its pid where the caller can
 * read it.
 *
 * In the child: no malloc, no locks, no stdio; system calls through glibc's thin wrappers or
 * syscall(). The set*id calls are raw system calls: glibc's wrappers would signal every thread of
 * the worker to change their credentials too. Everything here is portable C for every Linux
 * architecture glibc supports; there is no inline assembly.
 */
#define _GNU_SOURCE
#include "spawner.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif
#ifndef SYS_pidfd_send_signal
#error "kernel headers without pidfd_send_signal: Linux 5.1 headers or later are needed"
#endif
#ifndef MAP_STACK
#define MAP_STACK 0
#endif

/* Where the plain calls take 16-bit ids (i386, 32-bit arm), the 32-bit ones. */
#ifdef SYS_setresuid32
#define SYS_SETRESUID SYS_setresuid32
#define SYS_SETRESGID SYS_setresgid32
#define SYS_SETGROUPS SYS_setgroups32
#else
#define SYS_SETRESUID SYS_setresuid
#define SYS_SETRESGID SYS_setresgid
#define SYS_SETGROUPS SYS_setgroups
#endif

#define CHILD_STACK_SIZE (64 * 1024)
#define MAX_SPAWNER_THREADS 64
#define SPAWNER_THREAD_STACK_SIZE (256 * 1024)
/* The kernel's sigset_t: 8 bytes on most architectures, 16 on mips. */
#define KERNEL_SIGSET_BYTES (_NSIG / 8)

struct spawn_launch {
    int refs;                  /* atomic: the caller's and, once submitted, a spawner thread's */
    struct spawn_launch *next; /* in the queue */

    /* What the child does; read-only once submitted. */
    const char *path;
    char **argv;
    char **envp;
    const char *cwd;
    int stdio[3];
    int cgroup_procs;
    int done_write; /* the status pipe's write end, closed last by the spawner thread */
    long uid, gid;
    int nlimits;
    int limit_resource[SPAWNER_MAX_RLIMITS];
    struct rlimit64 limit_value[SPAWNER_MAX_RLIMITS];
    int pdeathsig;
    int umask_value;
    int no_new_privs;
    pid_t parent_pid;
    sigset_t child_mask;

    /* Shared by the caller, the spawner thread and the child. */
    int cancelled; /* atomic: the caller wants no command run */
    int pidfd;     /* atomic: written by the kernel during the clone (CLONE_PIDFD); -1 before */
    int finished;  /* atomic: the spawner thread is done (release) */
    pid_t pid;
    int clone_error;
    volatile pid_t child_pid; /* written by the child first */
    volatile int stage; /* written by the child */
    volatile int error; /* written by the child */

    char data[]; /* the strings and pointer arrays above point here */
};

/* Everything blocked, 32 and 33 included; the kernel ignores the bits of SIGKILL and SIGSTOP. */
static const unsigned char all_signals[16] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
};
/* A kernel struct sigaction of zeros is SIG_DFL with no flags and an empty mask on every layout. */
static const unsigned long default_action[8];

/* The child. */

__attribute__((noreturn)) static void child_fail(struct spawn_launch *l, int stage, int error)
{
    l->stage = stage;
    l->error = error ? error : EINVAL;
    for (;;)
        _exit(127);
}

/* Close every descriptor from 3 up except keep (-1: none). */
static void close_from_3(int keep)
{
    struct rlimit64 limit;
    long fd, end = 1 << 20;
#ifdef SYS_close_range
    unsigned int first = 3;
    int ok = 1;
    if (keep >= 3) {
        if (keep > 3)
            ok = syscall(SYS_close_range, 3U, (unsigned int)keep - 1, 0U) == 0;
        first = (unsigned int)keep + 1;
    }
    if (ok && syscall(SYS_close_range, first, ~0U, 0U) == 0)
        return;
#endif
    /* No close_range (Linux before 5.9): every descriptor below the limit. */
    if (prlimit64(0, RLIMIT_NOFILE, NULL, &limit) == 0 && limit.rlim_cur < (rlim64_t)end)
        end = (long)limit.rlim_cur;
    for (fd = 3; fd < end; fd++) {
        if (fd != keep)
            close((int)fd);
    }
}

static int child_main(void *arg)
{
    struct spawn_launch *l = arg;
    gid_t groups[1];
    int i;

    /* Known to the caller before the exec: once exec'd, the child's exit can be reaped by libev's SIGCHLD
     * handler before the spawner thread has even returned from the clone. */
    l->child_pid = (pid_t)syscall(SYS_getpid);

    /* The caller stopped this launch before it could see the pidfd (see spawn_launch_kill). */
    if (__atomic_load_n(&l->cancelled, __ATOMIC_SEQ_CST))
        child_fail(l, STAGE_CANCELLED, ECANCELED);

    /* First: this child holds copies of every descriptor of the worker (sockets, other jobs'
     * pipes) until it closes them. The ones it keeps are at 3 or above (ensured by the caller). */
    l->stage = STAGE_FDS;
    for (i = 0; i < 3; i++) {
        if (dup3(l->stdio[i], i, 0) < 0)
            child_fail(l, STAGE_FDS, errno);
    }
    close_from_3(l->cgroup_procs);

    /* Into the job's cgroup before anything that could hang: from here on, killing the cgroup
     * kills this child, and whatever it will ever fork starts inside. */
    if (l->cgroup_procs >= 0) {
        l->stage = STAGE_CGROUP;
        if (write(l->cgroup_procs, "0", 1) != 1)
            child_fail(l, STAGE_CGROUP, errno);
        close(l->cgroup_procs);
    }

    /* Default dispositions: the worker's handlers must never run here, and nothing it ignores
     * (SIGPIPE above all) is inherited by the command. The raw system call, because glibc's
     * sigaction refuses its reserved signals 32 and 33, and those can arrive ignored (GNU make
     * ignores them in what it runs, and an ignored signal survives execve). */
    for (i = 1; i < _NSIG; i++) {
        if (i != SIGKILL && i != SIGSTOP)
            syscall(SYS_rt_sigaction, i, default_action, NULL, KERNEL_SIGSET_BYTES);
    }

    if (l->umask_value >= 0)
        umask((mode_t)l->umask_value);
    if (l->cwd) {
        l->stage = STAGE_CHDIR;
        if (chdir(l->cwd) < 0)
            child_fail(l, STAGE_CHDIR, errno);
    }
    l->stage = STAGE_SETSID;
    if (setsid() < 0)
        child_fail(l, STAGE_SETSID, errno);

    if (l->uid >= 0) {
        /* Root's supplementary groups are dropped along with root itself. */
        l->stage = STAGE_CREDENTIALS;
        groups[0] = (gid_t)l->gid;
        if (syscall(SYS_SETGROUPS, 1, groups) < 0 ||
            syscall(SYS_SETRESGID, (gid_t)l->gid, (gid_t)l->gid, (gid_t)l->gid) < 0 ||
            syscall(SYS_SETRESUID, (uid_t)l->uid, (uid_t)l->uid, (uid_t)l->uid) < 0)
            child_fail(l, STAGE_CREDENTIALS, errno);
    }

    /* After the switch of user: an unprivileged process can only lower them, and setting the
     * user clears the death signal. */
    l->stage = STAGE_RLIMIT;
    for (i = 0; i < l->nlimits; i++) {
        if (prlimit64(0, l->limit_resource[i], &l->limit_value[i], NULL) < 0)
            child_fail(l, STAGE_RLIMIT, errno);
    }
    if (l->no_new_privs) {
        l->stage = STAGE_NO_NEW_PRIVS;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            child_fail(l, STAGE_NO_NEW_PRIVS, errno);
    }
    if (l->pdeathsig) {
        l->stage = STAGE_PDEATHSIG;
        if (prctl(PR_SET_PDEATHSIG, l->pdeathsig, 0, 0, 0) < 0)
            child_fail(l, STAGE_PDEATHSIG, errno);
        /* The worker died before the death signal was armed. */
        if (getppid() != l->parent_pid)
            _exit(127);
    }

    l->stage = STAGE_EXEC;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &l->child_mask, NULL, KERNEL_SIGSET_BYTES);
    execve(l->path, l->argv, l->envp);
    child_fail(l, STAGE_EXEC, errno);
    return 127;
}

/* Launch records. */

static size_t strings_size(char *const *list, size_t *count)
{
    size_t n = 0, size = 0;
    for (; list[n]; n++)
        size += strlen(list[n]) + 1;
    *count = n;
    return size;
}

/* Copy a NULL-terminated list into pointers (count + 1 slots) and text at *cursor. */
static void copy_strings(char *const *list, size_t count, char **pointers, char **cursor)
{
    size_t i, len;
    for (i = 0; i < count; i++) {
        len = strlen(list[i]) + 1;
        memcpy(*cursor, list[i], len);
        pointers[i] = *cursor;
        *cursor += len;
    }
    pointers[count] = NULL;
}

static char *copy_string(const char *text, char **cursor)
{
    size_t len = strlen(text) + 1;
    char *copy = *cursor;
    memcpy(copy, text, len);
    *cursor += len;
    return copy;
}

static void close_owned(struct spawn_launch *l)
{
    int i;
    for (i = 0; i < 3; i++) {
        if (l->stdio[i] >= 0)
            close(l->stdio[i]);
        l->stdio[i] = -1;
    }
    if (l->cgroup_procs >= 0)
        close(l->cgroup_procs);
    l->cgroup_procs = -1;
}

static void close_request_fds(const struct spawn_request *r)
{
    int i;
    for (i = 0; i < 3; i++) {
        if (r->stdio[i] >= 0)
            close(r->stdio[i]);
    }
    if (r->cgroup_procs >= 0)
        close(r->cgroup_procs);
}

struct spawn_launch *spawn_launch_new(const struct spawn_request *r, int *done_fd, int *error)
{
    size_t nargv, nenvp, text, pointers, total;
    struct spawn_launch *l;
    char *cursor;
    int status[2], i;

    if (r->nlimits < 0 || r->nlimits > SPAWNER_MAX_RLIMITS) {
        close_request_fds(r);
        *error = EINVAL;
        return NULL;
    }
    text = strlen(r->path) + 1 + (r->cwd ? strlen(r->cwd) + 1 : 0);
    text += strings_size(r->argv, &nargv) + strings_size(r->envp, &nenvp);
    pointers = (nargv + 1 + nenvp + 1) * sizeof(char *);
    total = sizeof *l + pointers + text;
    l = calloc(1, total);
    if (l == NULL) {
        close_request_fds(r);
        *error = ENOMEM;
        return NULL;
    }
    if (pipe2(status, O_CLOEXEC) < 0) {
        *error = errno;
        free(l);
        close_request_fds(r);
        return NULL;
    }
    l->refs = 1;
    l->argv = (char **)l->data;
    l->envp = l->argv + nargv + 1;
    cursor = (char *)(l->envp + nenvp + 1);
    copy_strings(r->argv, nargv, l->argv, &cursor);
    copy_strings(r->envp, nenvp, l->envp, &cursor);
    l->path = copy_string(r->path, &cursor);
    l->cwd = r->cwd ? copy_string(r->cwd, &cursor) : NULL;
    for (i = 0; i < 3; i++)
        l->stdio[i] = r->stdio[i];
    l->cgroup_procs = r->cgroup_procs;
    l->done_write = status[1];
    l->uid = r->uid;
    l->gid = r->gid;
    l->nlimits = r->nlimits;
    for (i = 0; i < r->nlimits; i++) {
        l->limit_resource[i] = r->limit_resource[i];
        l->limit_value[i].rlim_cur = l->limit_value[i].rlim_max = (rlim64_t)r->limit_value[i];
    }
    l->pdeathsig = r->pdeathsig;
    l->umask_value = r->umask_value;
    l->no_new_privs = r->no_new_privs;
    l->parent_pid = getpid();
    l->child_mask = r->child_mask;
    l->pidfd = -1;
    l->pid = -1;
    *done_fd = status[0];
    return l;
}

static void launch_unref(struct spawn_launch *l)
{
    if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    close_owned(l);
    if (l->done_write >= 0)
        close(l->done_write);
    if (l->pidfd >= 0)
        close(l->pidfd);
    free(l);
}

void spawn_launch_release(struct spawn_launch *l)
{
    launch_unref(l);
}

int spawn_launch_kill(struct spawn_launch *l, int sig)
{
    int pidfd;
    /* Paired with the child's first load of cancelled: the kernel writes the pidfd before the child
     * first runs, so either the pidfd is seen here, or the child sees cancelled and never execs. */
    __atomic_store_n(&l->cancelled, 1, __ATOMIC_SEQ_CST);
    pidfd = __atomic_load_n(&l->pidfd, __ATOMIC_SEQ_CST);
    if (pidfd < 0)
        return 0;
    if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0U) < 0)
        return errno == ESRCH ? 0 : -errno;
    return 1;
}

int spawn_launch_finished(const struct spawn_launch *l)
{
    return __atomic_load_n(&l->finished, __ATOMIC_ACQUIRE);
}

void spawn_launch_result(const struct spawn_launch *l, pid_t *pid, int *stage, int *error)
{
    *pid = l->pid;
    *stage = l->stage;
    *error = l->pid < 0 ? l->clone_error : l->error;
}

int spawn_launch_stage(const struct spawn_launch *l)
{
    return l->stage;
}

pid_t spawn_launch_child_pid(const struct spawn_launch *l)
{
    return l->child_pid;
}

int spawn_launch_take_pidfd(struct spawn_launch *l)
{
    int pidfd;
    if (!spawn_launch_finished(l))
        return -1;
    pidfd = l->pidfd;
    l->pidfd = -1;
    return pidfd;
}

/* Spawner threads: each sleeps until a launch is queued, clones its child on a stack of its own
 * (with a guard page below it) and sleeps in the clone until the child has exec'd or exited. They
 * never exit: a child's PR_SET_PDEATHSIG fires when the thread that cloned it ends. */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static struct spawn_launch *queue_head, *queue_tail;
static int queued, idle_threads, threads;

struct child_stack {
    char *map;
    size_t size;
    char *start; /* what clone gets */
};

static int child_stack_new(struct child_stack *stack)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t usable = (CHILD_STACK_SIZE + page - 1) / page * page;
    stack->size = usable + page;
    stack->map = mmap(NULL, stack->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE,
                      -1, 0);
    if (stack->map == MAP_FAILED)
        return errno;
#if defined(__hppa__)
    /* The one Linux architecture whose stack grows up: the guard is above it. */
    if (mprotect(stack->map + usable, page, PROT_NONE) < 0)
        goto failed;
    stack->start = stack->map;
#else
    if (mprotect(stack->map, page, PROT_NONE) < 0)
        goto failed;
    stack->start = stack->map + stack->size;
#endif
    return 0;
failed:
    munmap(stack->map, stack->size);
    return errno;
}

static void launch_run(struct spawn_launch *l, struct child_stack *stack)
{
    unsigned char old_mask[sizeof(sigset_t)];
    pid_t pid;

    if (__atomic_load_n(&l->cancelled, __ATOMIC_SEQ_CST)) {
        l->clone_error = ECANCELED;
        l->stage = STAGE_CANCELLED;
    } else {
        /* As posix_spawn: nothing of the worker's is ever run in the child by a signal. */
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, all_signals, old_mask, KERNEL_SIGSET_BYTES);
        pid = clone(child_main, stack->start, CLONE_VM | CLONE_VFORK | CLONE_PIDFD, l, &l->pidfd);
        l->clone_error = pid < 0 ? errno : 0;
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, old_mask, NULL, KERNEL_SIGSET_BYTES);
        l->pid = pid;
    }
    /* The child has its own copies of these (now closed or exec'd). */
    close_owned(l);
    __atomic_store_n(&l->finished, 1, __ATOMIC_RELEASE);
    close(l->done_write); /* end-of-file for the caller */
    l->done_write = -1;
}

static void *spawner_main(void *arg)
{
    struct child_stack stack = *(struct child_stack *)arg;
    struct spawn_launch *l;

    free(arg);
    for (;;) {
        pthread_mutex_lock(&pool_lock);
        while (queue_head == NULL) {
            idle_threads++;
            pthread_cond_wait(&pool_wake, &pool_lock);
            idle_threads--;
        }
        l = queue_head;
        queue_head = l->next;
        if (queue_head == NULL)
            queue_tail = NULL;
        queued--;
        pthread_mutex_unlock(&pool_lock);
        launch_run(l, &stack);
        launch_unref(l);
    }
    return NULL;
}

/* Under pool_lock. */
static int spawner_start(void)
{
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    struct child_stack *stack = malloc(sizeof *stack);
    int err;

    if (stack == NULL)
        return ENOMEM;
    if ((err = child_stack_new(stack)) != 0) {
        free(stack);
        return err;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, SPAWNER_THREAD_STACK_SIZE);
    /* The thread starts with every signal blocked, so the worker's signals go to the worker. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&thread, &attr, spawner_main, stack);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        munmap(stack->map, stack->size);
        free(stack);
        return err;
    }
    threads++;
    return 0;
}

int spawn_launch_submit(struct spawn_launch *l)
{
    int err = 0;

    __atomic_add_fetch(&l->refs, 1, __ATOMIC_RELAXED); /* the spawner thread's */
    pthread_mutex_lock(&pool_lock);
    l->next = NULL;
    if (queue_tail)
        queue_tail->next = l;
    else
        queue_head = l;
    queue_tail = l;
    queued++;
    if (queued > idle_threads && threads < MAX_SPAWNER_THREADS)
        err = spawner_start();
    if (err && threads == 0) {
        /* Nobody to take it: unqueue (it is the only one). */
        queue_head = queue_tail = NULL;
        queued = 0;
        pthread_mutex_unlock(&pool_lock);
        launch_unref(l);
        return err;
    }
    /* Otherwise a busy thread takes it once free. */
    pthread_cond_signal(&pool_wake);
    pthread_mutex_unlock(&pool_lock);
    return 0;
}

/* A forked child of the worker has none of its threads (nor their queue). */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool_lock, NULL);
    pthread_cond_init(&pool_wake, NULL);
    queue_head = queue_tail = NULL;
    queued = idle_threads = threads = 0;
}

__attribute__((constructor)) static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork);
}
