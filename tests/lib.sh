# SPDX-License-Identifier: GPL-2.0
# TAP helpers for shell tests: each case prints "ok N name" or "not ok N name".
# Source this file, call ktap_plan COUNT? no: cases are counted as they run.

_t_n=0
_t_fail=0

t_pass()
{
	_t_n=$((_t_n + 1))
	echo "ok $_t_n $*"
}

t_fail()
{
	_t_n=$((_t_n + 1))
	_t_fail=$((_t_fail + 1))
	echo "not ok $_t_n $*"
}

t_skip()
{
	_t_n=$((_t_n + 1))
	echo "ok $_t_n $* # SKIP"
}

# t_check NAME CMD...: run CMD, pass if it exits 0.
t_check()
{
	local name=$1
	shift
	if "$@"; then t_pass "$name"; else t_fail "$name"; fi
}

t_done()
{
	echo "1..$_t_n"
	[ "$_t_fail" -eq 0 ]
}
