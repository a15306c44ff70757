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

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

local KNOWN_CARD = "4242424242424242"

local series, mode, exp_year, headers, known_body
local counter = 0

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
