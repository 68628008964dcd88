-- wrk script: GET one random conversation of fill_1..fill_<N> (argument N).
local key = os.getenv("BENCH_KEY") or "bench-key"
local total
function init(args)
  total = tonumber(args[1])
  math.randomseed(os.time())
end
function request()
  return wrk.format("GET", "/api/v1/conversations/fill_" .. math.random(1, total),
    {["Authorization"] = "Bearer " .. key})
end
