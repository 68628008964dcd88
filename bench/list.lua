-- wrk script: a filtered, paginated list (one of 100 accounts, a random page of 20).
local key = os.getenv("BENCH_KEY") or "bench-key"
function init(args) math.randomseed(os.time()) end
function request()
  return wrk.format("GET", string.format("/api/v1/conversations?account_id=acc_%d&limit=20&page=%d",
    math.random(0, 99), math.random(1, 50)), {["Authorization"] = "Bearer " .. key})
end
