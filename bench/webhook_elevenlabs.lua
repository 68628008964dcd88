-- wrk script: POST a signed ElevenLabs post_call_transcription event (~20 KB) with a unique
-- conversation_id per request, as ElevenLabs would: ElevenLabs-Signature: t=<now>,v0=<hex
-- HMAC-SHA256 over "<t>." + body>, keyed with BENCH_EL_SECRET (the server's
-- ELEVENLABS_WEBHOOK_SECRET). The body template comes from run.py (argument 1): the transcription
-- fixture with more turns, where @@CONVERSATION_ID@@ marks the id. Signing calls OpenSSL's HMAC
-- through LuaJIT's FFI: a pure-Lua SHA-256 over 20 KB per request would make wrk the bottleneck.
local ffi = require("ffi")
ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d,
                    size_t n, unsigned char *md, unsigned int *md_len);
]]

local function load_crypto()
  for _, name in ipairs({"libcrypto.so.3", "crypto", "libcrypto.so.1.1"}) do
    local ok, lib = pcall(ffi.load, name)
    if ok then return lib end
  end
  error("webhook_elevenlabs.lua: cannot load OpenSSL's libcrypto")
end

local crypto = load_crypto()
local secret = os.getenv("BENCH_EL_SECRET") or "wsec_bench"
local md = ffi.new("unsigned char[32]")
local md_len = ffi.new("unsigned int[1]")
local hex = {}
for i = 0, 255 do hex[i] = string.format("%02x", i) end

local function hmac_hex(data)
  crypto.HMAC(crypto.EVP_sha256(), secret, #secret, data, #data, md, md_len)
  local out = {}
  for i = 0, 31 do out[i + 1] = hex[md[i]] end
  return table.concat(out)
end

local counter = 0
local thread_id = 0
local parts

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  local f = assert(io.open(args[1], "rb"), "webhook_elevenlabs.lua: no body template given")
  local template = f:read("*a")
  f:close()
  parts = {}
  local pos = 1
  while true do
    local s, e = template:find("@@CONVERSATION_ID@@", pos, true)
    if not s then break end
    parts[#parts + 1] = template:sub(pos, s - 1)
    pos = e + 1
  end
  parts[#parts + 1] = template:sub(pos)
  math.randomseed(os.time() + tid)
  prefix = string.format("el_bench_%d_%d_%d", os.time(), tid, math.random(1, 1e9))
end

function request()
  counter = counter + 1
  local body = table.concat(parts, prefix .. "_" .. counter)
  local t = tostring(os.time())
  local signature = "t=" .. t .. ",v0=" .. hmac_hex(t .. "." .. body)
  return wrk.format("POST", "/api/v1/webhook/elevenlabs",
    {["Content-Type"] = "application/json", ["ElevenLabs-Signature"] = signature}, body)
end
