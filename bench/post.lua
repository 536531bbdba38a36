-- wrk: every request is the POST whose body is in the BENCH_BODY_FILE file. When
-- BENCH_EXPECT is set, every answer must be 200 and contain it; done() prints how many were
-- not ("bench-bad-answers: N"), so a path answering errors cannot pass as a fast one.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
-- BENCH_AUTH: a key to send (the virtual-key scenario).
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

local expect = os.getenv("BENCH_EXPECT")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

if expect and expect ~= "" then
  function response(status, headers, body)
    if status ~= 200 or not string.find(body, expect, 1, true) then
      bad = bad + 1
    end
  end
end

function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do
    n = n + (t:get("bad") or 0)
  end
  io.write(string.format("bench-bad-answers: %d\n", n))
end
