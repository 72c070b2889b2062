#!/usr/bin/env bash
# Benchmark: the daemon with N emulated Cloud SQL instances (default 1000).
#
#   bash docs/bench.sh [INSTANCES] [IDLE_SECONDS]
#
# Runs the emulator in its own process (dbcert-agent dev -emulator-only) so that only
# the agent is measured, then `dbcert-agent run` on the generated config. Reports, from
# /proc/PID of the agent: peak RSS (VmHWM) and CPU seconds (utime+stime) for the first
# round (until every instance has valid files) and for IDLE_SECONDS idle afterwards
# (default 600 = ten minutes; certificates live 1 h, so nothing is due while idle), plus
# the number of context switches while idle as a proxy for wake-ups.
#
# For the comparison with the Cloud SQL Auth Proxy and the run under an emulated API
# quota, see docs/bench (go run ./docs/bench -h) and README's Performance section.
set -euo pipefail
n=${1:-1000}
idle=${2:-600}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill $emu_pid $agent_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# As packaged (packaging/build.sh): static, without symbol tables.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/dbcert-agent" .
bin="$work/dbcert-agent"

"$bin" dev -emulator-only -instances "$n" -cert-lifetime 1h -dir "$work/dev" >"$work/emu.log" 2>&1 &
emu_pid=$!
for _ in $(seq 100); do [ -f "$work/dev/agent.hcl" ] && break; sleep 0.1; done
sed -i 's/^credentials/agent {\n  log_level = "warn"\n}\n\ncredentials/' "$work/dev/agent.hcl"

clk=$(getconf CLK_TCK)
cpu() { awk -v c="$clk" '{printf "%.2f", ($14+$15)/c}' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/ {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }
ctxsw() { awk '/ctxt_switches/ {s+=$2} END {print s}' "/proc/$1/status"; }

start=$(date +%s.%N)
${AGENT_ENV:-} "$bin" run -config "$work/dev/agent.hcl" >"$work/agent.log" 2>&1 &
agent_pid=$!
# First round: wait until every instance has a key file.
while [ "$(find "$work/dev/out" -maxdepth 2 \( -name key.pem -o -name postgresql.key \) 2>/dev/null | wc -l)" -lt "$n" ]; do
  kill -0 $agent_pid || { cat "$work/agent.log"; exit 1; }
  sleep 0.2
done
end=$(date +%s.%N)
echo "instances:               $n"
echo "first round wall time:   $(echo "$end - $start" | bc) s"
echo "first round CPU:         $(cpu $agent_pid) s"
echo "peak RSS after round 1:  $(hwm $agent_pid)"
cpu1=$(cpu $agent_pid); sw1=$(ctxsw $agent_pid)
sleep "$idle"
echo "idle period:             $idle s"
echo "idle CPU:                $(echo "$(cpu $agent_pid) - $cpu1" | bc) s"
echo "idle context switches:   $(( $(ctxsw $agent_pid) - sw1 ))"
echo "peak RSS overall:        $(hwm $agent_pid)"
echo "current RSS:             $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$agent_pid/status)"
