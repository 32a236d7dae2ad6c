-- wrk script: POSTs the seed XForm (BENCH_FORM) as text/xml, with a unique instanceID per
-- request so repeaterd never sees a duplicate. BENCH_TOKEN, when set, becomes a bearer token.
-- BENCH_RUN keeps ids unique across runs. BENCH_MAX_REQUESTS, when set, stops each of the
-- BENCH_THREADS wrk threads after its share of that many answers (a bounded fill; requests
-- already sent on other connections of the thread still complete, so a few more may arrive).

local form_path = assert(os.getenv("BENCH_FORM"), "BENCH_FORM not set")
local token = os.getenv("BENCH_TOKEN")
local run = os.getenv("BENCH_RUN") or tostring(os.time())

local file = assert(io.open(form_path, "rb"))
local form = file:read("*a")
file:close()
-- Everything up to and including the opening tag, and from the closing tag on.
local head, tail = form:match("^(.*<n1:instanceID>)[^<]*(</n1:instanceID>.*)$")
assert(head, "no <n1:instanceID> in " .. form_path)

wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml"
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- Each wrk thread has its own Lua state: number them in setup() so ids never collide.
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_no", thread_count)
end

-- BENCH_NEW_CASES=1: every form creates its own case (the seed's case_id made unique too),
-- so case repeaters forward a new case per form instead of updates of one.
local new_cases = os.getenv("BENCH_NEW_CASES") == "1"
-- BENCH_NO_CASE=1: the case block is taken out, so a form leaves nothing behind once it is
-- delivered and purged (cases are kept for good): what a soak of the queue itself wants.
local no_case = os.getenv("BENCH_NO_CASE") == "1"
if no_case then
  head = head:gsub("<n0:case .-</n0:case>", "", 1)
end
-- BENCH_DELAY_MS: each connection waits this long after an answer before its next request, so
-- -c connections send about c * 1000 / (delay + latency) requests a second (a paced load).
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end

local counter = 0
function request()
  counter = counter + 1
  local id = string.format("bench-%s-%d-%d", run, thread_no, counter)
  local body = head .. id .. tail
  if new_cases then
    body = body:gsub('case_id="[^"]*"', 'case_id="case-' .. id .. '"', 1)
  end
  return wrk.format(nil, nil, nil, body)
end

-- A bounded run: this thread's share of BENCH_MAX_REQUESTS (thread_no is set by setup()).
-- wrk's main thread sleeps for the whole -d duration even when every thread has stopped, so
-- each thread also leaves a file BENCH_DONE_DIR/thread-N: the caller interrupts wrk (SIGINT,
-- which still prints the report) once all of them are there.
local max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "")
local done_dir = os.getenv("BENCH_DONE_DIR")
local quota = nil
local answers = 0
if max_requests then
  function response(status, headers, body)
    if not quota then
      local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
      quota = math.floor(max_requests / threads)
      if thread_no <= max_requests % threads then quota = quota + 1 end
    end
    answers = answers + 1
    if answers == quota then
      if done_dir then
        local f = io.open(done_dir .. "/thread-" .. thread_no, "w")
        if f then f:close() end
      end
      wrk.thread:stop()
    end
  end
end
