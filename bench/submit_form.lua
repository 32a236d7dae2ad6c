-- wrk script: POSTs the seed XForm (BENCH_FORM) as text/xml, with a unique instanceID per
-- request so repeaterd never sees a duplicate. BENCH_TOKEN, when set, becomes a bearer token.
-- BENCH_RUN keeps ids unique across runs.

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
