-- wrk script: GET /api/v1/analytics?<query> (argument 1: the query string), the same request
-- each time (the answer is computed afresh for each: the server caches nothing).
local key = os.getenv("BENCH_KEY") or "bench-key"
local path
function init(args)
  path = "/api/v1/analytics?" .. args[1]
end
function request()
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. key})
end
