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

local counter = 0
function request()
  counter = counter + 1
  local id = string.format("bench-%s-%d-%d", run, thread_no, counter)
  return wrk.format(nil, nil, nil, head .. id .. tail)
end
