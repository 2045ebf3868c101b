-- wrk script: POST batches of events with an API key, each item with a unique
-- event_id. Arguments after `--`: path, api key, key prefix, event type, items.
local threads = {}
local counter = 0
local path, key, prefix, event_type, size

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  path, key, prefix, event_type = args[1], args[2], args[3], args[4]
  size = tonumber(args[5])
  wrk.headers["Authorization"] = "Bearer " .. key
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local items = {}
  for i = 1, size do
    counter = counter + 1
    -- The same event as post.lua sends alone, with its key in the body.
    items[i] = string.format(
      '{"event_type":"%s","event_id":"%s-%d-%d","payload":{"order_id":%d,' ..
      '"thread":%d,"customer":{"id":"cus_%d","email":"bench@example.com"},' ..
      '"items":[{"sku":"SKU-1","qty":2,"price":"19.90"}],"total":"39.80"}}',
      event_type, prefix, id or 0, counter, counter, id or 0, counter)
  end
  local body = '{"events":[' .. table.concat(items, ",") .. ']}'
  -- A copy: wrk.format writes each body's Content-Length into the table given.
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  return wrk.format("POST", path, headers, body)
end
