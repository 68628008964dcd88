-- wrk script: POST the seed's example conversation with a unique conversationId per request.
local counter = 0
local thread_id = 0
local key = os.getenv("BENCH_KEY") or "bench-key"

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  math.randomseed(os.time() + tid)
  prefix = string.format("bench_%d_%d_%d", os.time(), tid, math.random(1, 1e9))
end

local template = [[{"emailId":"user@example.com","accountId":"acc123","conversationId":"%s","transcript":[{"timestamp":"2024-01-15T10:30:00Z","speaker":"user","content":"Hello, I need help","messageId":"msg_123"}],"metadata":{"sessionId":"sess_456","agentId":"agent_01jxn7fwb2eyq8p6k4m3en4xtm","duration":300,"messageCount":10,"platform":"web","userAgent":"Mozilla/5.0..."}}]]

function request()
  counter = counter + 1
  local body = string.format(template, prefix .. "_" .. counter)
  return wrk.format("POST", "/api/v1/webhook/conversation",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
