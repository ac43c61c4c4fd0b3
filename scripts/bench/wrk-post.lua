-- wrk script for `make bench`: POST a fixed body (popupd answers
-- POST /<service>/<method>; nginx and popup-epoll-server answer anything)
-- and, when done, write the latency percentiles to $WRK_OUT as
-- "latency_us cdf" lines (for the CDF plot) plus a JSON summary line.
local size = tonumber(os.getenv("WRK_BODY") or "64")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"

done = function(summary, latency, requests)
	local out = os.getenv("WRK_OUT")
	if not out then return end
	local f = io.open(out, "w")
	local secs = summary.duration / 1e6
	local errs = summary.errors.connect + summary.errors.read + summary.errors.write +
		summary.errors.status + summary.errors.timeout
	f:write(string.format('# {"requests":%d,"duration":%.3f,"rps":%.1f,"errors":%d,' ..
		'"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"mean_us":%.1f}\n',
		summary.requests, secs, summary.requests / secs, errs,
		latency:percentile(50), latency:percentile(90), latency:percentile(99),
		latency:percentile(99.9), latency.mean))
	for _, p in ipairs({1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99,
			    99.5, 99.9, 99.99, 100}) do
		f:write(string.format("%.1f %.6f\n", latency:percentile(p), p / 100))
	end
	f:close()
end
