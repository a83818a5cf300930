/* Launching contained commands with vfork semantics from dedicated threads: no Python here.
 *
 * app/_spawn.c is the Python binding; this part builds by itself, so that it can be compiled for
 * every architecture with a cross compiler alone (tests/test_cross_compile.py).
 */
#ifndef SSECMD_SPAWNER_H
#define SSECMD_SPAWNER_H

#include <signal.h>
#include <sys/types.h>

#define SPAWNER_MAX_RLIMITS 16

/* Where a child is in its preparation: its progress while it runs, and the step a failure happened at. */
enum spawn_stage {
    STAGE_NONE = 0,      /* the child has not run yet */
    STAGE_FDS = 1,       /* standard streams, other descriptors closed */
    STAGE_CGROUP = 2,    /* joining the job's cgroup */
    STAGE_CHDIR = 3,     /* entering the working directory */
    STAGE_SETSID = 4,    /* a session of its own */
    STAGE_CREDENTIALS = 5,
    STAGE_RLIMIT = 6,
    STAGE_NO_NEW_PRIVS = 7,
    STAGE_PDEATHSIG = 8,
    STAGE_EXEC = 9,
    STAGE_CANCELLED = 10, /* stopped before the child could run its command */
};

/* What the child gets. Pointers are read only while spawn_launch_new copies them. */
struct spawn_request {
    const char *path;
    char *const *argv;  /* NULL-terminated */
    char *const *envp;  /* NULL-terminated */
    const char *cwd;    /* NULL: stay */
    int stdio[3];       /* become 0, 1, 2; at 3 or above; owned by the launch from spawn_launch_new on */
    int cgroup_procs;   /* a cgroup's cgroup.procs opened for writing, -1: none; owned likewise */
    long uid, gid;      /* -1: keep */
    int nlimits;
    int limit_resource[SPAWNER_MAX_RLIMITS];
    unsigned long long limit_value[SPAWNER_MAX_RLIMITS]; /* soft and hard */
    int pdeathsig;      /* 0: none */
    int umask_value;    /* -1: keep */
    int no_new_privs;
    sigset_t child_mask; /* the signal mask the command starts with */
};

struct spawn_launch;

/* A launch holding copies of the request, or NULL with *error set. The stdio and cgroup descriptors
 * belong to it from now on, even when this fails. *done_fd is the read end of its status pipe:
 * readable (end-of-file) once spawn_launch_finished is true. */
struct spawn_launch *spawn_launch_new(const struct spawn_request *request, int *done_fd, int *error);

/* Hand the launch to a spawner thread; 0 or an errno. */
int spawn_launch_submit(struct spawn_launch *launch);

/* Signal the child being launched. Returns 1 if sent, 0 if the child was not cloned yet (it never
 * runs its command then), or -errno. Either way the launch is marked stopped. */
int spawn_launch_kill(struct spawn_launch *launch, int sig);

int spawn_launch_finished(const struct spawn_launch *launch);

/* Once finished: the child's pid (-1 if none was cloned), how far it got, and its failure (errno or
 * 0). A child that has exec'd is at STAGE_EXEC with no error. */
void spawn_launch_result(const struct spawn_launch *launch, pid_t *pid, int *stage, int *error);

/* How far the child has got (while it runs, or once finished). */
int spawn_launch_stage(const struct spawn_launch *launch);

/* The child's pid as soon as it has run (0 before): what libev's SIGCHLD reaping reports it as. */
pid_t spawn_launch_child_pid(const struct spawn_launch *launch);

/* Once finished: the pidfd of the child, for the caller to keep and close (-1 if none or taken). */
int spawn_launch_take_pidfd(struct spawn_launch *launch);

/* Drop the caller's reference. A spawner thread keeps its own until it is done with the launch. */
void spawn_launch_release(struct spawn_launch *launch);

#endif
