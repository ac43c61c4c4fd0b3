# SPDX-License-Identifier: GPL-2.0
#
# Helpers for popupd's shell tests (sourced, not run): where the binaries
# are, starting a popupd on free ports and waiting for it, stopping it.
#
# Binaries: $POPUP_BIN if set; else the bin/ next to the tests directory
# tests/run.sh was given (exported as POPUP_TEST_DIR), so the ASan/UBSan
# run uses build/san/bin; else $POPUP_BUILD/bin.

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

top=${POPUP_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
if [ -z "${POPUP_BIN:-}" ]; then
	if [ -n "${POPUP_TEST_DIR:-}" ] && [ -x "$POPUP_TEST_DIR/../bin/popupd" ]; then
		POPUP_BIN=$(cd "$POPUP_TEST_DIR/../bin" && pwd)
	else
		POPUP_BIN=${POPUP_BUILD:-$top/build}/bin
	fi
fi
popupd=$POPUP_BIN/popupd
popupctl=$POPUP_BIN/popupctl
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

T=$(mktemp -d /tmp/popupd-test.XXXXXX)
PD_PID= NP= HP=
pin_dir=/sys/fs/bpf/popup-test-$$

pd_cleanup()
{
	[ -n "$PD_PID" ] && kill -KILL "$PD_PID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$T" "$pin_dir"*
}
trap pd_cleanup EXIT

# pd_start [popupd args...]: start on free ports; sets PD_PID, NP, HP.
# Logs go to $T/popupd.log. Returns non-zero if it did not come up in 5 s.
pd_start()
{
	rm -f "$T/ports"
	"$popupd" -p 0 --http-port 0 --port-file "$T/ports" --stats "$T/stats" \
		--pin-dir "$pin_dir" "$@" >>"$T/popupd.log" 2>&1 &
	PD_PID=$!
	for _ in $(seq 50); do
		if [ -s "$T/ports" ]; then
			NP=$(sed -E 's/.*native=([0-9]+).*/\1/' "$T/ports")
			HP=$(sed -E 's/.*http=([0-9]+).*/\1/' "$T/ports")
			return 0
		fi
		kill -0 "$PD_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "# popupd did not start:"; sed 's/^/#   /' "$T/popupd.log"
	return 1
}

# pd_stop: SIGTERM and wait (bounded); returns popupd's exit status, or
# 124 if it had to be killed.
pd_stop()
{
	local rc
	[ -n "$PD_PID" ] || return 0
	kill -TERM "$PD_PID" 2>/dev/null
	for _ in $(seq 150); do
		kill -0 "$PD_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$PD_PID" 2>/dev/null; then
		kill -KILL "$PD_PID"
		wait "$PD_PID" 2>/dev/null
		PD_PID=
		return 124
	fi
	wait "$PD_PID"
	rc=$?
	PD_PID=
	return $rc
}

# pd_stat KEY [SERVICE]: a counter from the directory service's stats.
pd_stat()
{
	local line
	if [ -n "${2:-}" ]; then
		line=$(curl -s -X POST --data-binary '' "http://127.0.0.1:$HP/popupd/stats" | grep "^svc name=$2 ")
	else
		line=$(curl -s -X POST --data-binary '' "http://127.0.0.1:$HP/popupd/stats" | grep '^daemon ')
	fi
	sed -E "s/.* $1=([0-9]+).*/\1/" <<<"$line"
}

# Sanitizer reports in the log fail the test that reads them.
pd_log_clean()
{
	! grep -qE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' "$T/popupd.log"
}
