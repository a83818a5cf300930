/* Spawning a contained command without forking the worker.
 *
 * gevent.subprocess forks the whole worker (and a preexec_fn forces that
 * even in the standard library), then runs Python in the child: the fork
 * copies the page tables of a large process and every page the worker
 * writes afterwards faults until the child has exec'd. Here the child
 * shares the worker's memory (clone with CLONE_VM, as glibc's posix_spawn
 * does), runs on a stack of its own, and makes raw system calls only.
 *
 * posix_spawn adds CLONE_VFORK: the parent sleeps until the child has
 * exec'd. Under load that wait was a fifth of the worker's time, so here the
 * worker runs on while the child prepares itself on another CPU. That is
 * safe because the child touches only what this module owns until it is
 * done: its stack and its arguments live in a Launch object, which frees them
 * only after the child has exec'd or exited. The worker learns that from a
 * close-on-exec status pipe, whose write end only the child holds: it reads
 * end-of-file once the child's exec (or exit) has released the shared memory.
 *
 * In the child: no malloc, no locks, no Python, and no glibc call that
 * writes errno or anything else in the worker's thread-local storage (which
 * the child shares): system calls are made by inline assembly. glibc's setxid
 * wrappers would be unsafe anyway (in a threaded process they signal every
 * thread of the parent). Signals are blocked in the parent around the clone
 * so that no handler of the worker ever runs in the child; the child resets
 * every disposition to the default and restores the worker's signal mask
 * just before execve. On an architecture without the inline system calls the
 * module falls back to CLONE_VFORK, where sharing errno is harmless.
 *
 * A failure in the child is written into memory shared with the parent
 * (the stage and errno), then the child exits with 127.
 */

#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define CHILD_STACK_SIZE (64 * 1024)
#define MAX_RLIMITS 16

/* System calls for the child: the result, or -errno; errno is never written. */
#if defined(__x86_64__)
#define CONCURRENT_CHILD 1
static inline long sys6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define CONCURRENT_CHILD 1
static inline long sys6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a1;
    register long x1 __asm__("x1") = a2;
    register long x2 __asm__("x2") = a3;
    register long x3 __asm__("x3") = a4;
    register long x4 __asm__("x4") = a5;
    register long x5 __asm__("x5") = a6;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
    return x0;
}
#else
#define CONCURRENT_CHILD 0
static long sys6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    long ret = syscall(n, a1, a2, a3, a4, a5, a6);
    return ret < 0 ? -errno : ret;
}
#endif

#if CONCURRENT_CHILD
#define CLONE_FLAGS (CLONE_VM | SIGCHLD)
#else
#define CLONE_FLAGS (CLONE_VM | CLONE_VFORK | SIGCHLD)
#endif

#define SYS(n, a1, a2, a3) sys6((n), (long)(a1), (long)(a2), (long)(a3), 0, 0, 0)

/* Stages a child can fail at (reported to Python). */
enum {
    STAGE_NONE = 0,
    STAGE_FDS = 1,
    STAGE_CHDIR = 2,
    STAGE_SETSID = 3,
    STAGE_CREDENTIALS = 4,
    STAGE_RLIMIT = 5,
    STAGE_PDEATHSIG = 6,
    STAGE_EXEC = 7,
};

struct spawn_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;  /* NULL: stay */
    int fds[3];       /* become 0, 1, 2 */
    int status_fd;    /* kept open until exec: its end-of-file tells the parent */
    long uid, gid;    /* -1: keep */
    int nlimits;
    int limit_resource[MAX_RLIMITS];
    struct rlimit limit_value[MAX_RLIMITS];
    int pdeathsig;    /* 0: none */
    pid_t parent_pid;
    sigset_t old_mask;
    /* Written by the child. */
    volatile int stage;
    volatile int error;
};

/* The kernel's struct sigaction (not glibc's, whose mask is 128 bytes). */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};

/* The errno of a failed call, 0 on success. */
static inline int failed(long result) { return result < 0 ? (int)-result : 0; }

__attribute__((noreturn)) static void child_fail(struct spawn_args *a, int stage, int error)
{
    a->stage = stage;
    a->error = error ? error : EINVAL;
    for (;;)
        SYS(SYS_exit_group, 127, 0, 0);
}

