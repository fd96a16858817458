#!/usr/bin/env bash
# A single-node SLURM (munge, slurmctld, slurmd) on this machine, for the `slurm` tests and for
# trying the sbatch scripts without a real cluster. Needs root and Debian/Ubuntu packages.
#
#   scripts/slurm/local_cluster.sh start    install what is missing, start, wait until the node is idle
#   scripts/slurm/local_cluster.sh status   what runs, and sinfo
#   scripts/slurm/local_cluster.sh stop     stop only the daemons this script started (pid files)
#
# Works without systemd or cgroups: linuxproc process tracking, no task plugin, no accounting.
# State, spool, logs and pid files live in $BIGTRAIN_SLURM_DIR (default: a folder under $TMPDIR).
set -euo pipefail

STATE=${BIGTRAIN_SLURM_DIR:-${TMPDIR:-/tmp}/bigtrain-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by bigtrain scripts/slurm/local_cluster.sh"
HOST=$(hostname -s)

log() { echo "local_cluster: $*"; }
die() { echo "local_cluster: error: $*" >&2; exit 1; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }  # a daemon may remove its pid file as it exits

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq $((limit * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up in ${limit}s (logs in $STATE)"
}

install_missing() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: not touching a real cluster's config"
    fi
    # The node's CPU layout as slurmd sees it, with a small RealMemory so that a busy machine
    # never drains the node for having less free memory than declared.
    local layout
    layout=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/RealMemory=[0-9]+/RealMemory=1000/')
    mkdir -p /etc/slurm "$STATE"/{ctld,spool}
    cat >"$CONF" <<CONF
$MARK
ClusterName=bigtrain-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Short waits: a job that is cancelled or requeued gets SIGKILL 5 s after SIGTERM (default 30).
KillWait=5
InactiveLimit=0
MinJobAge=300
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 $layout State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    if alive /run/munge/munged.pid; then return 0; fi
    [[ -f /etc/munge/munge.key ]] || mungekey --create
    mkdir -p /run/munge
    chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged test -S /run/munge/munge.socket.2
    touch "$STATE/started-munge"
}

start() {
    [[ $(id -u) -eq 0 ]] || die "needs root (it installs packages and starts daemons)"
    if sinfo -h >/dev/null 2>&1 && ! [[ -f $STATE/slurmctld.pid ]]; then
        log "a SLURM controller already answers; nothing started"
        return 0
    fi
    install_missing
    getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
    mkdir -p "$STATE"
    write_conf
    start_munge
    if ! alive "$STATE/slurmctld.pid"; then
        slurmctld -i  # -i: ignore state from an earlier run of this script
        wait_for 20 slurmctld sh -c 'scontrol ping | grep -q UP'
    fi
    if ! alive "$STATE/slurmd.pid"; then
        slurmd
    fi
    wait_for 30 "node $HOST" sh -c "sinfo -h -n $HOST -o %t | grep -Eq '^(idle|mix|alloc)'"
    log "up: $(sinfo -h -o '%P %D %t %c CPUs')"
}

stop_pid() {  # stop_pid NAME PIDFILE
    if alive "$2"; then
        kill "$(cat "$2")"
        for _ in $(seq 40); do alive "$2" || break; sleep 0.25; done
        alive "$2" && kill -9 "$(cat "$2")"
        log "stopped $1"
    fi
    rm -f "$2"
}

stop() {
    [[ -d $STATE ]] || { log "nothing to stop"; return 0; }
    # Jobs first, so their processes (children of slurmd) end cleanly.
    if alive "$STATE/slurmctld.pid"; then scancel --quiet --user="$(id -un)" 2>/dev/null || true; sleep 1; fi
    stop_pid slurmd "$STATE/slurmd.pid"
    stop_pid slurmctld "$STATE/slurmctld.pid"
    if [[ -f $STATE/started-munge ]]; then
        stop_pid munged /run/munge/munged.pid
        rm -f "$STATE/started-munge"
    fi
    if [[ -f $CONF ]] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
}

status() {
    for d in slurmctld slurmd; do
        if alive "$STATE/$d.pid"; then echo "$d: running (pid $(cat "$STATE/$d.pid"))"; else echo "$d: stopped"; fi
    done
    if alive /run/munge/munged.pid; then echo "munged: running"; else echo "munged: stopped"; fi
    sinfo 2>/dev/null || echo "sinfo: no controller answers"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
