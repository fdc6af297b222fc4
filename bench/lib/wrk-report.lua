-- wrk script: method from $WRK_METHOD (default GET); at the end prints one
-- machine-readable line:
--   WRKRESULT requests=N duration_us=N rps=F p50_us=N p99_us=N \
--             err_connect=N err_read=N err_write=N err_timeout=N err_status=N
-- err_status counts responses with status > 399 (wrk's own accounting).
wrk.method = os.getenv("WRK_METHOD") or "GET"

done = function(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local rps = 0
  if secs > 0 then rps = summary.requests / secs end
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d rps=%.2f p50_us=%d p99_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d err_status=%d\n",
    summary.requests, summary.duration, rps,
    latency:percentile(50.0), latency:percentile(99.0),
    e.connect, e.read, e.write, e.timeout, e.status))
end
