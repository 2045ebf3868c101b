-- wrk script: POST a JSON event (or the trivial view's body) with an API key and,
-- for events, a unique Idempotency-Key per request.
-- Arguments after `--`: path, api key, key prefix, event type.
local threads = {}
local counter = 0
local path, key, prefix, event_type

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  path, key, prefix, event_type = args[1], args[2], args[3], args[4]
  wrk.headers["Authorization"] = "Bearer " .. key
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"event_type":"%s","payload":{"order_id":%d,"thread":%d,' ..
    '"customer":{"id":"cus_%d","email":"bench@example.com"},' ..
    '"items":[{"sku":"SKU-1","qty":2,"price":"19.90"}],"total":"39.80"}}',
    event_type, counter, id or 0, counter)
  -- wrk.format uses these headers instead of wrk.headers, not on top of them.
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Idempotency-Key"] = prefix .. "-" .. (id or 0) .. "-" .. counter
  return wrk.format("POST", path, headers, body)
end
