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

local threads = {}
local next_tid = 0

function setup(thread)
   -- Runs in the main Lua state, once per wrk thread, before any request.
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
   table.insert(threads, thread)
end

local nonce, per_request, headers
local counter = 0
-- Globals, not locals: done() reads them from each thread with thread:get.
statuses = {}
sent = 0 -- requests built; minus responses read, the requests abandoned in flight

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

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

local function status_counts()
   -- Sum each thread's counts; thread:get copies the table between Lua states.
   local total = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         total[status] = (total[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(total) do
      table.insert(parts, string.format('"%s":%d', status, count))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

local function total_sent()
   -- wrk calls request() once on the first thread's state before the run, to
   -- check for pipelining (script_verify_request); that request is never sent.
   local total = -1
   for _, thread in ipairs(threads) do
      total = total + (thread:get("sent") or 0)
   end
   return total
end

function done(summary, latency, requests)
   local fields = {
      string.format('"duration_us":%d', summary.duration),
      string.format('"requests":%d', summary.requests),
      string.format('"sent":%d', total_sent()),
      string.format('"bytes":%d', summary.bytes),
      string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
         summary.errors.connect, summary.errors.read, summary.errors.write,
         summary.errors.status, summary.errors.timeout),
      string.format('"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"mean":%.3f,"max":%.3f}',
         latency:percentile(50) / 1000, latency:percentile(90) / 1000,
         latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000),
      '"statuses":' .. status_counts(),
   }
   io.write("BENCH_RESULT {" .. table.concat(fields, ",") .. "}\n")
end