/* Close every descriptor from 3 up except keep. */
static void close_others(int keep)
{
    struct rlimit limit;
    long fd, end = 1 << 20;
    if ((keep == 3 || failed(SYS(SYS_close_range, 3, keep - 1, 0)) == 0) &&
        failed(SYS(SYS_close_range, keep + 1, ~0U, 0)) == 0)
        return;
    /* No close_range (Linux before 5.9): every descriptor below the limit. */
    if (failed(sys6(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&limit, 0, 0)) == 0 && limit.rlim_cur < (rlim_t)end)
        end = (long)limit.rlim_cur;
    for (fd = 3; fd < end; fd++) {
        if (fd != keep)
            SYS(SYS_close, fd, 0, 0);
    }
}

static int child_main(void *arg)
{
    struct spawn_args *a = arg;
    int i, err;

    /* First, because the worker runs on meanwhile: the copies of its descriptors that this child
     * got (sockets, other jobs' pipes) keep their files open, and their epoll registrations alive,
     * until they are closed here. The pipe ends and /dev/null are at 3 or above (ensured by the parent). */
    for (i = 0; i < 3; i++) {
        if ((err = failed(SYS(SYS_dup2, a->fds[i], i, 0))))
            child_fail(a, STAGE_FDS, err);
    }
    close_others(a->status_fd);

    /* Default dispositions: the worker's handlers must never run here, and
     * nothing it ignores (SIGPIPE above all) is inherited by the command.
     * The raw system call, because glibc's sigaction refuses its reserved
     * signals 32 and 33, and those can arrive ignored (GNU make ignores them
     * in what it runs, and an ignored signal survives execve). */
    for (i = 1; i < _NSIG; i++) {
        struct kernel_sigaction sa = {0};  /* SIG_DFL, no flags, empty mask */
        if (i == SIGKILL || i == SIGSTOP)
            continue;
        sys6(SYS_rt_sigaction, i, (long)&sa, 0, sizeof sa.mask, 0, 0);
    }

    if (a->cwd && (err = failed(SYS(SYS_chdir, a->cwd, 0, 0))))
        child_fail(a, STAGE_CHDIR, err);
    if ((err = failed(SYS(SYS_setsid, 0, 0, 0))))
        child_fail(a, STAGE_SETSID, err);

    if (a->uid >= 0) {
        gid_t groups[1] = {(gid_t)a->gid};
        /* Root's supplementary groups are dropped along with root itself. */
        if ((err = failed(SYS(SYS_setgroups, 1, groups, 0))))
            child_fail(a, STAGE_CREDENTIALS, err);
        if ((err = failed(SYS(SYS_setresgid, (gid_t)a->gid, (gid_t)a->gid, (gid_t)a->gid))))
            child_fail(a, STAGE_CREDENTIALS, err);
        if ((err = failed(SYS(SYS_setresuid, (uid_t)a->uid, (uid_t)a->uid, (uid_t)a->uid))))
            child_fail(a, STAGE_CREDENTIALS, err);
    }

    /* After the switch of user: an unprivileged process can only lower them,
     * and setting the user clears the death signal. */
    for (i = 0; i < a->nlimits; i++) {
        if ((err = failed(sys6(SYS_prlimit64, 0, a->limit_resource[i], (long)&a->limit_value[i], 0, 0, 0))))
            child_fail(a, STAGE_RLIMIT, err);
    }
    if (a->pdeathsig) {
        if ((err = failed(sys6(SYS_prctl, PR_SET_PDEATHSIG, a->pdeathsig, 0, 0, 0, 0))))
            child_fail(a, STAGE_PDEATHSIG, err);
        /* The worker died before the death signal was armed. */
        if (SYS(SYS_getppid, 0, 0, 0) != a->parent_pid)
            SYS(SYS_exit_group, 127, 0, 0);
    }

    sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&a->old_mask, 0, _NSIG / 8, 0, 0);
    err = failed(SYS(SYS_execve, a->path, a->argv, a->envp));
    child_fail(a, STAGE_EXEC, err);
    return 127;
}

/* A file descriptor at 3 or above (close-on-exec), closing the original if it moved. */
static int above_stdio(int fd)
{
    int moved;
    if (fd >= 3)
        return fd;
    moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return moved;
}

