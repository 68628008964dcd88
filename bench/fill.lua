-- wrk script: store conversations fill_<first>..fill_<last> (one wrk thread), then only ask
-- for health. Arguments: first last.
local key = os.getenv("BENCH_KEY") or "bench-key"
local n, last

function init(args)
  n = tonumber(args[1]) - 1
  last = tonumber(args[2])
end

function request()
  if n >= last then return wrk.format("GET", "/api/v1/health") end
  n = n + 1
  local body = string.format(
    '{"emailId":"user%d@example.com","accountId":"acc_%d","conversationId":"fill_%d",' ..
    '"transcript":[{"timestamp":"2024-01-15T10:30:00Z","speaker":"user","content":"Hello, I need help","messageId":"msg_1"}],' ..
    '"metadata":{"sessionId":"sess_%d","agentId":"agent_01","duration":300,"messageCount":1,"platform":"web","userAgent":"bench"}}',
    n % 1000, n % 100, n, n)
  return wrk.format("POST", "/api/v1/webhook/conversation",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
