-- wrk script for the ingest benchmarks: POST payment events with an event_id
-- that is unique in every request, count responses by status, and print one
-- JSON line (prefixed "BENCH_RESULT ") from done() for benchmarks/run.py.
--
-- Arguments (after "--"): <nonce> <events per request>; the API key comes from
-- the BENCH_API_KEY environment variable, so it never shows in a process list.
--   nonce:  8 hex digits, different for every wrk invocation in a run, so warm-up
--           and measured runs never repeat an id.
--   events: 0 sends one bare event object; N >= 1 sends {"events": [N events]}.
--
-- Why ids look the way they do: the gateway refuses anything that could be a card
-- number, and its cheap pre-filter flags any run of 13+ digits (single spaces or
-- dashes allowed). A counter rendered as hex is mostly digits, so every id segment
-- starts with a fixed letter, keeping digit runs short like a random UUIDv4's
-- (and the payment_intent_id_hash is at most 12 hex digits for the same reason).
-- Shape: <nonce>-f<tid>-4<rand>-a<rand>-c<counter>, e.g.
--   1a2b3c4d-f001-4e07-a93b-c0000000002a

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

local nonce, per_request, headers
local counter = 0

local EVENT_HEAD = '{"event_id":"'
local EVENT_MIDDLE = '","event_type":"payment.failed","event_timestamp":"2026-11-22T10:00:00Z",'
   .. '"processor":"stripe","merchant_id_hash":"m_3f9a1c7e5b2d4a6f","payment_intent_id_hash":"pi_'
local EVENT_TAIL = '","failure_category":"card_declined","retry_count":1,"geo_bucket":"eu-west",'
   .. '"amount_bucket":"10-100","system_source":"checkout","payment_method_bucket":"card",'
   .. '"channel":"web","retry_result":"failed","failure_origin":"issuer"}'

function init(args)
   nonce = args[1]
   per_request = tonumber(args[2])
   headers = {
      ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
      ["Content-Type"] = "application/json",
   }
   -- LuaJIT's generator starts from a fixed seed; mix in the nonce and thread id.
   math.randomseed(tonumber(nonce, 16) + tid * 7919)
end

local function event()
   counter = counter + 1
   local id = string.format(
      "%s-f%03x-4%03x-a%03x-c%011x",
      nonce, tid, math.random(0, 4095), math.random(0, 4095), counter
   )
   return EVENT_HEAD .. id .. EVENT_MIDDLE .. string.format("%012x", counter) .. EVENT_TAIL
end

function request()
   sent = sent + 1
   local body
   if per_request == 0 then
      body = event()
   else
      local events = {}
      for i = 1, per_request do
         events[i] = event()
      end
      body = '{"events":[' .. table.concat(events, ",") .. "]}"
   end
   return wrk.format("POST", nil, headers, body)
end
