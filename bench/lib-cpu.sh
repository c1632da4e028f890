# shellcheck shell=bash
# lib-cpu.sh -- sourced by bench scripts that report the CPU each party spends.
#
# cpu_ticks PID... -> the sum of the processes' user + system time and that of their waited-for
# children, in clock ticks (getconf CLK_TCK a second). A PostgreSQL backend that exits is
# counted in the postmaster's children's times, so the sum over a cluster's processes taken
# before and after a run counts the run's connections whole. A PID that is gone counts 0.
cpu_ticks() {
    local t=0 p
    for p in "$@"; do
        t=$(( t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
    done
    echo "$t"
}
