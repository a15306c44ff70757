-- wrk script for the risk benchmarks: POST /v1/transactions/evaluate, a new
-- transaction_id in every request, count responses by status, and print one JSON
-- line (prefixed "BENCH_RESULT ") from done() for benchmarks/run.py.
--
-- Arguments (after "--"): <series> <mode> <exp_year> <token> <rate> <connections>;
-- the API key comes from the BENCH_API_KEY environment variable.
--   series:      0 to 99999, different for every wrk invocation in a run.
--   mode:        "token" sends the known card token every time; "new" sends a new
--                Luhn-valid Visa number in every request (tokenized by the gateway).
--   exp_year:    a four-digit year the gateway accepts as unexpired.
--   token:       the known card token (mode "token").
--   rate:        requests per second across all connections, or 0 for as fast as
--                the gateway answers. wrk (not wrk2) paces with delay(): each
--                connection waits connections/rate seconds between requests, so the
--                latencies are not corrected for coordinated omission.
--   connections: wrk's -c, for the pacing.

local threads = {}
local next_tid = 0

function setup(thread)
   -- Runs in the main Lua state, once per wrk thread, before any request.
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
   table.insert(threads, thread)
end

local series, mode, exp_year, token, pause_ms, headers
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

local function evaluate_body(card)
   return string.format(
      '{"transaction_id":"b%05d-%d-%d","amount":%d,"currency":"EUR",'
         .. '"merchant_id_hash":"m_bench%d","card":%s,"device_id":"dev_%d",'
         .. '"ip":"203.0.113.%d","country":"DE","channel":"web"}',
      series, tid, counter, 500 + counter % 5000, counter % 50, card, counter % 500,
      counter % 250
   )
end

function init(args)
   series = tonumber(args[1])
   mode = args[2]
   exp_year = args[3]
   token = args[4]
   local rate = tonumber(args[5])
   local connections = tonumber(args[6])
   pause_ms = 0
   if rate > 0 then
      pause_ms = 1000 * connections / rate
   end
   headers = {
      ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY"),
      ["Content-Type"] = "application/json",
   }
end

function delay()
   return pause_ms
end

function request()
   sent = sent + 1
   counter = counter + 1
   local card = '{"token":"' .. token .. '"}'
   if mode == "new" then
      card = card_body(with_check_digit(
         string.format("4%05d%01d%08d", series, tid % 10, counter)
      ))
   end
   return wrk.format("POST", nil, headers, evaluate_body(card))
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
