/* Spawning a contained command without forking the worker.
 *
 * gevent.subprocess forks the whole worker (and a preexec_fn forces that
 * even in the standard library), then runs Python in the child: the fork
 * copies the page tables of a large process and every page the worker
 * writes afterwards faults until the child has exec'd. Here the child
 * shares the worker's memory (clone with CLONE_VM | CLONE_VFORK, as glibc's
 * posix_spawn does), runs on a stack of its own, makes raw system calls
 * only, and the worker resumes as soon as the child has exec'd or failed.
 *
 * Everything the child needs is prepared before the clone, in the parent.
 * In the child: no malloc, no locks, no Python; glibc's setxid wrappers are
 * avoided (in a threaded process they signal every thread of the parent),
 * the credentials are set with raw syscalls. Signals are blocked in the
 * parent around the clone so that no handler of the worker ever runs in the
 * child; the child resets every disposition to the default and restores the
 * worker's signal mask just before execve.
 *
 * A failure in the child is written into memory shared with the parent
 * (the stage and errno), then the child exits with 127 and is reaped here.
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
    long uid, gid;    /* -1: keep */
    int nlimits;
    int limit_resource[MAX_RLIMITS];
    struct rlimit limit_value[MAX_RLIMITS];
    int pdeathsig;    /* 0: none */
    pid_t parent_pid;
    long max_fd;      /* for the close loop if close_range is missing */
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

static int raw(long result) { return result < 0 ? errno : 0; }

__attribute__((noreturn)) static void child_fail(struct spawn_args *a, int stage, int error)
{
    a->stage = stage;
    a->error = error ? error : EINVAL;
    syscall(SYS_exit_group, 127);
    for (;;) {}
}

static int child_main(void *arg)
{
    struct spawn_args *a = arg;
    int i, err;

    /* Default dispositions: the worker's handlers must never run here, and
     * nothing it ignores (SIGPIPE above all) is inherited by the command.
     * The raw system call, because glibc's sigaction refuses its reserved
     * signals 32 and 33, and those can arrive ignored (GNU make ignores them
     * in what it runs, and an ignored signal survives execve). */
    for (i = 1; i < _NSIG; i++) {
        struct kernel_sigaction sa = {0};  /* SIG_DFL, no flags, empty mask */
        if (i == SIGKILL || i == SIGSTOP)
            continue;
        syscall(SYS_rt_sigaction, i, &sa, NULL, sizeof sa.mask);
    }

    /* The pipe ends and /dev/null are at 3 or above (ensured by the parent). */
    for (i = 0; i < 3; i++) {
        if ((err = raw(syscall(SYS_dup2, a->fds[i], i))))
            child_fail(a, STAGE_FDS, err);
    }
    if (syscall(SYS_close_range, 3, ~0U, 0) < 0) {
        long fd;
        for (fd = 3; fd < a->max_fd; fd++)
            syscall(SYS_close, fd);
    }

    if (a->cwd && (err = raw(syscall(SYS_chdir, a->cwd))))
        child_fail(a, STAGE_CHDIR, err);
    if ((err = raw(syscall(SYS_setsid))))
        child_fail(a, STAGE_SETSID, err);

    if (a->uid >= 0) {
        gid_t groups[1] = {(gid_t)a->gid};
        /* Root's supplementary groups are dropped along with root itself. */
        if ((err = raw(syscall(SYS_setgroups, 1, groups))))
            child_fail(a, STAGE_CREDENTIALS, err);
        if ((err = raw(syscall(SYS_setresgid, (gid_t)a->gid, (gid_t)a->gid, (gid_t)a->gid))))
            child_fail(a, STAGE_CREDENTIALS, err);
        if ((err = raw(syscall(SYS_setresuid, (uid_t)a->uid, (uid_t)a->uid, (uid_t)a->uid))))
            child_fail(a, STAGE_CREDENTIALS, err);
    }

    /* After the switch of user: an unprivileged process can only lower them,
     * and setting the user clears the death signal. */
    for (i = 0; i < a->nlimits; i++) {
        if ((err = raw(syscall(SYS_prlimit64, 0, a->limit_resource[i], &a->limit_value[i], NULL))))
            child_fail(a, STAGE_RLIMIT, err);
    }
    if (a->pdeathsig) {
        if ((err = raw(syscall(SYS_prctl, PR_SET_PDEATHSIG, a->pdeathsig, 0, 0, 0))))
            child_fail(a, STAGE_PDEATHSIG, err);
        /* The worker died before the death signal was armed. */
        if (syscall(SYS_getppid) != a->parent_pid)
            syscall(SYS_exit_group, 127);
    }

    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &a->old_mask, NULL, _NSIG / 8);
    syscall(SYS_execve, a->path, a->argv, a->envp);
    child_fail(a, STAGE_EXEC, errno);
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

/* A NULL-terminated array of the bytes objects of a sequence (borrowed pointers). */
static char **bytes_array(PyObject *seq, const char *what)
{
    Py_ssize_t i, n;
    char **out;
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(fast);
    out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyBytes_Check(item) || (Py_ssize_t)strlen(PyBytes_AS_STRING(item)) != PyBytes_GET_SIZE(item)) {
            PyErr_Format(PyExc_ValueError, "%s: bytes without NUL expected", what);
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    /* The items stay alive as long as the caller's sequence: fast is seq itself for lists and tuples. */
    Py_DECREF(fast);
    return out;
}

