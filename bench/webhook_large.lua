-- wrk script: POST a realistic conversation (40 messages, about 8 KB) with a unique
-- conversationId per request.
local counter = 0
local thread_id = 0
local key = os.getenv("BENCH_KEY") or "bench-key"

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

local messages = {}
for i = 1, 40 do
  local speaker = (i % 2 == 1) and "user" or "agent"
  local content = string.rep("This is a realistic sentence of a voice conversation. ", 3)
  messages[#messages + 1] = string.format(
    '{"timestamp":"2024-01-15T10:%02d:%02dZ","speaker":"%s","content":"%s","messageId":"msg_%d"}',
    30 + math.floor(i / 60), i % 60, speaker, content, i)
end
local transcript = "[" .. table.concat(messages, ",") .. "]"

function init(args)
  math.randomseed(os.time() + tid)
  prefix = string.format("large_%d_%d_%d", os.time(), tid, math.random(1, 1e9))
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"emailId":"user%d@example.com","accountId":"acc_%d","conversationId":"%s_%d",' ..
    '"transcript":%s,"metadata":{"sessionId":"sess_%d","agentId":"agent_01jxn7fwb2eyq8p6k4m3en4xtm",' ..
    '"duration":300,"messageCount":40,"platform":"web","userAgent":"Mozilla/5.0 (X11; Linux x86_64)"}}',
    counter % 1000, counter % 100, prefix, counter, transcript, counter)
  return wrk.format("POST", "/api/v1/webhook/conversation",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
