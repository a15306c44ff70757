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

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

local series, mode, exp_year, token, pause_ms, headers
local counter = 0

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
