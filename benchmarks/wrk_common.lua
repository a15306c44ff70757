-- What every wrk script of the benchmarks shares: thread setup, counting
-- responses by status, done() printing one JSON line (prefixed "BENCH_RESULT ")
-- for benchmarks/run.py, and Luhn-valid card numbers. A script loads it first with
--   dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")
-- and increments the global `sent` in its request().

local threads = {}
local next_tid = 0

function setup(thread)
   -- Runs in the main Lua state, once per wrk thread, before any request.
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
   table.insert(threads, thread)
end

function with_check_digit(body)
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

-- Globals, not locals: done() reads them from each thread with thread:get.
statuses = {}
sent = 0 -- requests built; minus responses read, the requests abandoned in flight

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
