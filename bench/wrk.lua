-- One phase of the benchmark under wrk 4.1.0: every pre-built request sent exactly once.
-- bench/wrk.py fills in the constants below (the @NAME@ markers) and reads what done() writes.
--
-- wrk runs this script in one Lua state per thread (setup() and done() run in a separate,
-- main state). Thread i of THREADS takes lines i, i+THREADS, ... of BODIES (each line is
-- "<Authorization value or nothing>\t<JSON body>") and pre-formats its requests in init().
--
-- Bounded by count: before every request wrk calls delay() (because it is defined); it
-- claims one of the thread's requests and answers 0 ms, or, once every request is claimed,
-- parks the connection (PARK_MS: longer than any cap). A thread stops itself
-- (wrk.thread:stop(), which ends its event loop) only when every request it sent has been
-- answered, so no answer is lost to the stop; it then prints "wrk-bench done <id>", and
-- bench/wrk.py interrupts wrk (SIGINT ends its sleep of -d) once every thread is done.
-- When -d passes first, wrk stops every thread: requests in flight then are counted as sent
-- and not answered.
--
-- A request with no claim behind it is wrk resending after a read or write error (it
-- reconnects and asks for a new request without calling delay()): the request before it on
-- that connection is counted lost, and the new one takes the next body, if any is left.

local BODIES = @BODIES@
local RESULT = @RESULT@
local PATH = @PATH@
local THREADS = @THREADS@
local CONNECTIONS = @CONNECTIONS@
local SUCCESS = @SUCCESS@
local SERIAL_PATTERN = @SERIAL_PATTERN@
local PARK_MS = 24 * 3600 * 1000
local FAILURE_BODY_CHARS = 2000

-- Main state: number the threads, and collect them for done().
local threads = {}

function setup(thread)
   thread:set("id", #threads)
   threads[#threads + 1] = thread
end

-- Thread states.
function init(args)
   requests, total = {}, 0
   local line_number = 0
   for line in io.lines(BODIES) do
      if line_number % THREADS == id then
         local tab = line:find("\t", 1, true)
         local headers = { ["Content-Type"] = "application/json" }
         local authorization = line:sub(1, tab - 1)
         if authorization ~= "" then
            headers["Authorization"] = authorization
         end
         total = total + 1
         requests[total] = wrk.format("POST", PATH, headers, line:sub(tab + 1))
      end
      line_number = line_number + 1
   end
   claimed, unused, taken, answered, lost, successes = 0, 0, 0, 0, 0, 0
   serials, failures = {}, {}
   running, finished = false, false
end

local function finish()
   if not finished then
      finished = true
      io.write("wrk-bench done ", id, "\n")
      io.flush()
      wrk.thread:stop()
   end
end

function delay()
   if not running then
      running = true
      io.write("wrk-bench start ", id, "\n")
      io.flush()
   end
   if claimed < total then
      claimed, unused = claimed + 1, unused + 1
      return 0
   end
   if unused == 0 and answered + lost >= taken then
      finish() -- a thread with no requests left to answer (or none at all)
   end
   return PARK_MS
end

function request()
   if not running then
      -- wrk parses one request of thread 0 before any thread runs (script_verify_request): never sent.
      return wrk.format("POST", PATH, { ["Content-Type"] = "application/json" }, "{}")
   end
   if unused > 0 then
      unused = unused - 1
   else
      lost = lost + 1 -- a resend after a socket error (see the top)
      if claimed >= total then
         finish() -- nothing left to send: this request goes out, but the thread stops before its answer
         return wrk.format("GET", "/", {}, nil)
      end
      claimed = claimed + 1
   end
   taken = taken + 1
   return requests[taken]
end

function response(status, headers, body)
   answered = answered + 1
   if status == SUCCESS then
      successes = successes + 1
      if SERIAL_PATTERN then
         serials[#serials + 1] = body:match(SERIAL_PATTERN) or ""
      end
   else
      failures[#failures + 1] = status .. " " .. body:sub(1, FAILURE_BODY_CHARS)
   end
   if claimed >= total and unused == 0 and answered + lost >= taken then
      finish()
   end
end

-- Main state, after every thread ended: write the tallies and the latency histogram.
local function hex(text)
   return (text:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- wrk corrects its latency histogram for coordinated omission before done(): for every
-- recorded latency n >= 2e (e = duration / (requests / connections)) it adds synthetic
-- samples at n-e, n-2e, ... (while > e). Those are not requests; undo it, exactly, from the
-- top down, to get one sample per answered request back (bench/wrk.py checks the count).
local function histogram(latency, summary)
   local ffi = require("ffi")
   local head = ffi.cast("bench_wrk_stats **", latency)[0]
   local count, low, high = tonumber(head.count), tonumber(head.min), tonumber(head.max)
   local data = ffi.cast("uint64_t *", head) + 4
   local out = {}
   if count == 0 then
      return out
   end
   local per_connection = math.floor(summary.requests / CONNECTIONS)
   local e = per_connection > 0 and math.floor(summary.duration / per_connection) or nil
   -- later[n]: the true counts at n+e, n+2e, ... summed (what the correction added at n); sparse.
   local later = {}
   for n = high, low, -1 do
      local value = tonumber(data[n])
      local above = later[n]
      if above then
         later[n] = nil
         if n > e then
            value = value - above
         end
      end
      if e and value + (above or 0) > 0 then
         later[n - e] = value + (above or 0)
      end
      if value > 0 then
         out[#out + 1] = n .. " " .. value
      end
   end
   return out
end

function done(summary, latency, requests)
   local fh = assert(io.open(RESULT, "w"))
   local errors = summary.errors
   local ffi = require("ffi")
   pcall(ffi.cdef, "typedef struct { uint64_t count, limit, min, max; } bench_wrk_stats;")
   local samples = tonumber(ffi.cast("bench_wrk_stats **", latency)[0].count) -- corrected: more than requests
   fh:write(string.format("summary %d %d %d %d %d %d %d %d\n", summary.duration, summary.requests,
      errors.connect, errors.read, errors.write, errors.timeout, errors.status, samples))
   for _, thread in ipairs(threads) do
      fh:write(string.format("thread %d %d %d %d %d %d\n", thread:get("id"), thread:get("total"),
         thread:get("taken"), thread:get("answered"), thread:get("lost"), thread:get("successes")))
      for _, serial in ipairs(thread:get("serials")) do
         fh:write("serial ", serial, "\n")
      end
      for _, failure in ipairs(thread:get("failures")) do
         local space = failure:find(" ", 1, true)
         fh:write("failure ", failure:sub(1, space - 1), " ", hex(failure:sub(space + 1)), "\n")
      end
   end
   for _, entry in ipairs(histogram(latency, summary)) do
      fh:write("latency ", entry, "\n")
   end
   fh:write("end\n")
   fh:close()
end
