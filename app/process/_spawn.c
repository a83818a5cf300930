/* Python binding of app/spawner.c: spawning a contained command without forking the worker.
 *
 * gevent.subprocess forks the whole worker (and a preexec_fn forces that even in the standard
 * library), then runs Python in the child. Here a spawner thread clones the child with CLONE_VM |
 * CLONE_VFORK, as glibc's posix_spawn does, and the child prepares itself with system calls only
 * (see spawner.c). start() returns at once: the worker's event loop waits for the launch's status
 * pipe, and serves everyone else meanwhile.
 */

#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "spawner.h"

/* A file descriptor at 3 or above (close-on-exec), closing the original if it moved. */
static int above_stdio(int fd)
{
    int moved;
    if (fd < 0 || fd >= 3)
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

static int text_without_nul(PyObject *obj)
{
    return PyBytes_Check(obj) && (Py_ssize_t)strlen(PyBytes_AS_STRING(obj)) == PyBytes_GET_SIZE(obj);
}

typedef struct {
    PyObject_HEAD
    struct spawn_launch *launch;
    int done_fd; /* the status pipe's read end: end-of-file once the launch is finished */
} LaunchObject;

static void launch_dealloc(LaunchObject *self)
{
    if (self->done_fd >= 0)
        close(self->done_fd);
    if (self->launch)
        spawn_launch_release(self->launch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *launch_fileno(LaunchObject *self, PyObject *unused)
{
    if (self->done_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the launch's status pipe is closed");
        return NULL;
    }
    return PyLong_FromLong(self->done_fd);
}

static PyObject *launch_close(LaunchObject *self, PyObject *unused)
{
    if (self->done_fd >= 0)
        close(self->done_fd);
    self->done_fd = -1;
    Py_RETURN_NONE;
}

static PyObject *launch_finished(LaunchObject *self, PyObject *unused)
{
    return PyBool_FromLong(spawn_launch_finished(self->launch));
}

static PyObject *launch_result(LaunchObject *self, PyObject *unused)
{
    pid_t pid;
    int stage, error;
    if (!spawn_launch_finished(self->launch)) {
        PyErr_SetString(PyExc_RuntimeError, "the launch is not finished");
        return NULL;
    }
    spawn_launch_result(self->launch, &pid, &stage, &error);
    return Py_BuildValue("(iii)", (int)pid, stage, error);
}

static PyObject *launch_stage(LaunchObject *self, PyObject *unused)
{
    return PyLong_FromLong(spawn_launch_stage(self->launch));
}

static PyObject *launch_child_pid(LaunchObject *self, PyObject *unused)
{
    return PyLong_FromLong((long)spawn_launch_child_pid(self->launch));
}

static PyObject *launch_take_pidfd(LaunchObject *self, PyObject *unused)
{
    return PyLong_FromLong(spawn_launch_take_pidfd(self->launch));
}

static PyObject *launch_kill(LaunchObject *self, PyObject *args)
{
    int sig, sent;
    if (!PyArg_ParseTuple(args, "i", &sig))
        return NULL;
    sent = spawn_launch_kill(self->launch, sig);
    if (sent < 0) {
        errno = -sent;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBool_FromLong(sent);
}

static PyMethodDef launch_methods[] = {
    {"fileno", (PyCFunction)launch_fileno, METH_NOARGS, "The status pipe: end-of-file once the launch is finished."},
    {"close", (PyCFunction)launch_close, METH_NOARGS, "Close the status pipe."},
    {"finished", (PyCFunction)launch_finished, METH_NOARGS,
     "True once the child has exec'd or exited (or was never cloned)."},
    {"result", (PyCFunction)launch_result, METH_NOARGS,
     "(pid, stage, errno) once finished: pid -1 if no child was cloned (errno says why); stage STAGE_EXEC and "
     "errno 0 once it has exec'd; otherwise where it failed, or where it was when it was killed (errno 0)."},
    {"stage", (PyCFunction)launch_stage, METH_NOARGS, "How far the child has got."},
    {"child_pid", (PyCFunction)launch_child_pid, METH_NOARGS, "The child's pid once it has run, else 0."},
    {"take_pidfd", (PyCFunction)launch_take_pidfd, METH_NOARGS,
     "Once finished: the child's pidfd, now the caller's to close (-1 if none)."},
    {"kill", (PyCFunction)launch_kill, METH_VARARGS,
     "kill(signal) -> bool: signal the child through its pidfd (True), or, if it is not cloned yet, make sure "
     "it never runs its command (False)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaunchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "app.process._spawn.Launch",
    .tp_doc = "A child being started by a spawner thread.",
    .tp_basicsize = sizeof(LaunchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)launch_dealloc,
    .tp_methods = launch_methods,
};

PyDoc_STRVAR(start_doc,
"start(path, argv, envp, cwd, uid, gid, rlimits, pdeathsig, umask, no_new_privs, cgroup_procs,\n"
"      merge_stderr, stdin_pipe) -> (stdout_fd, stderr_fd, stdin_fd, launch)\n\n"
"Start path with argv and envp (tuples of bytes): in the cgroup whose cgroup.procs is open as\n"
"cgroup_procs (-1: none), with stdin /dev/null (with stdin_pipe, a new pipe whose write end is\n"
"returned as stdin_fd, close-on-exec; else stdin_fd is -1), stdout and stderr on new pipes (the\n"
"read ends are returned, close-on-exec; with merge_stderr, both on one pipe and stderr_fd is -1), every other descriptor closed, default signal dispositions, the umask\n"
"(-1: keep), in cwd (bytes or None), in a new session, as uid/gid with no supplementary group but\n"
"gid (uid -1: keep), with rlimits ((resource, value), ...) as soft and hard limits, no_new_privs,\n"
"pdeathsig (0: none) and the caller's signal mask. Returns at once; launch.fileno() reads\n"
"end-of-file once the child has exec'd or failed, and launch.result() tells which.\n"
"A failed child exits with 127. It sends no SIGCHLD unless it has exec'd: reap it through its pidfd\n"
"with __WALL.");

static PyObject *start(PyObject *self, PyObject *args)
{
    PyObject *path_obj, *argv_obj, *envp_obj, *cwd_obj, *limits_obj, *result = NULL;
    struct spawn_request req;
    struct spawn_launch *launch = NULL;
    LaunchObject *obj = NULL;
    char **argv = NULL, **envp = NULL;
    int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, child_stdin = -1, cgroup_procs, merge_stderr, stdin_pipe;
    int done_fd = -1, error = 0;
    Py_ssize_t i;

    memset(&req, 0, sizeof req);
    if (!PyArg_ParseTuple(args, "O!O!O!OllO!iipipp", &PyBytes_Type, &path_obj, &PyTuple_Type, &argv_obj, &PyTuple_Type,
                          &envp_obj, &cwd_obj, &req.uid, &req.gid, &PyTuple_Type, &limits_obj, &req.pdeathsig,
                          &req.umask_value, &req.no_new_privs, &cgroup_procs, &merge_stderr, &stdin_pipe))
        return NULL;
    if (PyTuple_GET_SIZE(argv_obj) < 1) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        return NULL;
    }
    if (!text_without_nul(path_obj)) {
        PyErr_SetString(PyExc_ValueError, "path: embedded NUL");
        return NULL;
    }
    if (cwd_obj != Py_None && !text_without_nul(cwd_obj)) {
        PyErr_SetString(PyExc_ValueError, "cwd: bytes without NUL or None expected");
        return NULL;
    }
    if (req.uid >= 0 && req.gid < 0) {
        PyErr_SetString(PyExc_ValueError, "a uid needs a gid");
        return NULL;
    }
    if (req.umask_value > 0777) {
        PyErr_SetString(PyExc_ValueError, "umask: 0 to 0o777, or -1");
        return NULL;
    }
    if (PyTuple_GET_SIZE(limits_obj) > SPAWNER_MAX_RLIMITS) {
        PyErr_SetString(PyExc_ValueError, "too many rlimits");
        return NULL;
    }
    req.nlimits = (int)PyTuple_GET_SIZE(limits_obj);
    for (i = 0; i < req.nlimits; i++) {
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(limits_obj, i), "iK", &req.limit_resource[i], &req.limit_value[i]))
            return NULL;
    }
    if ((argv = bytes_array(argv_obj, "argv")) == NULL || (envp = bytes_array(envp_obj, "envp")) == NULL)
        goto done;
    req.path = PyBytes_AS_STRING(path_obj);
    req.cwd = cwd_obj == Py_None ? NULL : PyBytes_AS_STRING(cwd_obj);
    req.argv = argv;
    req.envp = envp;
    pthread_sigmask(SIG_BLOCK, NULL, &req.child_mask);

    obj = PyObject_New(LaunchObject, &LaunchType);
    if (obj == NULL)
        goto done;
    obj->launch = NULL;
    obj->done_fd = -1;

    /* The child's descriptors, at 3 or above so that its dup3 onto 0-2 cannot clobber one. */
    if (cgroup_procs >= 0 && (cgroup_procs = fcntl(cgroup_procs, F_DUPFD_CLOEXEC, 3)) < 0)
        goto os_error;
    if (stdin_pipe) {
        /* The child's stdin is the read end; the write end stays with the caller (close-on-exec, so no
         * other child inherits it, and this one gets end-of-file once the caller closes it). */
        if (pipe2(in, O_CLOEXEC) < 0 || (in[0] = above_stdio(in[0])) < 0 || (in[1] = above_stdio(in[1])) < 0)
            goto os_error;
        child_stdin = in[0];
        in[0] = -1;
    } else {
        child_stdin = open("/dev/null", O_RDWR | O_CLOEXEC);
    }
    if (child_stdin < 0 || (child_stdin = above_stdio(child_stdin)) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
        (out[0] = above_stdio(out[0])) < 0 || (out[1] = above_stdio(out[1])) < 0)
        goto os_error;
    if (merge_stderr) {
        /* One pipe for both, so the child's writes keep their order. A descriptor of its own (the
         * launch closes each of its stdio descriptors once). */
        if ((err[1] = fcntl(out[1], F_DUPFD_CLOEXEC, 3)) < 0)
            goto os_error;
    } else if (pipe2(err, O_CLOEXEC) < 0 || (err[0] = above_stdio(err[0])) < 0 ||
               (err[1] = above_stdio(err[1])) < 0) {
        goto os_error;
    }
    req.stdio[0] = child_stdin;
    req.stdio[1] = out[1];
    req.stdio[2] = err[1];
    req.cgroup_procs = cgroup_procs;
    child_stdin = out[1] = err[1] = cgroup_procs = -1; /* the launch's now, whatever happens */
    launch = spawn_launch_new(&req, &done_fd, &error);
    if (launch == NULL)
        goto launch_error;
    obj->launch = launch;
    if ((done_fd = above_stdio(done_fd)) < 0)
        goto os_error;
    obj->done_fd = done_fd;
    if ((error = spawn_launch_submit(launch)) != 0)
        goto launch_error;
    /* err[0] is -1 when merged, in[1] without a stdin pipe */
    result = Py_BuildValue("(iiiO)", out[0], err[0], in[1], (PyObject *)obj);
    if (result != NULL)
        out[0] = err[0] = in[1] = -1; /* the caller's now */
    goto done;

os_error:
    PyErr_SetFromErrno(PyExc_OSError);
    goto done;
launch_error:
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
done:
    if (cgroup_procs >= 0)
        close(cgroup_procs);
    if (child_stdin >= 0)
        close(child_stdin);
    for (i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (in[i] >= 0)
            close(in[i]);
    }
    Py_XDECREF(obj);
    PyMem_Free(argv);
    PyMem_Free(envp);
    return result;
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS, start_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "app.process._spawn",
    "Spawn contained commands with clone(CLONE_VM | CLONE_VFORK) from spawner threads.", -1, methods,
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
    if (PyModule_AddIntConstant(m, "STAGE_NONE", STAGE_NONE) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_FDS", STAGE_FDS) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_CGROUP", STAGE_CGROUP) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_CHDIR", STAGE_CHDIR) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_SETSID", STAGE_SETSID) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_CREDENTIALS", STAGE_CREDENTIALS) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_RLIMIT", STAGE_RLIMIT) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_NO_NEW_PRIVS", STAGE_NO_NEW_PRIVS) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_PDEATHSIG", STAGE_PDEATHSIG) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_EXEC", STAGE_EXEC) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_CANCELLED", STAGE_CANCELLED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
