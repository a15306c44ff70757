-- wrk script for the vault benchmarks: POST /v1/tokens with one card per request,
-- count responses by status, and print one JSON line (prefixed "BENCH_RESULT ")
-- from done() for benchmarks/run.py, in the same shape as ingest.lua's.
--
-- Arguments (after "--"): <series> <mode> <exp_year>; the API key comes from the
-- BENCH_API_KEY environment variable, so it never shows in a process list.
--   series:   0 to 99999, different for every wrk invocation in a run, so no two
--             runs send the same new card.
--   mode:     "known" sends the same card every time (answered 200 once vaulted);
--             "new" sends a card never sent before in every request (201).
--   exp_year: a four-digit year the gateway accepts as unexpired.
--
-- New cards are 16-digit Visa numbers: "4", the series (5 digits), the wrk thread
-- (1 digit), a per-thread counter (8 digits) and the Luhn check digit, so they are
-- distinct across threads and runs and every one passes validation.

local threads = {}
local next_tid = 0

function setup(thread)
   -- Runs in the main Lua state, once per wrk thread, before any request.
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
   table.insert(threads, thread)
end

local KNOWN_CARD = "4242424242424242"

local series, mode, exp_year, headers, known_body
local counter = 0
-- Globals, not locals: done() reads them from each thread with thread:get.
statuses = {}
sent = 0 -- requests built; minus responses read, the requests abandoned in flight

local function with_check_digit(body)
   -- Counting from the right of the finished number, every second digit is doubled;
   -- the body's rightmost digit is the first of those.
   local sum = 0
   local double = true
   for i = #body, 1, -1 do
      local digit = body:byte(i) - 48
      if double then
         digit = digit * 2
         if digit > 9 then
            digit = digit - 9
         end
      end
      sum = sum + digit
      double = not double
   end
   return body .. tostring((10 - sum % 10) % 10)
end

local function card_body(number)
   return '{"number":"' .. number .. '","exp_month":12,"exp_year":' .. exp_year .. "}"
end

function init(args)
   series = tonumber(args[1])
   mode = args[2]
   exp_year = args[3]
   headers = {
      ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
      ["Content-Type"] = "application/json",
   }
   known_body = card_body(KNOWN_CARD)
end

function request()
   sent = sent + 1
   local body = known_body
   if mode == "new" then
      counter = counter + 1
      body = card_body(with_check_digit(
         string.format("4%05d%01d%08d", series, tid % 10, counter)
      ))
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
