-- wrk script: POST the seed example's shape with its transcript grown to about 64 KiB (the whole
-- body 65,536 bytes give or take one message), a unique conversationId per request.
local counter = 0
local thread_id = 0
local key = os.getenv("BENCH_KEY") or "bench-key"
local target = 64 * 1024

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

local template = '{"emailId":"user%d@example.com","accountId":"acc_%d","conversationId":"%s_%d",' ..
  '"transcript":%s,"metadata":{"sessionId":"sess_%d","agentId":"agent_01jxn7fwb2eyq8p6k4m3en4xtm",' ..
  '"duration":%d,"messageCount":%d,"platform":"web","userAgent":"Mozilla/5.0 (X11; Linux x86_64)"}}'
-- What the template adds around the transcript for a typical request (ids of the usual length).
local overhead = #string.format(template, 999, 99, "xl64_1700000000_0_123456789", 1000000, "",
  1000000, 3600, 1000)

local messages = {}
local size = 2 -- the brackets
local i = 0
while true do
  i = i + 1
  local speaker = (i % 2 == 1) and "user" or "agent"
  local content = string.rep("This is a realistic sentence of a voice conversation. ", 3)
  local seconds = 5 * i
  local message = string.format(
    '{"timestamp":"2024-01-15T%02d:%02d:%02dZ","speaker":"%s","content":"%s","messageId":"msg_%d"}',
    10 + math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60, speaker, content, i)
  if overhead + size + #message + 1 > target and #messages > 0 then
    break
  end
  messages[#messages + 1] = message
  size = size + #message + (#messages > 1 and 1 or 0)
end
local transcript = "[" .. table.concat(messages, ",") .. "]"
local duration = 5 * #messages + 5

function init(args)
  math.randomseed(os.time() + tid)
  prefix = string.format("xl64_%d_%d_%d", os.time(), tid, math.random(1, 1e9))
end

function request()
  counter = counter + 1
  local body = string.format(template, counter % 1000, counter % 100, prefix, counter, transcript,
    counter, duration, #messages)
  return wrk.format("POST", "/api/v1/webhook/conversation",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