/* A NULL-terminated array of the bytes objects of a tuple (borrowed pointers). */
static char **bytes_array(PyObject *tuple, const char *what)
{
    Py_ssize_t i, n = PyTuple_GET_SIZE(tuple);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyBytes_Check(item) || (Py_ssize_t)strlen(PyBytes_AS_STRING(item)) != PyBytes_GET_SIZE(item)) {
            PyErr_Format(PyExc_ValueError, "%s: bytes without NUL expected", what);
            PyMem_Free(out);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    return out;
}

/* A started child, and what it uses until it has exec'd or exited. */
typedef struct {
    PyObject_HEAD
    struct spawn_args a;
    char *stack;
    char **argv, **envp;
    PyObject *keep;  /* the bytes that argv, envp, path and cwd point into */
    int status_fd;   /* -1 once the child is known to be done with all of this */
} LaunchObject;

/* Wait (blocking) until the child has exec'd or exited, then free what it used. */
static void launch_release(LaunchObject *self)
{
    char byte;
    if (self->status_fd >= 0) {
        /* Only the child holds the write end: end-of-file comes with its exec or its exit. */
        for (;;) {
            ssize_t n = read(self->status_fd, &byte, 1);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                break;
        }
        close(self->status_fd);
        self->status_fd = -1;
    }
    PyMem_Free(self->stack);
    PyMem_Free(self->argv);
    PyMem_Free(self->envp);
    self->stack = NULL;
    self->argv = self->envp = NULL;
    Py_CLEAR(self->keep);
}