PyDoc_STRVAR(spawn_doc,
"spawn(path, argv, envp, cwd, uid, gid, rlimits, pdeathsig) -> (pid, stdout_fd, stderr_fd, stage, errno)\n\n"
"Start path with argv and envp (tuples of bytes) in a new session, stdin /dev/null,\n"
"stdout and stderr on new pipes (the read ends are returned, close-on-exec), every\n"
"other descriptor closed; in cwd (bytes or None); as uid/gid with no supplementary\n"
"group but gid (uid -1: keep); with rlimits ((resource, value), ...) as soft and hard\n"
"limits, and pdeathsig (0: none). On a failure in the child, stage is non-zero, the\n"
"child has been reaped, pid is 0 and the fds are -1.");

static PyObject *spawn(PyObject *self, PyObject *args)
{
    PyObject *path_obj, *argv_obj, *envp_obj, *cwd_obj, *limits_obj, *result = NULL;
    long uid, gid;
    int pdeathsig;
    struct spawn_args a;
    char **argv = NULL, **envp = NULL;
    int out[2] = {-1, -1}, err[2] = {-1, -1}, devnull = -1;
    char *stack = NULL;
    sigset_t all;
    pid_t pid;
    Py_ssize_t i;

    if (!PyArg_ParseTuple(args, "O!OOOllOi", &PyBytes_Type, &path_obj, &argv_obj, &envp_obj, &cwd_obj, &uid, &gid,
                          &limits_obj, &pdeathsig))
        return NULL;
    if (!PyTuple_Check(argv_obj) || !PyTuple_Check(envp_obj) || !PyTuple_Check(limits_obj)) {
        PyErr_SetString(PyExc_TypeError, "argv, envp and rlimits must be tuples");
        return NULL;
    }
    if (PyTuple_GET_SIZE(argv_obj) < 1) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        return NULL;
    }
    memset(&a, 0, sizeof a);
    a.path = PyBytes_AS_STRING(path_obj);
    if ((Py_ssize_t)strlen(a.path) != PyBytes_GET_SIZE(path_obj)) {
        PyErr_SetString(PyExc_ValueError, "path: embedded NUL");
        return NULL;
    }
    if (cwd_obj == Py_None) {
        a.cwd = NULL;
    } else if (PyBytes_Check(cwd_obj) && (Py_ssize_t)strlen(PyBytes_AS_STRING(cwd_obj)) == PyBytes_GET_SIZE(cwd_obj)) {
        a.cwd = PyBytes_AS_STRING(cwd_obj);
    } else {
        PyErr_SetString(PyExc_ValueError, "cwd: bytes without NUL or None expected");
        return NULL;
    }
    a.uid = uid;
    a.gid = gid;
    if (uid >= 0 && gid < 0) {
        PyErr_SetString(PyExc_ValueError, "a uid needs a gid");
        return NULL;
    }
    a.pdeathsig = pdeathsig;
    if (PyTuple_GET_SIZE(limits_obj) > MAX_RLIMITS) {
        PyErr_SetString(PyExc_ValueError, "too many rlimits");
        return NULL;
    }
    a.nlimits = (int)PyTuple_GET_SIZE(limits_obj);
    for (i = 0; i < a.nlimits; i++) {
        int resource;
        unsigned long long value;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(limits_obj, i), "iK", &resource, &value))
            return NULL;
        a.limit_resource[i] = resource;
        a.limit_value[i].rlim_cur = a.limit_value[i].rlim_max = (rlim_t)value;
    }
    if ((argv = bytes_array(argv_obj, "argv")) == NULL || (envp = bytes_array(envp_obj, "envp")) == NULL)
        goto done;
    a.argv = argv;
    a.envp = envp;
    a.parent_pid = getpid();
    a.max_fd = sysconf(_SC_OPEN_MAX);
    if (a.max_fd < 0 || a.max_fd > 1 << 20)
        a.max_fd = 1 << 20;

    stack = PyMem_Malloc(CHILD_STACK_SIZE);
    if (stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0 || (devnull = above_stdio(devnull)) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
        (out[0] = above_stdio(out[0])) < 0 || (out[1] = above_stdio(out[1])) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        (err[0] = above_stdio(err[0])) < 0 || (err[1] = above_stdio(err[1])) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    a.fds[0] = devnull;
    a.fds[1] = out[1];
    a.fds[2] = err[1];

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &a.old_mask);
    /* The parent is suspended until the child has exec'd or exited. */
    pid = clone(child_main, stack + CHILD_STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    {
        int clone_errno = errno;
        pthread_sigmask(SIG_SETMASK, &a.old_mask, NULL);
        errno = clone_errno;
    }
    if (pid < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    if (a.stage != STAGE_NONE) {
        int status;
        /* The child has exited (or is about to); a SIGCHLD handler may have reaped it already. */
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        result = Py_BuildValue("(iiiii)", 0, -1, -1, a.stage, a.error);
        goto done;
    }
    result = Py_BuildValue("(iiiii)", (int)pid, out[0], err[0], 0, 0);
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
    }
    PyMem_Free(stack);
    PyMem_Free(argv);
    PyMem_Free(envp);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "app._spawn", "Spawn contained commands with clone(CLONE_VM | CLONE_VFORK).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spawn(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STAGE_FDS", STAGE_FDS) < 0 ||
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