static void launch_dealloc(LaunchObject *self)
{
    launch_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *launch_fileno(LaunchObject *self, PyObject *unused)
{
    if (self->status_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the launch is already finished");
        return NULL;
    }
    return PyLong_FromLong(self->status_fd);
}

static PyObject *launch_result(LaunchObject *self, PyObject *unused)
{
    launch_release(self);
    return Py_BuildValue("(ii)", self->a.stage, self->a.error);
}

static PyMethodDef launch_methods[] = {
    {"fileno", (PyCFunction)launch_fileno, METH_NOARGS,
     "The status pipe: readable (end-of-file) once the child has exec'd or exited."},
    {"result", (PyCFunction)launch_result, METH_NOARGS,
     "(stage, errno) of the child's failure, (0, 0) once it has exec'd; blocks until one of them happened."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaunchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "app._spawn.Launch",
    .tp_doc = "A started child and the memory it uses until it has exec'd or exited.",
    .tp_basicsize = sizeof(LaunchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)launch_dealloc,
    .tp_methods = launch_methods,
};

PyDoc_STRVAR(start_doc,
"start(path, argv, envp, cwd, uid, gid, rlimits, pdeathsig) -> (pid, stdout_fd, stderr_fd, launch)\n\n"
"Start path with argv and envp (tuples of bytes) in a new session, stdin /dev/null,\n"
"stdout and stderr on new pipes (the read ends are returned, close-on-exec), every\n"
"other descriptor closed; in cwd (bytes or None); as uid/gid with no supplementary\n"
"group but gid (uid -1: keep); with rlimits ((resource, value), ...) as soft and hard\n"
"limits, and pdeathsig (0: none). Returns as soon as the child exists: launch.fileno()\n"
"becomes readable once it has exec'd or failed, and launch.result() then tells which\n"
"((stage, errno), stage 0 for success). A failed child exits with 127; the caller reaps it.");

static PyObject *start(PyObject *self, PyObject *args)
{
    PyObject *path_obj, *argv_obj, *envp_obj, *cwd_obj, *limits_obj, *result = NULL;
    long uid, gid;
    int pdeathsig;
    LaunchObject *launch = NULL;
    struct spawn_args *a;
    int out[2] = {-1, -1}, err[2] = {-1, -1}, status[2] = {-1, -1}, devnull = -1;
    sigset_t all, old_mask;
    pid_t pid;
    Py_ssize_t i;

    if (!PyArg_ParseTuple(args, "O!O!O!OllO!i", &PyBytes_Type, &path_obj, &PyTuple_Type, &argv_obj, &PyTuple_Type,
                          &envp_obj, &cwd_obj, &uid, &gid, &PyTuple_Type, &limits_obj, &pdeathsig))
        return NULL;
    if (PyTuple_GET_SIZE(argv_obj) < 1) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        return NULL;
    }
    if ((Py_ssize_t)strlen(PyBytes_AS_STRING(path_obj)) != PyBytes_GET_SIZE(path_obj)) {
        PyErr_SetString(PyExc_ValueError, "path: embedded NUL");
        return NULL;
    }
    if (cwd_obj != Py_None &&
        !(PyBytes_Check(cwd_obj) && (Py_ssize_t)strlen(PyBytes_AS_STRING(cwd_obj)) == PyBytes_GET_SIZE(cwd_obj))) {
        PyErr_SetString(PyExc_ValueError, "cwd: bytes without NUL or None expected");
        return NULL;
    }
    if (uid >= 0 && gid < 0) {
        PyErr_SetString(PyExc_ValueError, "a uid needs a gid");
        return NULL;
    }
    if (PyTuple_GET_SIZE(limits_obj) > MAX_RLIMITS) {
        PyErr_SetString(PyExc_ValueError, "too many rlimits");
        return NULL;
    }

    launch = PyObject_New(LaunchObject, &LaunchType);
    if (launch == NULL)
        return NULL;
    memset(&launch->a, 0, sizeof launch->a);
    launch->stack = NULL;
    launch->argv = launch->envp = NULL;
    launch->status_fd = -1;
    launch->keep = PyTuple_Pack(4, path_obj, argv_obj, envp_obj, cwd_obj);
    if (launch->keep == NULL)
        goto done;
    a = &launch->a;
    a->path = PyBytes_AS_STRING(path_obj);
    a->cwd = cwd_obj == Py_None ? NULL : PyBytes_AS_STRING(cwd_obj);
    a->uid = uid;
    a->gid = gid;
    a->pdeathsig = pdeathsig;
    a->nlimits = (int)PyTuple_GET_SIZE(limits_obj);
    for (i = 0; i < a->nlimits; i++) {
        int resource;
        unsigned long long value;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(limits_obj, i), "iK", &resource, &value))
            goto done;
        a->limit_resource[i] = resource;
        a->limit_value[i].rlim_cur = a->limit_value[i].rlim_max = (rlim_t)value;
    }
    if ((launch->argv = bytes_array(argv_obj, "argv")) == NULL ||
        (launch->envp = bytes_array(envp_obj, "envp")) == NULL)
        goto done;
    a->argv = launch->argv;
    a->envp = launch->envp;
    a->parent_pid = getpid();

    launch->stack = PyMem_Malloc(CHILD_STACK_SIZE);
    if (launch->stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0 || (devnull = above_stdio(devnull)) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
        (out[0] = above_stdio(out[0])) < 0 || (out[1] = above_stdio(out[1])) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        (err[0] = above_stdio(err[0])) < 0 || (err[1] = above_stdio(err[1])) < 0 || pipe2(status, O_CLOEXEC) < 0 ||
        (status[0] = above_stdio(status[0])) < 0 || (status[1] = above_stdio(status[1])) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    a->fds[0] = devnull;
    a->fds[1] = out[1];
    a->fds[2] = err[1];
    a->status_fd = status[1];

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old_mask);
    a->old_mask = old_mask;
    pid = clone(child_main, launch->stack + CHILD_STACK_SIZE, CLONE_FLAGS, a);
    {
        int clone_errno = errno;
        pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
        errno = clone_errno;
    }
    if (pid < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    /* From here on the child may be using launch: only launch_release frees it. */
    launch->status_fd = status[0];
    status[0] = -1;
    result = Py_BuildValue("(iiiO)", (int)pid, out[0], err[0], (PyObject *)launch);
    if (result != NULL)
        out[0] = err[0] = -1;  /* owned by the caller now */

done:
    if (devnull >= 0)
        close(devnull);
    for (i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (status[i] >= 0)
            close(status[i]);
    }
    Py_DECREF(launch);  /* waits for the child if the result could not be built */
    return result;
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS, start_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "app._spawn", "Spawn contained commands with clone(CLONE_VM), without waiting for the exec.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spawn(void)
{
    PyObject *m;
    if (PyType_Ready(&LaunchType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "CONCURRENT_CHILD", CONCURRENT_CHILD) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_FDS", STAGE_FDS) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_CHDIR", STAGE_CHDIR) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_SETSID", STAGE_SETSID) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_CREDENTIALS", STAGE_CREDENTIALS) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_RLIMIT", STAGE_RLIMIT) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_PDEATHSIG", STAGE_PDEATHSIG) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_EXEC", STAGE_EXEC) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
